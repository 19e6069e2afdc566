"""The evaluation metrics as a small fixed-width table for stdout."""

from __future__ import annotations

from thinker.evaluation.metrics import METRIC_NAMES


def metrics_table(metrics: dict[str, float], title: str = "evaluation") -> str:
    width = max(len(name) for name in METRIC_NAMES)
    lines = [f"{title}", f"{'metric':<{width}}  value", f"{'-' * width}  ------"]
    for name in METRIC_NAMES:
        value = metrics.get(name)
        shown = f"{value:d}" if isinstance(value, int) else f"{value:.4f}" if value is not None else "n/a"
        lines.append(f"{name:<{width}}  {shown}")
    return "\n".join(lines)
