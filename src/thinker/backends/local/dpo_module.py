"""The LightningModule of objective=dpo: preference pairs, the policy against a reference, one optimizer step per
loader item (docs/objectives.md, "Preference tuning").

A micro-batch holds B pairs as 2B padded rows, the chosen completions first and the rejected ones after (TRL's
layout), never packed: a pair's two sequences share a prompt but are scored separately. Each row's log-prob
is the sum over its completion's tokens (the weights thinker.tasks.preference gives them); the losses are
thinker.objectives.dpo_loss's. The reference is the weights the run starts from: for LoRA and QLoRA the same
model with its adapters switched off (peft's `disable_adapter()`: no second copy in memory), for a full
fine-tune a frozen copy made before the first step. SimPO needs none.

Everything else is supervised fine-tuning's (thinker.backends.local.module.FineTuneModule): manual
optimization so that a step of grad_accum micro-batches computes the same gradients as one batch of all its
pairs (each pair's loss over the step's pair count), gradient clipping, the schedule, checkpoints of the
trainable tensors with the RNG states, the logger. Per step the tracker gets TRL's metrics: `loss`,
`rewards/chosen`, `rewards/rejected`, `rewards/margin`, `rewards/accuracy` (and `train_loss`, as every run);
each held-out evaluation `val_loss` (the held-out pairs' mean loss) and `val_rewards/accuracy`, `val_rewards/margin`.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from typing import Any

import torch

from thinker.backends.local.module import FineTuneModule
from thinker.objectives.dpo_loss import NEEDS_REFERENCE, PreferenceLoss, preference_loss, sequence_logps

log = logging.getLogger("thinker")

REWARD_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/margin", "rewards/accuracy")


def completion_tokens(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per row, the number of completion tokens scored (the weighted targets)."""
    return (batch["weights"][:, 1:] > 0).sum(dim=1).to(torch.float32)


