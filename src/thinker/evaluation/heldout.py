"""Evaluation for data that is not SciFact claim extraction: held-out loss and perplexity, and the data task's
generation check on the held-out split (GSM8K-style final-answer accuracy, chat replies; thinker.tasks). Claim metrics are never computed on data
they do not describe.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any


def loss_metrics(val_loss: float | None) -> dict[str, float]:
    """Held-out loss (mean token cross-entropy from training) and its perplexity."""
    if val_loss is None:
        return {}
    return {"heldout_loss": float(val_loss), "perplexity": math.exp(min(float(val_loss), 50.0))}


def generation_check(task: Any, examples: list[Any], generate: Callable[[list[Any]], list[str]], batch_size: int,
                     tokenizer: Callable[[], Any] = lambda: None, conversations: bool = False) -> dict[str, float]:
    """The data task's generation metrics: each held-out example's prompt (as the task renders it; with
    `conversations`, the task's conversation itself, for a sampler that sends chat messages) completed through
    the backend's sampler, scored by the task."""
    def prompt(example: Any) -> Any:
        return task.generation_conversation(example) if conversations else task.generation_prompt(example, tokenizer)

    completions: list[str] = []
    step = max(1, batch_size)
    for start in range(0, len(examples), step):
        completions += generate([prompt(ex) for ex in examples[start : start + step]])
    return task.score_generations(examples, completions)


def answer_accuracy(examples: list[Any], generate: Callable[[list[str]], list[str]], batch_size: int) -> dict[str, float]:
    """Share of held-out examples whose generated final answer equals the gold one."""
    from thinker.tasks.reasoning import TASK

    return generation_check(TASK, examples, generate, batch_size)


def heldout_examples(cfg: Any, data_path: Any) -> list[Any]:
    """The held-out split exactly as training made it (same seed), first evaluation.max_samples of it."""
    from thinker.data.examples import split_indices
    from thinker.tasks import task_of

    examples = task_of(cfg.data).read(data_path, cfg.data, cfg.data.max_examples)  # read when indexed
    _train, held_out = split_indices(len(examples), float(cfg.data.validation_split), int(cfg.seed))
    limit = cfg.evaluation.max_samples
    return [examples[i] for i in (held_out[:limit] if limit else held_out)]
