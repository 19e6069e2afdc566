"""The eval stage's generation check on a hosted provider (backend=provider) sends each held-out example as the
chat messages training uploaded, less the last reply: a chat conversation as its own messages (system, user,
...), never a chat template rendered here and pasted into one user message. Real `openai` SDK, loopback server
(tests/provider_servers/openai_api.py)."""

from __future__ import annotations

import pytest
from conftest import ROOT
from provider_servers import openai_api
from provider_servers.loopback import LoopbackServer

BASE = "gpt-4o-mini-2024-07-18"


@pytest.fixture
def api(monkeypatch):
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(name, raising=False)
    app = openai_api.create_app()
    with LoopbackServer(app) as server:
        for name, value in openai_api.client_env(server.url).items():
            monkeypatch.setenv(name, value)
        yield app.state.api


def check_generations(data: str, api):
    """(the held-out examples, the generation check's metrics) of `data` sampled from the provider's base model."""
    from thinker.backends import TrainingReport, WeightsRef, instantiate_backend
    from thinker.backends.provider.backend import BASE_SCHEME
    from thinker.evaluation.heldout import generation_check, heldout_examples
    from thinker.launch.app import compose_config
    from thinker.tasks import task_of

    cfg = compose_config(["backend=provider", "provider=openai", f"provider.base_model={BASE}", f"data={data}",
                          "evaluation.max_samples=2"])
    backend = instantiate_backend(cfg)
    assert backend.samples_conversations
    generate = backend.sampler(TrainingReport("provider", WeightsRef(f"{BASE_SCHEME}openai/{BASE}")), cfg)
    examples = heldout_examples(cfg, ROOT / cfg.data.path)
    never = lambda: pytest.fail("no tokenizer is loaded: the provider is given the messages")  # noqa: E731
    return examples, generation_check(task_of(cfg.data), examples, generate, 8, never, backend.samples_conversations)


def test_a_chat_conversation_is_sent_as_its_messages(api):
    examples, metrics = check_generations("chat", api)
    assert metrics["replies"] == 2.0 and len(api.chat_requests) == 2
    for (model, messages), example in zip(api.chat_requests, examples, strict=True):
        assert model == BASE
        assert messages == [{"role": m["role"], "content": m["content"]} for m in example.messages[:-1]]
        assert messages[0]["role"] == "system" and messages[-1]["role"] == "user" and len(messages) >= 2
        assert not any("<|im_start|>" in m["content"] for m in messages)


def test_a_prompt_completion_example_is_one_user_message_as_uploaded(api):
    from thinker.data.tokenize import render_prompt

    examples, _ = check_generations("gsm8k", api)
    assert api.chat_requests == [(BASE, [{"role": "user", "content": render_prompt(ex.prompt)}]) for ex in examples]
