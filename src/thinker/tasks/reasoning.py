"""GSM8K-style reasoning records (prompt/completion, the completion ending in `#### <answer>`): fine-tuned like
prompt/completion data, its held-out split also scored by final-answer accuracy; method=pretrain trains on
its records as thinker.data.reasoning makes GSM8K ones (docs/decisions/0010-cognate-pretraining-path.md)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from thinker.data.reasoning import gsm8k_answer_correct, gsm8k_example
from thinker.tasks.prompt_completion import PromptCompletionTask

# GSM8K's convention: the answer's last line is "#### <number>"
FINAL_ANSWER = re.compile(r"####\s*(-?[\d,]*\.?\d+)")


def final_answer(text: str) -> str | None:
    """The number after the last `####`, without thousands separators or a trailing `.0`; None without one."""
    found = FINAL_ANSWER.findall(text)
    if not found:
        return None
    number = found[-1].replace(",", "")
    return number[:-2] if number.endswith(".0") else number


class ReasoningTask(PromptCompletionTask):
    name = "reasoning"
    pretrains = True
    generation_metrics = ("answer_accuracy", "answers")
    pretraining_example = staticmethod(gsm8k_example)
    pretraining_answer_correct = staticmethod(gsm8k_answer_correct)

    def score_generations(self, examples: Sequence[Any], completions: Sequence[str]) -> dict[str, float]:
        correct = sum(1 for ex, out in zip(examples, completions, strict=True)
                      if final_answer(out) is not None and final_answer(out) == final_answer(ex.completion))
        return {"answers": float(len(examples)), "answer_accuracy": correct / len(examples) if examples else 0.0}


TASK = ReasoningTask()
