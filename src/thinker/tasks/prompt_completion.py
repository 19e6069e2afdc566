"""Prompt/completion records ({"prompt": ..., "completion": ...}; the field names are data.prompt_field /
data.completion_field): loss on the completion, a CLAIM[c1] line and evidence lines weighted by
data.claim_c1_weight / data.evidence_weight where a completion has them (1 by default: uniform; docs/data.md)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from thinker.tasks.base import Task, jsonl_records


def _example(prompt_field: str, completion_field: str, record: dict) -> Any:
    from thinker.data.examples import Example

    return Example(record[prompt_field], record[completion_field])


class PromptCompletionTask(Task):
    name = "prompt_completion"

    def read(self, path: str | Path, data: Any, limit: int | None = None) -> Sequence[Any]:
        from thinker.data.records import MappedRecords

        return MappedRecords(jsonl_records(path, limit), partial(_example, str(data.prompt_field),
                                                                 str(data.completion_field)))

    def loss_weights(self, data: Any) -> Any:
        from thinker.data.tokenize import LossWeights

        # any prompt/completion file may carry CLAIM lines (data=jsonl with a user's SciFact-style file), so the
        # configured weights apply here, not only in the claim task
        return LossWeights(float(data.claim_c1_weight), float(data.evidence_weight))

    def tokenize(self, tokenizer: Any, example: Any, *, max_length: int, data: Any, train_on_inputs: bool) -> Any:
        from thinker.data.tokenize import tokenize_example

        return tokenize_example(tokenizer, example.prompt, example.completion, max_length=max_length,
                                weights=self.loss_weights(data), train_on_inputs=train_on_inputs)

    def conversation(self, example: Any) -> dict:
        from thinker.data.tokenize import render_prompt

        return {"messages": [{"role": "user", "content": render_prompt(example.prompt)},
                             {"role": "assistant", "content": example.completion}]}

    def generation_prompt(self, example: Any, tokenizer: Any) -> str:
        from thinker.data.tokenize import render_prompt

        return render_prompt(example.prompt)


TASK = PromptCompletionTask()
