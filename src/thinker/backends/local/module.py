"""The LightningModule for fine-tuning a causal LM: weighted completion-only loss, optimizer, schedule.

Training minimises the weighted mean of token losses (seed 001 weights); `val_loss` is the plain mean
token cross-entropy on held-out completions, comparable across runs whatever the weights.
Checkpoints carry only trainable tensors (LoRA adapters stay small; a 4-bit base is never re-saved)
plus the RNG states, so a resumed run continues exactly where the interrupted one stopped.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F  # noqa: N812

from thinker.backends.local.optimizers import build_optimizer
from thinker.backends.local.schedules import lr_multiplier
from thinker.data.tokenize import IGNORE_INDEX

log = logging.getLogger("thinker")


def shift_left(t: torch.Tensor, fill: float) -> torch.Tensor:
    """t[:, 1:] padded back to full length: position i holds what position i predicts (token i+1)."""
    return F.pad(t[:, 1:], (0, 1), value=fill)


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token cross-entropy of predicting token t+1 at position t; 0 where the label is ignored.

    Labels are shifted rather than logits: slicing the (batch, length, vocab) logits would copy them
    and, in backward, build another full-size tensor.
    """
    targets = shift_left(labels, IGNORE_INDEX)
    return F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view_as(targets)


def weighted_mean(losses: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (losses * weights).sum() / weights.sum().clamp_min(1e-8)


class FineTuneModule(pl.LightningModule):
    def __init__(self, model: torch.nn.Module, optimizer_cfg: Any, total_steps: int, device_type: str = "cpu"):
        super().__init__()
        self.model = model
        self.model.train()  # from_pretrained returns eval mode; Lightning keeps whatever mode it finds
        self.optimizer_cfg = optimizer_cfg
        self.total_steps = max(1, total_steps)
        self.device_type = device_type
        self.strict_loading = False  # checkpoints hold only the trainable tensors
        self._val_sum = 0.0
        self._val_count = 0
        self.trained_tokens = 0
        self.val_history: list[tuple[int, float]] = []
        self._t0: float | None = None

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
        return self.model(**inputs, use_cache=False).logits

    def _losses(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, int]:
        losses = token_losses(self(batch), batch["labels"])
        weights = shift_left(batch["weights"], 0.0)
        mask = (shift_left(batch["labels"], IGNORE_INDEX) != IGNORE_INDEX).float()
        n = int(mask.sum().item())
        return weighted_mean(losses, weights), (losses * mask).sum(), n

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self._t0 is None:
            self._t0 = time.perf_counter()
        weighted, loss_sum, n = self._losses(batch)
        self.trained_tokens += n
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        self.log_dict(
            {
                "train_loss": loss_sum / max(n, 1),
                "train_loss_weighted": weighted,
                "lr": self.trainer.optimizers[0].param_groups[0]["lr"],
                "trained_tokens": float(self.trained_tokens),
                "tokens_per_sec": self.trained_tokens / elapsed,
            },
            on_step=True, on_epoch=False, prog_bar=False, batch_size=batch["input_ids"].size(0),
        )
        self.log("loss", loss_sum / max(n, 1), prog_bar=True, logger=False, on_step=True)
        return weighted

    def on_validation_epoch_start(self) -> None:
        self._val_sum, self._val_count = 0.0, 0

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        _, loss_sum, n = self._losses(batch)
        self._val_sum += float(loss_sum)
        self._val_count += n

    def on_validation_epoch_end(self) -> None:
        if self._val_count:
            val_loss = self._val_sum / self._val_count
            self.log("val_loss", val_loss, prog_bar=True, on_epoch=True)
            self.val_history.append((int(self.global_step), val_loss))
            log.info("step %d/%d: held-out loss %.4f", self.global_step, self.total_steps, val_loss)

    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = build_optimizer(self.optimizer_cfg, params, self.device_type)
        sched = self.optimizer_cfg.scheduler
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: lr_multiplier(step, self.total_steps, str(sched.type), float(sched.warmup_ratio),
                                       float(sched.min_lr_ratio), float(sched.cycles)),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        trainable = {f"model.{n}" for n, p in self.model.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
        checkpoint["thinker_rng"] = {
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            "trained_tokens": self.trained_tokens,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("thinker_rng")
        if state:
            torch.set_rng_state(state["torch"])
            random.setstate(state["python"])
            self.trained_tokens = int(state.get("trained_tokens", 0))
