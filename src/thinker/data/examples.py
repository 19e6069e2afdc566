"""Read prompt/completion records and split them into train and held-out parts, deterministically."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Example:
    prompt: str
    completion: str


def read_examples(path: str | Path, prompt_field: str, completion_field: str, limit: int | None = None) -> list[Example]:
    """Records of a JSONL file that the validation stage has already checked (blank lines skipped)."""
    out: list[Example] = []
    with open(path, encoding="utf-8-sig") as fh:
        for line in fh:
            if not line.strip():
                continue
            record = json.loads(line)
            out.append(Example(record[prompt_field], record[completion_field]))
            if limit is not None and len(out) >= limit:
                break
    return out


def split_indices(count: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """The positions of split_examples' train and held-out parts among `count` examples."""
    order = list(range(count))
    random.Random(seed).shuffle(order)
    n_val = int(round(count * fraction)) if fraction > 0 else 0
    n_val = min(max(n_val, 1 if fraction > 0 else 0), max(count - 1, 0))
    cut = count - n_val
    return order[:cut], order[cut:]


def split_examples(examples: Sequence[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """A seeded shuffle, then the last `fraction` held out. At least one example stays on each side."""
    train, held_out = split_indices(len(examples), fraction, seed)
    return [examples[i] for i in train], [examples[i] for i in held_out]
