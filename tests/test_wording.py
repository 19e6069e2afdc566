"""Message wording: the article built before a name (`an openai model id`), and "did you mean"."""

from __future__ import annotations

import pytest
from conftest import compose

from thinker.errors import ThinkerError
from thinker.errors.wording import did_you_mean, with_article


@pytest.mark.parametrize(("word", "phrase"), [
    ("openai", "an openai"), ("together", "a together"), ("assistant", "an assistant"), ("user", "a user"),
    ("qwen2", "a qwen2"), ("opt", "an opt"), ("Eagle", "an Eagle"), ("", "a "),
])
def test_with_article(word, phrase):
    assert with_article(word) == phrase


def test_a_provider_model_id_hint_reads_an_openai_model_id():
    from thinker.config.check import check_config

    cfg = compose(["backend=provider", "provider=openai"])  # tiny-qwen has no openai model id
    with pytest.raises(ThinkerError) as info:
        check_config(cfg, env={"OPENAI_API_KEY": "sk-test"})
    assert "provider.base_model=<an openai model id>" in info.value.line()


def test_did_you_mean():
    assert did_you_mean("lrr", ["lr", "weight_decay"], prefix="optimizer.") == "did you mean optimizer.lr? "
    assert did_you_mean("zzz", ["lr", "weight_decay"]) == ""
