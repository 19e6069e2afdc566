"""The chat task (thinker.tasks.chat): conversations rendered with the tokenizer's chat template, the loss on
the assistant turns only (content and end-of-turn marker, never the role header), or on every token with
trainer.train_on_inputs=enabled; the upload conversation and the generation check's prompt."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from thinker.data.tokenize import IGNORE_INDEX
from thinker.models.tokenizer import train_tokenizer
from thinker.tasks import task_of
from thinker.tasks.chat import Conversation

MESSAGES = (
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is two plus two?"},
    {"role": "assistant", "content": "Four."},
    {"role": "user", "content": "And three plus three?"},
    {"role": "assistant", "content": "Six."},
)
DATA = OmegaConf.create({"format": "chat"})


@pytest.fixture(scope="module")
def tokenizer():
    texts = [m["content"] for m in MESSAGES] * 20
    return train_tokenizer(texts, vocab_size=300)


def trained_text(tokenizer, tok) -> list[str]:
    """The decoded runs of consecutive trained tokens."""
    runs, current = [], []
    for token, label in zip(tok.input_ids, tok.labels, strict=True):
        if label != IGNORE_INDEX:
            current.append(token)
        elif current:
            runs.append(tokenizer.decode(current, skip_special_tokens=False))
            current = []
    if current:
        runs.append(tokenizer.decode(current, skip_special_tokens=False))
    return runs


def test_data_format_chat_chooses_the_chat_task():
    assert task_of(DATA).name == "chat"


def test_loss_on_assistant_turns_only(tokenizer):
    tok = task_of(DATA).tokenize(tokenizer, Conversation(MESSAGES), max_length=10_000, data=DATA,
                                 train_on_inputs=False)
    text = tokenizer.decode(tok.input_ids, skip_special_tokens=False)
    assert text == tokenizer.apply_chat_template(list(MESSAGES), tokenize=False)  # the template, unchanged
    # each reply and its end-of-turn marker; never a role header, the system or a user turn
    assert trained_text(tokenizer, tok) == ["Four.<|im_end|>\n", "Six.<|im_end|>\n"]
    assert all(w == (1.0 if label != IGNORE_INDEX else 0.0) for w, label in zip(tok.weights, tok.labels, strict=True))
    assert tok.trained_tokens == sum(len(tokenizer(r, add_special_tokens=False)["input_ids"])
                                     for r in ("Four.<|im_end|>\n", "Six.<|im_end|>\n"))


def test_train_on_inputs_trains_every_token_but_the_first(tokenizer):
    tok = task_of(DATA).tokenize(tokenizer, Conversation(MESSAGES), max_length=10_000, data=DATA,
                                 train_on_inputs=True)
    assert tok.labels[0] == IGNORE_INDEX and tok.weights[0] == 0.0
    assert tok.labels[1:] == tok.input_ids[1:] and set(tok.weights[1:]) == {1.0}


def test_truncation_cuts_and_flags(tokenizer):
    full = task_of(DATA).tokenize(tokenizer, Conversation(MESSAGES), max_length=10_000, data=DATA,
                                  train_on_inputs=False)
    cut = task_of(DATA).tokenize(tokenizer, Conversation(MESSAGES), max_length=12, data=DATA, train_on_inputs=False)
    assert cut.truncated and not full.truncated
    assert cut.input_ids == full.input_ids[:12] and cut.labels == full.labels[:12]


def test_upload_and_generation_prompt(tokenizer):
    task, conversation = task_of(DATA), Conversation(MESSAGES)
    assert task.conversation(conversation) == {"messages": [dict(m) for m in MESSAGES]}
    prompt = task.generation_prompt(conversation, lambda: tokenizer)
    assert prompt.endswith("And three plus three?<|im_end|>\n<|im_start|>assistant\n")
    assert "Six." not in prompt
    scores = task.score_generations([conversation, conversation], ["Six.\n more", "Seven."])
    assert scores == {"replies": 2.0, "reply_match_rate": 0.5}


def test_a_tokenizer_without_a_chat_template_is_one_error(tokenizer):
    from thinker.errors import ThinkerError

    plain = train_tokenizer(["plain text"] * 5, vocab_size=300)
    plain.chat_template = None
    with pytest.raises(ThinkerError, match="no chat template"):
        task_of(DATA).tokenize(plain, Conversation(MESSAGES), max_length=100, data=DATA, train_on_inputs=False)
