"""One Lightning run, shared by fine-tuning (thinker.backends.local.backend) and pretraining
(thinker.pretraining.run): the Trainer on trainer.* (accelerator, devices, precision), its callbacks (the
graceful stop on SIGINT / SIGTERM and periodic checkpoints written atomically, which resume needs, then the
`callbacks=` option's, each built from its `_target_`: conf/callbacks/) and the `logger=` option's logger; fit, resuming from the checkpoint a resumed run picks; a final held-out evaluation when the
last one did not describe the final weights; the one-line "stopped by" error; the atomic weights save.
The callers bring only what differs: the LightningModule, its data, the step plan and what they save.

Light at import (Lightning is imported by the functions that use it): config check imports the backend.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from thinker.errors import ExitCode, ThinkerError
from thinker.tracking.atomic import atomic_directory

log = logging.getLogger("thinker")

PRECISION = {"fp32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}
CHECKPOINTS = "checkpoints"
WEIGHTS = "weights"


def lightning_precision(precision: str) -> str:
    """Lightning's precision flag; the config check has already refused weight-only formats (int4, fp8...)."""
    return PRECISION[precision]


def device_type(cfg: DictConfig) -> str:
    import torch

    wants_gpu = str(cfg.trainer.accelerator) in ("gpu", "cuda")
    if wants_gpu and not torch.cuda.is_available():
        raise ThinkerError(
            f"trainer={cfg.trainer.name} needs a CUDA GPU and none is visible",
            "trainer.accelerator=gpu",
            "use trainer=cpu on this machine",
            stage="train",
        )
    if str(cfg.trainer.accelerator) == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if wants_gpu else "cpu"


def lightning_devices(cfg: DictConfig) -> Any:
    """trainer.devices as Lightning takes it (a list stays a plain list)."""
    from omegaconf import ListConfig

    devices = cfg.trainer.devices
    return list(devices) if isinstance(devices, ListConfig) else devices


