"""Learning-rate schedules of the universal job schema's enum, with linear warmup and a floor (min_lr_ratio).

Written as one multiplier function so every backend and the tests share the exact same curve.
"""

from __future__ import annotations

import math
from typing import Any

from thinker.config.enums import LRSchedulerType


def scheduled_multiplier(step: int, total_steps: int, scheduler: Any) -> float:
    """lr_multiplier with the settings of an `optimizer.scheduler` config node (every backend's schedule)."""
    return lr_multiplier(step, total_steps, str(scheduler.type), float(scheduler.warmup_ratio),
                         float(scheduler.min_lr_ratio), float(scheduler.cycles))


def lr_multiplier(
    step: int,
    total_steps: int,
    kind: LRSchedulerType | str,
    warmup_ratio: float = 0.0,
    min_lr_ratio: float = 0.0,
    cycles: float = 0.5,
    power: float = 1.0,
) -> float:
    """Factor on the base learning rate at optimizer step `step` (0-based) of `total_steps`."""
    kind = LRSchedulerType(str(kind))
    warmup = int(math.ceil(warmup_ratio * total_steps))
    if kind != LRSchedulerType.constant and step < warmup:
        return (step + 1) / warmup
    if kind in (LRSchedulerType.constant, LRSchedulerType.constant_with_warmup):
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    if kind == LRSchedulerType.linear:
        decay = 1.0 - progress
    elif kind == LRSchedulerType.cosine:
        # cycles=0.5 is one half-wave from 1 down to 0, as in transformers' get_cosine_schedule_with_warmup
        decay = 0.5 * (1.0 + math.cos(math.pi * 2.0 * cycles * progress))
    else:  # polynomial
        decay = (1.0 - progress) ** power
    return min_lr_ratio + (1.0 - min_lr_ratio) * decay
