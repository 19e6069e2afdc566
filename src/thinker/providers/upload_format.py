"""The run's data as a hosted provider's upload file: chat `messages` JSONL, one conversation per example.

All three live providers accept this shape for supervised fine-tuning (OpenAI's chat format, Together's
"conversational" format, Fireworks' messages format). The split is the one every backend uses
(thinker.data.examples.split_examples with the run's seed), and the data task writes each example's
conversation (thinker.tasks: chat data as it is; a prompt as the user turn exactly as evaluation renders it),
so a hosted fine-tune sees the same text as a local one and is scored on the same prompts.

Preference pairs (objective=dpo) are uploaded in the shape OpenAI, Together and Fireworks all publish for
their DPO jobs, one pair per line: `{"input": {"messages": [prompt]}, "preferred_output": [assistant
message(s)], "non_preferred_output": [assistant message(s)]}`; a text prompt is the user turn exactly as the
local backends render it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from thinker.errors import ThinkerError
from thinker.providers.adapter import Capabilities
from thinker.tracking.atomic import atomic_write_text


@dataclass(frozen=True)
class UploadFiles:
    train: Path
    validation: Path | None
    train_examples: int
    validation_examples: int


def write_jsonl(path: Path, rows: list[dict]) -> None:
    # written beside and renamed into place: never a half-written upload file
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def preference_record(pair: Any) -> dict:
    """A PreferencePair (thinker.tasks.preference) as one line of a hosted DPO job's file."""
    from thinker.tasks.preference import prompt_text

    def replies(side: Any) -> list[dict]:
        return [dict(m) for m in side] if pair.is_chat else [{"role": "assistant", "content": str(side)}]

    prompt = [dict(m) for m in pair.prompt] if pair.is_chat else [{"role": "user",
                                                                   "content": prompt_text(None, pair)}]
    return {"input": {"messages": prompt}, "preferred_output": replies(pair.chosen),
            "non_preferred_output": replies(pair.rejected)}


def prepare_upload(cfg: DictConfig, run_dir: Path, caps: Capabilities) -> UploadFiles:
    """Write `<run>/provider/train.jsonl` (+ validation.jsonl) and check them against the provider's limits."""
    from thinker.data.examples import split_examples
    from thinker.data.source import effective_data_path
    from thinker.tasks import task_of

    task = task_of(cfg.data)  # chat data is uploaded as it is; prompt/completion as one user + assistant turn
    examples = task.read(effective_data_path(cfg, run_dir), cfg.data, cfg.data.max_examples)
    train, held_out = split_examples(examples, float(cfg.data.validation_split), int(cfg.seed))
    where = f"provider={caps.provider}, data={cfg.data.name}"
    if len(train) < caps.min_examples:
        raise ThinkerError(f"{len(train)} training examples, but {caps.provider} needs at least {caps.min_examples}",
                           where, "add examples, or lower data.validation_split", stage="train")
    folder = run_dir / "provider"
    line = preference_record if getattr(task, "pairs", False) else task.conversation
    train_path = folder / "train.jsonl"
    write_jsonl(train_path, [line(e) for e in train])
    val_path = None
    if held_out and int(cfg.trainer.evaluations) > 0:
        val_path = folder / "validation.jsonl"
        write_jsonl(val_path, [line(e) for e in held_out])
    for path in filter(None, (train_path, val_path)):
        size = path.stat().st_size
        if caps.max_file_bytes is not None and size > caps.max_file_bytes:
            raise ThinkerError(f"{path.name} is {size} bytes, over {caps.provider}'s {caps.max_file_bytes}-byte limit",
                               where, "set data.max_examples to upload fewer examples", stage="train")
    return UploadFiles(train_path, val_path, len(train), len(held_out) if val_path else 0)
