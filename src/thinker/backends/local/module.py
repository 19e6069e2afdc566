"""The LightningModule for fine-tuning a causal LM: weighted completion-only loss, optimizer, schedule.

One train batch is one optimizer step: a list of `trainer.grad_accum` micro-batches. The step's loss is
normalised by the weighted target tokens of the whole step (the fix transformers made in 4.46), not a mean
of micro-batch means, so grad_accum=4 x batch 1 computes the same gradients as grad_accum=1 x batch 4.
Lightning's automatic accumulation divides each micro-batch loss by the number of micro-batches, which is
exactly that bias, so this module steps the optimizer itself (Lightning's manual optimization); a stop
signal can then only land between optimizer steps.

Data parallel (DDP / FSDP): the step's weighted target tokens are summed over every rank before any loss is
scaled, and each rank's loss is multiplied by the number of ranks, which the gradient all-reduce's average
cancels: the gradients are those of one process training every rank's rows at once (batch_size x ranks).
Train and held-out losses are summed over the ranks too, so every rank logs and stores the global numbers.

`val_loss` is the plain mean token cross-entropy on held-out completions, comparable across runs whatever
the weights. Metrics reach the logger at the optimizer step they describe (1 for the first step), the same
number the console prints. Checkpoints carry only trainable tensors (LoRA adapters stay small; a 4-bit base
is never re-saved) plus the RNG states, so a resumed run continues exactly where the interrupted one stopped.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F  # noqa: N812

from thinker.backends.local.losses import shift_left
from thinker.backends.local.optimizers import build_optimizer
from thinker.backends.schedules import scheduled_multiplier
from thinker.data.tokenize import IGNORE_INDEX

log = logging.getLogger("thinker")


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


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}


def target_weights(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The loss weight of each position's target token (0 for prompt and padding)."""
    return shift_left(batch["weights"], 0.0)


def target_mask(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return (shift_left(batch["labels"], IGNORE_INDEX) != IGNORE_INDEX).float()


def keep_4bit_training_layout(model: torch.nn.Module) -> int:
    """Keep bitsandbytes 4-bit layers in their training layout for the whole fit.

    On a CPU with avx512_bf16, bitsandbytes (0.50) repacks a Linear4bit's weight into a CPU inference
    layout the first time it runs in eval mode without grad (our held-out evaluation) and never converts it
    back, so the next training step fails ("a view of a leaf Variable ... in-place operation"). The packed
    kernel also rounds differently, so held-out losses would depend on the CPU. Switching the layer's
    capability flag off keeps every step, training or held-out, on the same layout and numerics on every
    CPU. Returns the number of 4-bit layers pinned.
    """
    pinned = 0
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):  # bitsandbytes.nn.Linear4bit and subclasses
            module.support_avx512bf16_for_cpu = False
            pinned += 1
    return pinned


