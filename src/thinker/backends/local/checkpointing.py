"""Checkpoints that survive kill -9, and a graceful stop on SIGINT / SIGTERM.

AtomicCheckpointIO writes each checkpoint to a temporary file in the same folder and renames it into
place, so the newest complete checkpoint is always loadable. GracefulStop replaces the signal handlers
for the duration of training: a signal sets a flag, and at the next batch boundary a checkpoint is saved
and Lightning is asked to stop; the backend then closes the MLflow run as KILLED and exits non-zero.
periodic_checkpoints is the ModelCheckpoint both local loops (fine-tuning and pretraining) save with;
thinker.backends.local.resume picks the checkpoint a resumed run continues from.

Loading and saving say `weights_only` explicitly (Lightning otherwise logs that it was not set): our
checkpoints hold tensors and plain Python values only, so resume loads them with weights_only=True, which
cannot run code from a file; the stop save writes a full checkpoint (weights_only=False: optimizer,
schedule and loop states too), as ModelCheckpoint's saves do.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from thinker.tracking.atomic import atomic_write

LAST = "last.ckpt"
# what trainer.fit(weights_only=...) loads a resumed checkpoint with (see the module docstring)
LOAD_WEIGHTS_ONLY = True


def periodic_checkpoints(ckpt_dir: Path, every: int, keep: int) -> ModelCheckpoint:
    """`stepNNNNNN.ckpt` every `every` steps, the newest `keep` kept, and last.ckpt always (for resume).

    A step's file name is unique to its step, so a resumed run that reaches a step again overwrites that
    step's file (enable_version_counter=False) rather than writing a `-v1` copy that nothing would delete."""
    return ModelCheckpoint(dirpath=ckpt_dir, filename="step{step:06d}", auto_insert_metric_name=False,
                           every_n_train_steps=every, save_top_k=keep, monitor="step", mode="max", save_last=True,
                           enable_version_counter=False)


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        atomic_write(path, lambda fh: torch.save(checkpoint, fh))


class GracefulStop(pl.Callback):
    """On SIGINT/SIGTERM: finish the current batch, save `last.ckpt`, stop. `requested` tells the caller."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, checkpoint_dir: Path):
        self.checkpoint_dir = Path(checkpoint_dir)
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested is not None:  # a second Ctrl+C: stop waiting for the batch to end
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Installed after Lightning's own SIGTERM handling, which would raise mid-step instead.
        for sig in self.SIGNALS:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handler)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        stop = self.requested is not None
        if trainer.world_size > 1:
            # every rank must stop at the same step (and save together): one rank's signal stops them all
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
            if stop and self.requested is None:
                self.requested = "a stop signal on another rank"
        if stop and not trainer.should_stop:
            trainer.save_checkpoint(self.checkpoint_dir / LAST, weights_only=False)
            trainer.should_stop = True

    def restore_handlers(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.restore_handlers()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.restore_handlers()
