"""The evaluation metrics as a small fixed-width table for stdout: base -> trained, with floors marked."""

from __future__ import annotations

from typing import Any

from thinker.evaluation.metrics import METRIC_NAMES

COUNTS = ("total", "c1_exact_match")  # counts, not scores: no change column, no floor mark


def at_floor(after: dict[str, float], floor: dict[str, float]) -> list[str]:
    """Score metrics whose trained value is no better than what an empty answer scores."""
    return [name for name in METRIC_NAMES if name not in COUNTS and name in after
            and float(after[name]) <= float(floor.get(name, 0.0))]


def comparison_table(before: dict[str, float] | None, after: dict[str, float], floor: dict[str, float],
                     title: str) -> str:
    """metric | base | trained | change, with `(floor)` where the trained score is no better than an empty answer."""
    width = max(len(name) for name in METRIC_NAMES)

    def shown(value: Any) -> str:
        return "n/a" if value is None else f"{value:d}" if isinstance(value, int) else f"{value:.4f}"

    lines = [title, f"{'metric':<{width}}  {'base':>8}  {'trained':>8}  {'change':>8}",
             f"{'-' * width}  {'-' * 8}  {'-' * 8}  {'-' * 8}"]
    low = set(at_floor(after, floor))
    for name in METRIC_NAMES:
        base, trained = (before or {}).get(name), after.get(name)
        change = "" if name in COUNTS or base is None or trained is None else f"{trained - base:+.4f}"
        note = f"  (floor: an empty answer scores {floor[name]:.4f})" if name in low else ""
        lines.append(f"{name:<{width}}  {shown(base):>8}  {shown(trained):>8}  {change:>8}{note}")
    return "\n".join(lines)