class FineTuneModule(pl.LightningModule):
    def __init__(self, model: torch.nn.Module, optimizer_cfg: Any, total_steps: int, device_type: str = "cpu",
                 log_every_n_steps: int = 1, hidden_state_loss: Any = None):
        super().__init__()
        self.automatic_optimization = False  # see the module docstring: per-step token normalisation
        self.model = model
        self.model.train()  # from_pretrained returns eval mode; Lightning keeps whatever mode it finds
        keep_4bit_training_layout(self.model)
        self.optimizer_cfg = optimizer_cfg
        self.max_grad_norm = float(optimizer_cfg.max_grad_norm)
        self.total_steps = max(1, total_steps)
        self.device_type = device_type
        self.log_every_n_steps = max(1, int(log_every_n_steps))
        self.strict_loading = False  # checkpoints hold only the trainable tensors
        # trainer.optimizations fused_kernels: the loss from the last hidden states, never the full logits
        # (thinker.backends.local.losses.HiddenStateLoss); None: from the model's logits
        self.hidden_state_loss = hidden_state_loss
        self._val_sum = 0.0
        self._val_count = 0
        self.trained_tokens = 0
        self.val_history: list[tuple[int, float]] = []
        self.train_history: list[tuple[int, float]] = []
        self._t0: float | None = None
        self._tokens_at_start = 0
        self.tokens_per_sec = 0.0  # trained tokens per second since this fit started (progress bar, MLflow)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(**model_inputs(batch), use_cache=False).logits

    def weighted_and_token_losses(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum of weight x cross-entropy over the batch's targets, each position's cross-entropy)."""
        if self.hidden_state_loss is not None:
            return self.hidden_state_loss(model_inputs(batch), batch["labels"], batch["weights"])
        losses = token_losses(self(batch), batch["labels"])
        return (losses * target_weights(batch)).sum(), losses

    # ------------------------------------------------------------ training

    def _no_grad_sync(self, last: bool) -> Any:
        """Skip the gradient all-reduce on all but the last micro-batch of a step (DDP); a no-op elsewhere."""
        block = getattr(self.trainer.strategy, "block_backward_sync", None)
        return block() if (block is not None and not last) else contextlib.nullcontext()

    def _sum_over_ranks(self, *values: float) -> list[float]:
        """Each value summed over every data-parallel rank (a collective: every rank calls it); as is alone."""
        trainer = self._trainer  # None outside a fit (tests that drive the module by hand)
        if trainer is None or trainer.world_size == 1:
            return list(values)
        summed = trainer.strategy.reduce(torch.tensor(values, dtype=torch.float64, device=self.device),
                                         reduce_op="sum")
        return [float(v) for v in summed.tolist()]

    def training_step(self, micro_batches: list[dict[str, torch.Tensor]], batch_idx: int) -> torch.Tensor:
        if self._t0 is None:
            self._t0, self._tokens_at_start = time.perf_counter(), self.trained_tokens
        optimizer = self.optimizers()
        scheduler = self.lr_schedulers()
        (step_weight,) = self._sum_over_ranks(sum(float(target_weights(mb).sum()) for mb in micro_batches))
        denominator = max(step_weight, 1e-8)
        # the gradient all-reduce averages over the ranks; scaling each rank's loss by the rank count makes it a sum
        scale = denominator / self._world_size()
        loss_sum, weighted_sum, n = 0.0, 0.0, 0
        for i, batch in enumerate(micro_batches):
            with self._no_grad_sync(last=i == len(micro_batches) - 1):
                weighted, losses = self.weighted_and_token_losses(batch)
                self.manual_backward(weighted / scale)
            mask = target_mask(batch)
            loss_sum += float((losses.detach() * mask).sum())
            weighted_sum += float(weighted.detach())
            n += int(mask.sum().item())
        loss_sum, weighted_sum, tokens = self._sum_over_ranks(loss_sum, weighted_sum, float(n))
        n = int(round(tokens))
        if self.max_grad_norm > 0:
            self.clip_gradients(optimizer, gradient_clip_val=self.max_grad_norm, gradient_clip_algorithm="norm")
        lr = optimizer.param_groups[0]["lr"]  # the rate this step used
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()

        self.trained_tokens += n
        step = int(self.global_step)  # already counts the step just taken: 1 after the first
        if n == 0:  # every completion of this step was cut by max_seq_length: no loss to report
            return torch.tensor(0.0)
        step_loss = loss_sum / n
        self.train_history.append((step, step_loss))
        self.log("loss", step_loss, prog_bar=True, logger=False, on_step=True)
        self.tokens_per_sec = (self.trained_tokens - self._tokens_at_start) / max(time.perf_counter() - self._t0, 1e-9)
        if step % self.log_every_n_steps == 0 or step >= self.total_steps:
            self.log_to_tracker({
                "train_loss": step_loss,
                "train_loss_weighted": weighted_sum / denominator,
                "lr": lr,
                "trained_tokens": float(self.trained_tokens),
                "tokens_per_sec": self.tokens_per_sec,
            }, step)
        return torch.tensor(step_loss)

    def _world_size(self) -> int:
        return 1 if self._trainer is None else int(self._trainer.world_size)

    def log_to_tracker(self, metrics: dict[str, float], step: int) -> None:
        if self.logger is not None and self.trainer.is_global_zero:
            self.logger.log_metrics(metrics, step=step)

    @property
    def last_train_loss(self) -> float | None:
        return self.train_history[-1][1] if self.train_history else None

    # ------------------------------------------------------------ held-out evaluation

    def on_validation_epoch_start(self) -> None:
        self._val_sum, self._val_count = 0.0, 0

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        _, losses = self.weighted_and_token_losses(batch)
        mask = target_mask(batch)
        self._val_sum += float((losses * mask).sum())
        self._val_count += int(mask.sum().item())

    def on_validation_epoch_end(self) -> None:
        # each rank scored its shard of the held-out rows: the loss is the global one
        val_sum, val_count = self._sum_over_ranks(self._val_sum, float(self._val_count))
        if val_count:
            val_loss = val_sum / val_count
            step = int(self.global_step)
            self.log("val_loss", val_loss, prog_bar=True, logger=False, on_epoch=True)
            self.val_history.append((step, val_loss))
            self.log_to_tracker({"val_loss": val_loss}, step)
            log.info("step %d/%d: held-out loss %.4f", step, self.total_steps, val_loss)

    # ------------------------------------------------------------ optimizer, checkpoints

    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = build_optimizer(self.optimizer_cfg, params, self.device_type)
        sched = self.optimizer_cfg.scheduler
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: scheduled_multiplier(step, self.total_steps, sched))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        trainable = {f"model.{n}" for n, p in self.model.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
        checkpoint["thinker_rng"] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "python": random.getstate(),
            "trained_tokens": self.trained_tokens,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("thinker_rng")
        if state:
            torch.set_rng_state(state["torch"])
            if state.get("cuda") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["cuda"])
            random.setstate(state["python"])
            self.trained_tokens = int(state.get("trained_tokens", 0))
