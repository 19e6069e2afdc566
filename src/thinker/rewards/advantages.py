"""Group-relative advantages and the KL penalty folded into them: the same numbers for every backend.

GRPO scores `group_size` completions of one prompt and trains each on how much better it did than its group.
The KL penalty to the reference is tinker-cookbook's (rl.metrics.incorporate_kl_penalty): per sampled token,
d_t = sampler log p_t - reference log p_t, and A_t += kl_coef (mean d - d_t) over the step's sampled tokens,
so the penalty needs no loss term of its own and every Tinker loss carries it. Plain Python (no torch).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

STD_FLOOR = 1e-4  # a group whose rewards barely differ is not blown up into +-1 advantages


def group_advantages(rewards: Sequence[float], group_size: int, scale: bool = True) -> list[float]:
    """Each reward minus its group's mean, divided by the group's (population) std when `scale` (GRPO);
    `rewards` holds consecutive groups of `group_size`. A group with equal rewards has advantage 0 throughout."""
    if group_size < 1 or len(rewards) % group_size:
        raise ValueError(f"{len(rewards)} rewards do not make groups of {group_size}")
    out: list[float] = []
    for start in range(0, len(rewards), group_size):
        group = [float(r) for r in rewards[start:start + group_size]]
        mean = sum(group) / len(group)
        std = math.sqrt(sum((r - mean) ** 2 for r in group) / len(group))
        if std < STD_FLOOR:
            out.extend(0.0 for _ in group)
        else:
            out.extend((r - mean) / (std if scale else 1.0) for r in group)
    return out


def kl_penalised(advantages: Sequence[Sequence[float]], sampler_logprobs: Sequence[Sequence[float]],
                 reference_logprobs: Sequence[Sequence[float]], kl_coef: float) -> tuple[list[list[float]], float]:
    """Per-token advantages with the KL penalty folded in, and kl/policy_ref: the mean over sampled tokens of
    sampler log p - reference log p (tinker-cookbook's kl_policy_base). Each row is one completion's tokens."""
    diffs = [[s - r for s, r in zip(srow, rrow, strict=True)]
             for srow, rrow in zip(sampler_logprobs, reference_logprobs, strict=True)]
    count = sum(len(row) for row in diffs)
    mean = sum(sum(row) for row in diffs) / count if count else 0.0
    penalised = [[a + kl_coef * (mean - d) for a, d in zip(arow, drow, strict=True)]
                 for arow, drow in zip(advantages, diffs, strict=True)]
    return penalised, mean


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return 0.0, 0.0
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
