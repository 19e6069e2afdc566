"""The one training progress bar: optimizer steps, ETA, loss and tokens/s, without Lightning's `v_num`."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import RichProgressBar


class StepProgressBar(RichProgressBar):
    def get_metrics(self, trainer: Any, pl_module: Any) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the logger's run id: noise next to the loss
        tokens_per_sec = getattr(pl_module, "tokens_per_sec", None)
        if tokens_per_sec:
            metrics["tok/s"] = f"{tokens_per_sec:,.0f}"
        return metrics