def checkpoint_interval(steps: int, cfg: DictConfig) -> int:
    """Steps between checkpoints (and held-out evaluations, when there are any): 1/evaluations of the run."""
    return max(1, steps // max(1, int(cfg.trainer.evaluations)))


def save_weights_atomically(model: Any, tokenizer: Any, target: Path, metadata: dict[str, Any],
                            state_dict: dict[str, Any] | None = None) -> Path:
    """save_pretrained into a temp folder beside `target`, then rename: never a half-written adapter.
    `state_dict`: the weights to write when `model` holds only this rank's shard of them (FSDP)."""
    import json

    with atomic_directory(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True,
                              **({"state_dict": state_dict} if state_dict is not None else {}))
        tokenizer.save_pretrained(tmp)
        (tmp / "metadata.json").write_text(json.dumps(metadata, indent=2, default=str) + "\n")
    return target


def quiet_lightning() -> None:
    """Lightning adds its own console handler; Hydra's root handler already prints (and files) its records."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).handlers.clear()
    # its info lines (device summary, cloud-logger tips) repeat what thinker logs; warnings still show
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    # its tips about cloud loggers and "eval mode" module counts are noise in a launcher's output
    import warnings

    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
    # manual optimization: a checkpoint holds the weights after the step it is named for, which is what
    # resume needs; Lightning's note about "pre-optimization state" does not apply
    warnings.filterwarnings("ignore", message=".*ModelCheckpoint with manual optimization.*")
    # data parallel: the module sums the held-out loss over the ranks itself, so every rank logs the global one
    warnings.filterwarnings("ignore", message=".*sync_dist=True.*")


def configured_callbacks(cfg: DictConfig) -> list[Any]:
    """The `callbacks=` option's Lightning callbacks, each built from its `_target_` (conf/callbacks/)."""
    from hydra.utils import instantiate

    return [instantiate(node) for node in (cfg.get("callbacks") or {}).values() if node is not None]


class LightningRun:
    """The Trainer of one run (fine-tuning or pretraining) with thinker's callbacks and logger.

    `steps`: optimizer steps planned; `every`: steps between checkpoints and held-out evaluations;
    `steps_per_epoch`: one epoch's steps (a held-out evaluation is due at least once an epoch);
    `has_val`: there is held-out data; `single_process`: one process on one device, whatever trainer.devices
    says (pretraining: its module's held-out loss and step plan are one process's); `callbacks`: extra
    Lightning callbacks (tools and tests); `trainer_options`: further pl.Trainer arguments.
    """

    def __init__(self, cfg: DictConfig, run_dir: Path, session: Any, *, steps: int, every: int,
                 steps_per_epoch: int, has_val: bool, max_epochs: int, single_process: bool = False,
                 callbacks: tuple = (), **trainer_options: Any):
        import lightning.pytorch as pl

        from thinker.backends.local.checkpointing import (
            AtomicCheckpointIO,
            GracefulStop,
            periodic_checkpoints,
        )
        from thinker.tracking.loggers import training_logger

        self.run_dir = run_dir
        self.checkpoint_dir = run_dir / CHECKPOINTS
        self.stopper = GracefulStop(self.checkpoint_dir)
        # save_total_limit periodic checkpoints are kept (newest first); last.ckpt is always kept for resume
        periodic = periodic_checkpoints(self.checkpoint_dir, every, int(cfg.trainer.save_total_limit))
        # resumed: what the interrupted run already logged is not logged again (one point per step)
        self.logger = training_logger(cfg.logger, run_dir=run_dir, session=session, resuming=bool(cfg.resume))
        placement = ({"devices": 1} if single_process else
                     {"devices": lightning_devices(cfg), "num_nodes": int(cfg.trainer.num_nodes),
                      "strategy": str(cfg.trainer.strategy)})
        self.trainer = pl.Trainer(
            accelerator="gpu" if device_type(cfg) == "cuda" else "cpu",
            **placement,
            precision=lightning_precision(str(cfg.trainer.precision)),
            max_epochs=max_epochs,
            max_steps=steps,
            val_check_interval=min(every, steps_per_epoch) if has_val else None,
            check_val_every_n_epoch=None if has_val else 1,
            limit_val_batches=1.0 if has_val else 0,
            num_sanity_val_steps=0,
            log_every_n_steps=int(cfg.trainer.log_every_n_steps),  # the modules log themselves; keeps Lightning quiet
            logger=self.logger,
            callbacks=[self.stopper, periodic, *configured_callbacks(cfg), *callbacks],
            plugins=[AtomicCheckpointIO()],
            enable_model_summary=False,
            default_root_dir=str(run_dir),
            **trainer_options,
        )
        self.fit_seconds = 0.0

    def fit(self, module: Any, ckpt_path: Path | None, fit_data: dict[str, Any],
            validate_data: dict[str, Any] | None) -> None:
        """trainer.fit from `ckpt_path` (None: from the start), then, unless a signal stopped it, a held-out
        evaluation of the final weights when the last one was earlier: the reported val_loss (and what a
        sweeper minimises) must describe them. `module.val_history`: (step, val_loss) of each evaluation."""
        from thinker.backends.local.checkpointing import LOAD_WEIGHTS_ONLY

        started = time.perf_counter()
        self.trainer.fit(module, ckpt_path=str(ckpt_path) if ckpt_path else None, weights_only=LOAD_WEIGHTS_ONLY,
                         **fit_data)
        self.fit_seconds = time.perf_counter() - started
        evaluated = bool(module.val_history) and module.val_history[-1][0] == self.trainer.global_step
        if validate_data is not None and not self.stopper.requested and not evaluated:
            self.trainer.validate(module, verbose=False, **validate_data)

    def finish(self, what: str) -> dict[str, float]:
        """Flush the logger (its metrics, e.g. the share of the fit spent logging), then, when a signal stopped
        the run, the one-line error that says how to resume it. Every rank calls it."""
        from thinker.tracking.mlflow_logger import BatchedMlflowLogger
        from thinker.tracking.resume_command import resume_command

        metrics: dict[str, float] = {}
        if isinstance(self.logger, BatchedMlflowLogger):
            self.logger.flush(wait=True)
            metrics["logging_overhead_fraction"] = self.logger.seconds_in_logging / max(self.fit_seconds, 1e-9)
        if self.stopper.requested:
            raise ThinkerError(
                f"{what} stopped by {self.stopper.requested} at step {self.trainer.global_step}; checkpoint saved",
                f"{self.checkpoint_dir / 'last.ckpt'}",
                f"continue with: {resume_command(self.run_dir)}", stage="train", code=ExitCode.INTERRUPTED,
            )
        return metrics