class DpoModule(FineTuneModule):
    def __init__(self, model: torch.nn.Module, objective: Any, optimizer_cfg: Any, total_steps: int,
                 device_type: str = "cpu", log_every_n_steps: int = 1, full: bool = False):
        super().__init__(model, optimizer_cfg, total_steps, device_type, log_every_n_steps)
        # dropout off, as TRL's DPOTrainer does by default: the log-ratios would otherwise compare a noisy policy
        # with a noiseless reference (and the first step's loss would not be ln 2)
        for layer in model.modules():
            if isinstance(layer, torch.nn.Dropout):
                layer.p = 0.0
        self.beta, self.loss_name = float(objective.beta), str(objective.loss)
        self.needs_reference = NEEDS_REFERENCE[self.loss_name]
        # a full fine-tune changes every weight: its reference is a frozen copy of the starting ones (LoRA and
        # QLoRA switch their adapters off instead); kept out of the checkpoints and the optimizer
        self.reference = None
        if full and self.needs_reference:
            self.reference = copy.deepcopy(model).eval().requires_grad_(False)
        self.history: list[dict[str, float]] = []
        self._val: dict[str, float] = {}

    # ------------------------------------------------------------ scoring a batch

    def _reference_context(self) -> Any:
        disable = getattr(self.model, "disable_adapter", None)  # a peft model: the base without its adapters
        return disable() if disable is not None else contextlib.nullcontext()

    def reference_logps(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask") if k in batch}
        with torch.no_grad():
            if self.reference is not None:
                logits = self.reference(**inputs, use_cache=False).logits
            else:
                with self._reference_context():
                    logits = self.model(**inputs, use_cache=False).logits
        return sequence_logps(logits, batch["input_ids"], batch["weights"])

    def pair_loss(self, batch: dict[str, torch.Tensor]) -> PreferenceLoss:
        """The loss and rewards of each pair of the batch (chosen rows first, rejected after)."""
        policy = sequence_logps(self(batch), batch["input_ids"], batch["weights"])
        chosen, rejected = policy.chunk(2)
        tokens_chosen, tokens_rejected = completion_tokens(batch).chunk(2)
        ref_chosen = ref_rejected = None
        if self.needs_reference:
            ref_chosen, ref_rejected = self.reference_logps(batch).chunk(2)
        return preference_loss(self.loss_name, self.beta, chosen, rejected, ref_chosen, ref_rejected,
                               tokens_chosen, tokens_rejected)

    @staticmethod
    def _sums(out: PreferenceLoss) -> list[float]:
        return [float(out.losses.detach().sum()), float(out.chosen_rewards.sum()), float(out.rejected_rewards.sum()),
                float(out.margins.sum()), float(out.accuracies.sum()), float(out.losses.numel())]

    # ------------------------------------------------------------ training

    def training_step(self, micro_batches: list[dict[str, torch.Tensor]], batch_idx: int) -> torch.Tensor:
        if self._t0 is None:
            self._t0, self._tokens_at_start = time.perf_counter(), self.trained_tokens
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        (step_pairs,) = self._sum_over_ranks(float(sum(mb["input_ids"].size(0) // 2 for mb in micro_batches)))
        # each pair's loss counts 1 / (the step's pairs); the gradient all-reduce's average is undone by the rank count
        scale = max(step_pairs, 1.0) / self._world_size()
        sums = [0.0] * 6
        tokens = 0
        for i, batch in enumerate(micro_batches):
            with self._no_grad_sync(last=i == len(micro_batches) - 1):
                out = self.pair_loss(batch)
                self.manual_backward(out.losses.sum() / scale)
            sums = [a + b for a, b in zip(sums, self._sums(out), strict=True)]
            tokens += int(completion_tokens(batch).sum().item())
        *totals, tokens_all = self._sum_over_ranks(*sums, float(tokens))
        if self.max_grad_norm > 0:
            self.clip_gradients(optimizer, gradient_clip_val=self.max_grad_norm, gradient_clip_algorithm="norm")
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()

        self.trained_tokens += int(tokens_all)
        step = int(self.global_step)
        loss_sum, chosen, rejected, margin, accuracy, pairs = totals
        pairs = max(pairs, 1.0)
        metrics = {"loss": loss_sum / pairs, "rewards/chosen": chosen / pairs, "rewards/rejected": rejected / pairs,
                   "rewards/margin": margin / pairs, "rewards/accuracy": accuracy / pairs}
        self.history.append({"step": float(step), **metrics})
        self.train_history.append((step, metrics["loss"]))
        self.log("loss", metrics["loss"], prog_bar=True, logger=False, on_step=True)
        self.tokens_per_sec = (self.trained_tokens - self._tokens_at_start) / max(time.perf_counter() - self._t0, 1e-9)
        if step % self.log_every_n_steps == 0 or step >= self.total_steps:
            self.log_to_tracker({**metrics, "train_loss": metrics["loss"], "lr": lr,
                                 "trained_tokens": float(self.trained_tokens), "tokens_per_sec": self.tokens_per_sec},
                                step)
        return torch.tensor(metrics["loss"])

    # ------------------------------------------------------------ held-out evaluation

    def on_validation_epoch_start(self) -> None:
        self._val = {"sums": [0.0] * 6}

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        with torch.no_grad():
            out = self.pair_loss(batch)
        self._val["sums"] = [a + b for a, b in zip(self._val["sums"], self._sums(out), strict=True)]

    def on_validation_epoch_end(self) -> None:
        loss_sum, _chosen, _rejected, margin, accuracy, pairs = self._sum_over_ranks(*self._val["sums"])
        if not pairs:
            return
        step = int(self.global_step)
        val_loss = loss_sum / pairs
        self.log("val_loss", val_loss, prog_bar=True, logger=False, on_epoch=True)
        self.val_history.append((step, val_loss))
        self.log_to_tracker({"val_loss": val_loss, "val_rewards/accuracy": accuracy / pairs,
                             "val_rewards/margin": margin / pairs}, step)
        log.info("step %d/%d: held-out preference loss %.4f, reward accuracy %.3f", step, self.total_steps,
                 val_loss, accuracy / pairs)
