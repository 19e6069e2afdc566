"""The LightningModule of from-scratch pretraining (its own loop, never fine-tuning's: docs/decisions/0010-cognate-pretraining-path.md).

Every token is a target (thinker.pretraining.blocks); the loss is the model's own (LM loss plus the ACT ponder
cost for Cognate). GrokFast filters the gradients inside its optimizer's step (thinker.pretraining.grokfast),
so Lightning's automatic optimization, clipping and LR scheduler work unchanged. Logged at the optimizer step
they describe: the loss parts, average ponder steps, the memory's read/write statistics and the GrokFast
filter norm; at each evaluation the held-out loss and the reasoning-answer accuracy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch

from thinker.backends.schedules import scheduled_multiplier

log = logging.getLogger("thinker")

# the model output's scalar fields that describe how it computes (Cognate: ACT and long-term memory)
PROGRESS_FIELDS = ("lm_loss", "ponder_cost", "ponder_steps", "memory_write_gate", "memory_read_entropy",
                   "memory_read_norm")


class PretrainModule(pl.LightningModule):
    def __init__(self, model: torch.nn.Module, optimizer_cfg: Any, total_steps: int,
                 accuracy: Callable[[torch.nn.Module], dict[str, float]] | None = None):
        super().__init__()
        self.model = model
        self.optimizer_cfg = optimizer_cfg
        self.total_steps = total_steps
        self.accuracy = accuracy  # held-out reasoning accuracy by generation, run at each evaluation
        self.last_train_loss: float | None = None
        self.val_history: list[tuple[int, float]] = []
        self.accuracy_history: list[tuple[int, dict[str, float]]] = []
        self.trained_tokens = 0
        self.tokens_per_sec: float | None = None
        self._val_sum = self._val_count = 0.0
        self._started = time.perf_counter()

    # ------------------------------------------------------------------ training

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self.model(**batch)
        tokens = int(batch["attention_mask"].sum())
        self.trained_tokens += tokens
        elapsed = time.perf_counter() - self._started
        self.tokens_per_sec = self.trained_tokens / max(elapsed, 1e-9)
        step = self.global_step + 1  # the optimizer step this batch becomes
        metrics = {"train_loss": float(out.loss.detach())}
        metrics.update(progress_metrics(out))
        self.last_train_loss = metrics["train_loss"]
        self.log("loss", metrics["train_loss"], prog_bar=True, logger=False)
        if self.logger:
            self.logger.log_metrics(metrics, step=step)
        return out.loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # GrokFast's EMA norm, from the step that just ran (the filter runs inside the optimizer's step)
        norm = getattr(self.trainer.optimizers[0], "filter_norm", None)
        if norm is not None and self.logger:
            self.logger.log_metrics({"grokfast_filter_norm": float(norm)}, step=self.global_step)

    # ------------------------------------------------------------------ held-out

    def on_validation_epoch_start(self) -> None:
        self._val_sum = self._val_count = 0.0

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        out = self.model(**batch)
        lm = getattr(out, "lm_loss", None)
        loss = float((lm if lm is not None else out.loss).detach())
        tokens = float(batch["attention_mask"].sum())
        self._val_sum += loss * tokens
        self._val_count += tokens

    def on_validation_epoch_end(self) -> None:
        if not self._val_count or self.trainer.sanity_checking:
            return
        step = self.global_step
        val_loss = self._val_sum / self._val_count
        self.val_history.append((step, val_loss))
        metrics = {"val_loss": val_loss}
        if self.accuracy is not None:
            scores = self.accuracy(self.model)
            self.accuracy_history.append((step, scores))
            metrics.update(scores)
        if self.logger:
            self.logger.log_metrics(metrics, step=step)
        log.info("step %d: %s", step, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))

    # ------------------------------------------------------------------ optimizer

    def configure_optimizers(self) -> Any:
        optimizer = build_pretrain_optimizer(self.optimizer_cfg, [p for p in self.model.parameters()
                                                                  if p.requires_grad])
        schedule = self.optimizer_cfg.scheduler
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: scheduled_multiplier(step, self.total_steps, schedule))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def progress_metrics(out: Any) -> dict[str, float]:
    found = {}
    for name in PROGRESS_FIELDS:
        value = getattr(out, name, None)
        if value is not None:
            found[name] = float(value.detach().float().mean()) if torch.is_tensor(value) else float(value)
    return found


def build_pretrain_optimizer(cfg: Any, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The option's `_target_`, as fine-tuning builds it (optimizer=grokfast: AdamW behind the GrokFast-EMA filter)."""
    from thinker.backends.local.optimizers import build_optimizer

    return build_optimizer(cfg, params, "cpu" if not torch.cuda.is_available() else "cuda")
