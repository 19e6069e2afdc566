"""Training progress for the Lightning loops (fine-tuning and pretraining): the one progress bar (optimizer steps,
loss, tokens/s, without Lightning's `v_num`) and, outside a terminal, a progress line every few seconds."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from lightning.pytorch.callbacks import Callback, RichProgressBar
from lightning.pytorch.callbacks.progress.rich_progress import CustomTimeColumn
from rich.text import Text

from thinker.backends.progress_lines import ProgressLines


def planned_epochs(trainer: Any) -> int | None:
    """Epochs this fit will start: trainer.max_steps over the batches of an epoch (one batch is one optimizer
    step in both loops), at most max_epochs. None when neither bounds it."""
    per_epoch = trainer.num_training_batches
    by_epochs = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs > 0 else None
    if trainer.max_steps > 0 and isinstance(per_epoch, int) and per_epoch > 0:
        by_steps = math.ceil(trainer.max_steps / per_epoch)
        return min(by_steps, by_epochs) if by_epochs else by_steps
    return by_epochs


class ElapsedWhenDone(CustomTimeColumn):
    """`elapsed • remaining` while a bar runs; only the elapsed time once it is done (no `• 0:00:00`)."""

    def render(self, task: Any) -> Text:
        if task.finished:
            return Text(str(timedelta(seconds=int(task.finished_time or 0))), style=self.style)
        return super().render(task)


class StepProgressBar(RichProgressBar):
    """Lightning's Rich bar, counted the way the run is planned: `Epoch 2/3` (1-based, of the epochs the run
    will start), the last epoch's bar ending at trainer.max_steps rather than at the epoch's end, and no
    remaining time once a bar is done."""

    def get_metrics(self, trainer: Any, pl_module: Any) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the logger's run id: noise next to the loss
        tokens_per_sec = getattr(pl_module, "tokens_per_sec", None)
        if tokens_per_sec:
            metrics["tok/s"] = f"{tokens_per_sec:,.0f}"
        return metrics

    @property
    def total_train_batches(self) -> int | float:
        total = super().total_train_batches
        trainer = self.trainer
        if trainer.max_steps > 0 and isinstance(total, int) and total > 0:
            # a run bounded by max_steps stops inside its last epoch: that epoch's bar ends where the run does
            # (one batch is one optimizer step, so epoch e starts after e x total steps, resumed or not)
            left = trainer.max_steps - trainer.current_epoch * total
            if 0 < left < total:
                return left
        return total

    def _get_train_description(self, current_epoch: int) -> str:
        epochs = planned_epochs(self.trainer)
        description = f"Epoch {current_epoch + 1}" + (f"/{epochs}" if epochs else "")
        # as Lightning pads it: the same width as the "Validation" bar's description
        return f"{description:{len(self.validation_description)}}"

    def configure_columns(self, trainer: Any) -> list:
        return [ElapsedWhenDone(style=column.style) if isinstance(column, CustomTimeColumn) else column
                for column in super().configure_columns(trainer)]


class ProgressLogLines(Callback):
    """Outside a terminal, a progress line every `every_s` seconds (thinker.backends.progress_lines), from
    rank 0 only: a piped or CI log is never silent for long."""

    def __init__(self, every_s: float, enabled: bool | None = None):
        self.every_s, self.enabled = float(every_s), enabled
        self.lines: ProgressLines | None = None

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.is_global_zero:
            total = trainer.max_steps if trainer.max_steps > 0 else int(trainer.estimated_stepping_batches)
            self.lines = ProgressLines(total, self.every_s, done=trainer.global_step, enabled=self.enabled)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.lines is None:
            return
        loss = trainer.progress_bar_metrics.get("loss")
        self.lines.update(trainer.global_step, float(loss) if loss is not None else None,
                          getattr(pl_module, "tokens_per_sec", None))

