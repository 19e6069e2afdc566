"""Chat conversations ({"messages": [{"role", "content"}, ...]}, the format of OpenAI's, Together's, Fireworks'
and Tinker's chat fine-tuning files), rendered with the tokenizer's chat template (docs/data.md, "Chat data").

The loss is on the assistant turns only: each assistant message's content and its end-of-turn marker, never
the role header the template puts before it (the model is given that when it generates). With
trainer.train_on_inputs=enabled every token is trained. The spans come from rendering the conversation one
message at a time, as Hugging Face's own assistant masks do, so any template whose renderings of a
conversation's prefixes are prefixes of each other works (ChatML, Llama 3, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thinker.tasks.base import Task, jsonl_records

MESSAGES_FIELD = "messages"
ASSISTANT = "assistant"


@dataclass(frozen=True)
class Conversation:
    messages: tuple[dict, ...]

    @property
    def context(self) -> list[dict]:
        """Everything before the last assistant reply: what a generation check prompts with."""
        return list(self.messages[:-1])

    @property
    def reply(self) -> str:
        return str(self.messages[-1]["content"])


def conversation_of(record: dict) -> Conversation:
    return Conversation(tuple(record[MESSAGES_FIELD]))


def render(tokenizer: Any, messages: Sequence[dict], generation_prompt: bool = False) -> str:
    if not getattr(tokenizer, "chat_template", None):
        from thinker.errors import ThinkerError

        raise ThinkerError("the model's tokenizer has no chat template, so chat data cannot be rendered",
                           "model (data.format=chat)",
                           "use a model whose tokenizer has one (tiny-qwen's and Qwen's do), or prompt/completion data")
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=generation_prompt)


def trained_spans(tokenizer: Any, messages: Sequence[dict]) -> tuple[str, list[tuple[int, int]]]:
    """(the rendered conversation, the character spans of its assistant replies that the loss is taken on)."""
    spans: list[tuple[int, int]] = []
    before = ""
    for i, message in enumerate(messages):
        text = render(tokenizer, messages[: i + 1])
        if not text.startswith(before):
            from thinker.errors import ThinkerError

            raise ThinkerError("the tokenizer's chat template renders a conversation's beginning differently "
                               "once more messages follow, so the assistant turns cannot be found",
                               "model (data.format=chat)", "use a model with a prefix-stable chat template (ChatML)")
        if message["role"] == ASSISTANT:
            header = render(tokenizer, messages[:i], generation_prompt=True)  # before it + the role header
            start = len(header) if text.startswith(header) else len(before)
            spans.append((start, len(text)))
        before = text
    return before, spans


class ChatTask(Task):
    name = "chat"
    renders_chat_template = True
    generation_metrics = ("reply_match_rate", "replies")

    def read(self, path: str | Path, data: Any, limit: int | None = None) -> Sequence[Any]:
        from thinker.data.records import MappedRecords

        return MappedRecords(jsonl_records(path, limit), conversation_of)

    def tokenize(self, tokenizer: Any, example: Any, *, max_length: int, data: Any, train_on_inputs: bool) -> Any:
        from thinker.data.tokenize import IGNORE_INDEX, TokenizedExample

        text, spans = trained_spans(tokenizer, example.messages)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        input_ids = list(enc["input_ids"])
        trained = [train_on_inputs or any(a <= begin < b for a, b in spans) for begin, _end in enc["offset_mapping"]]
        labels = [t if keep else IGNORE_INDEX for t, keep in zip(input_ids, trained, strict=True)]
        weights = [1.0 if keep else 0.0 for keep in trained]
        if input_ids:  # the first token has no context inside its example (as for prompt/completion data)
            labels[0], weights[0] = IGNORE_INDEX, 0.0
        truncated = len(input_ids) > max_length
        if truncated:
            input_ids, labels, weights = input_ids[:max_length], labels[:max_length], weights[:max_length]
        return TokenizedExample(input_ids, labels, weights, truncated)

    def conversation(self, example: Any) -> dict:
        return {MESSAGES_FIELD: [dict(m) for m in example.messages]}

    def generation_prompt(self, example: Any, tokenizer: Any) -> str:
        return render(tokenizer(), example.context, generation_prompt=True)

    def user_prompt(self, text: str, tokenizer: Any) -> str:
        """One user turn in the chat template, the assistant's header after it (as training rendered them)."""
        return render(tokenizer(), [{"role": "user", "content": text}], generation_prompt=True)

    def score_generations(self, examples: Sequence[Any], completions: Sequence[str]) -> dict[str, float]:
        """reply_match_rate: the share of held-out conversations whose generated reply begins with the reference
        reply (whitespace collapsed): generation may run on past the end-of-turn marker up to max_new_tokens."""
        def norm(text: str) -> str:
            return " ".join(text.split())

        matched = sum(1 for ex, out in zip(examples, completions, strict=True)
                      if norm(ex.reply) and norm(out).startswith(norm(ex.reply)))
        return {"replies": float(len(examples)), "reply_match_rate": matched / len(examples) if examples else 0.0}


TASK = ChatTask()
