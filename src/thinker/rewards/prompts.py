"""The prompts reinforcement learning samples from: the training split's records rendered by the data task (the
split every stage uses, so the eval stage's held-out records were never trained on), on every backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def training_prompts(cfg: Any, run_dir: Path, tokenizer: Any) -> tuple[list[str], list[Any]]:
    """(rendered prompts, their records) of the training split."""
    from thinker.data.examples import split_examples
    from thinker.data.source import effective_data_path
    from thinker.tasks import task_of

    task = task_of(cfg.data)
    examples = task.read(effective_data_path(cfg, run_dir), cfg.data, cfg.data.max_examples)
    train, _ = split_examples(examples, float(cfg.data.validation_split), int(cfg.seed))
    return [task.generation_prompt(ex, lambda: tokenizer) for ex in train], train
