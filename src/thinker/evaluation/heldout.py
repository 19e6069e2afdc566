"""Evaluation for data that is not SciFact claim extraction: held-out loss and perplexity, and for GSM8K-style
reasoning data the final-answer accuracy on the held-out split. Claim metrics are never computed on data
they do not describe.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

# GSM8K's convention: the answer's last line is "#### <number>"
FINAL_ANSWER = re.compile(r"####\s*(-?[\d,]*\.?\d+)")


def final_answer(text: str) -> str | None:
    """The number after the last `####`, without thousands separators or a trailing `.0`; None without one."""
    found = FINAL_ANSWER.findall(text)
    if not found:
        return None
    number = found[-1].replace(",", "")
    return number[:-2] if number.endswith(".0") else number


def loss_metrics(val_loss: float | None) -> dict[str, float]:
    """Held-out loss (mean token cross-entropy from training) and its perplexity."""
    if val_loss is None:
        return {}
    return {"heldout_loss": float(val_loss), "perplexity": math.exp(min(float(val_loss), 50.0))}


def answer_accuracy(examples: list[Any], generate: Callable[[list[str]], list[str]], batch_size: int) -> dict[str, float]:
    """Share of held-out examples whose generated final answer equals the gold one."""
    from thinker.data.tokenize import render_prompt

    correct = 0
    for start in range(0, len(examples), max(1, batch_size)):
        batch = examples[start : start + batch_size]
        completions = generate([render_prompt(ex.prompt) for ex in batch])
        correct += sum(1 for ex, out in zip(batch, completions, strict=True)
                       if final_answer(out) is not None and final_answer(out) == final_answer(ex.completion))
    return {"answers": float(len(examples)), "answer_accuracy": correct / len(examples) if examples else 0.0}


def heldout_examples(cfg: Any, data_path: Any) -> list[Any]:
    """The held-out split exactly as training made it (same seed), first evaluation.max_samples of it."""
    from thinker.data.examples import read_examples, split_examples

    examples = read_examples(data_path, cfg.data.prompt_field, cfg.data.completion_field, cfg.data.max_examples)
    _train, held_out = split_examples(examples, float(cfg.data.validation_split), int(cfg.seed))
    limit = cfg.evaluation.max_samples
    return held_out[:limit] if limit else held_out
