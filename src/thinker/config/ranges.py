"""Parameter ranges of the universal job schema, keyed by the config path that holds them (docs/decisions/0001-hydra-composition-and-typed-schema.md).

This table is the single source of truth: the config check, the provider capability reports and the
provider payload translation all read it. The universal schema's names are given beside each key; keys Thinker adds
(the run's seed, data bounds) have none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Range:
    min: float
    max: float
    default: float
    seed_name: str | None  # the universal job schema's name, so provider translations can map back; None: not one of its keys
    integer: bool = False
    min_exclusive: bool = False

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.integer and not float(value).is_integer():
            return False
        if math.isnan(value):
            return False
        low_ok = value > self.min if self.min_exclusive else value >= self.min
        return low_ok and value <= self.max

    def describe(self) -> str:
        low = "(" if self.min_exclusive else "["
        kind = "integer " if self.integer else ""
        return f"{kind}{low}{_fmt(self.min)}, {_fmt(self.max)}]"


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


PARAMETER_RANGES: dict[str, Range] = {
    # schedule
    "trainer.epochs": Range(1, 20, 3, "schedule.epochs", integer=True),
    "trainer.batch_size": Range(1, 64, 4, "schedule.batchSize", integer=True),
    # The universal job schema starts sequence length at 512 because hosted providers do. The local backend trains tiny
    # models on short examples on CPU, where 512 would waste most of every step on padding, so the
    # universal floor is widened to 16 here; provider capability reports raise it back to 512.
    "trainer.max_seq_length": Range(16, 33000, 2048, "schedule.sequenceLength", integer=True),
    "trainer.grad_accum": Range(1, 16, 1, "schedule.gradientAccumulation", integer=True),
    "trainer.save_total_limit": Range(0, 10, 1, "schedule.checkpoints", integer=True),
    "trainer.evaluations": Range(0, 20, 1, "schedule.evaluations", integer=True),
    # optimizer: a learning rate of exactly 0 trains nothing, so the lower bound is exclusive
    "optimizer.lr": Range(0, 1, 1e-5, "optimizer.learningRate", min_exclusive=True),
    "optimizer.weight_decay": Range(0, 1, 0, "optimizer.weightDecay"),
    "optimizer.max_grad_norm": Range(0, 10, 1, "optimizer.maxGradientNorm"),
    "optimizer.scheduler.warmup_ratio": Range(0, 1, 0, "optimizer.scheduler.warmupRatio"),
    "optimizer.scheduler.min_lr_ratio": Range(0, 1, 0, "optimizer.scheduler.minLRRatio"),
    "optimizer.scheduler.cycles": Range(0.1, 2.0, 0.5, "optimizer.scheduler.cycles"),
    # lora
    "method.rank": Range(1, 256, 8, "lora.rank", integer=True),
    "method.alpha": Range(1, 512, 16, "lora.alpha"),
    "method.dropout": Range(0, 1, 0, "lora.dropout"),
    # the run: numpy seeds its generators with an unsigned 32-bit integer and refuses anything else mid-training
    "seed": Range(0, 2**32 - 1, 42, None, integer=True),
    # data: the validate stage refuses longer lines before parsing them, since a record of a few hundred MB would
    # pass the schema and then abort the process inside the tokenizer (docs/data.md)
    "data.max_record_chars": Range(1, 100_000_000, 1_000_000, None, integer=True),
}


class RangeError(ValueError):
    def __init__(self, key: str, value: Any, rng: Range):
        self.key = key
        self.value = value
        self.range = rng
        super().__init__(f"{key}={value!r} is outside the allowed range {rng.describe()}")


def check_range(key: str, value: Any) -> None:
    """Raise RangeError naming the key and its range when `value` is outside it. None means 'unset'."""
    rng = PARAMETER_RANGES[key]
    if value is None:
        return
    if not rng.contains(value):
        raise RangeError(key, value, rng)
