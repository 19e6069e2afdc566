"""objective=grpo on the local backend: the LightningModule whose training step samples, scores and updates
(docs/objectives.md, "Reinforcement learning").

One step: `group_size` completions of each of the step's prompts from the policy itself (thinker.backends.local.
rollout), the rewards' weighted total per completion (thinker.rewards.spec), group-normalised advantages with
the KL penalty to the reference folded in (thinker.rewards.advantages), then the chosen Tinker loss summed over
the sampled tokens (thinker.models.rl_losses: the maths thinker tinker-serve computes too) and one optimizer
step. The optimizer, schedule, checkpoints (trainable tensors, RNG states) and logging are the fine-tuning
module's, so resume restores the optimizer, the sampling RNG and, through the loader, the prompt order.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

from thinker.backends.local.module import FineTuneModule
from thinker.backends.local.rollout import Rollout, completion_logprobs, sample_groups
from thinker.models import rl_losses
from thinker.rewards.advantages import group_advantages, kl_penalised, mean_std
from thinker.rewards.report import table_due
from thinker.rewards.spec import Reward, score


class Reference:
    """The reference policy's log-probabilities: for LoRA / QLoRA the same model with its adapters off (peft's
    disable_adapter), for a full fine-tune a frozen copy of the starting weights (made only when asked for)."""

    def __init__(self, model: Any, needs_copy: bool):
        self.model = model
        self.frozen = None
        if not hasattr(model, "disable_adapter") and needs_copy:
            self.frozen = copy.deepcopy(model).eval().requires_grad_(False)

    @property
    def available(self) -> bool:
        return self.frozen is not None or hasattr(self.model, "disable_adapter")

    @torch.no_grad()
    def logprobs(self, rollout: Rollout) -> torch.Tensor:
        if self.frozen is not None:
            self.frozen.to(rollout.input_ids.device)  # Lightning moves the module's model, not this copy
            return completion_logprobs(self.frozen, rollout)[0]
        with self.model.disable_adapter():
            return completion_logprobs(self.model, rollout)[0]


@dataclass
class StepResult:
    loss: torch.Tensor  # the summed per-token loss, to differentiate
    metrics: dict[str, float]
    table: list[dict[str, Any]] = field(default_factory=list)  # prompt, completion, rewards per completion
    rollout: Rollout | None = None
    token_advantages: torch.Tensor | None = None  # [n, completion], the KL penalty folded in


def grpo_step(model: Any, tokenizer: Any, prompts: list[str], records: list[Any], record_ids: list[int],
              rewards: list[Reward], objective: Any, loss_config: dict[str, float],
              reference: Reference | None) -> StepResult:
    """Sample, score and compute the loss of one GRPO step (no optimizer step: the caller takes it)."""
    group = int(objective.group_size)
    rollout = sample_groups(model, tokenizer, prompts, group, temperature=float(objective.temperature),
                            top_p=float(objective.top_p), max_new_tokens=int(objective.max_new_tokens))
    expanded = [p for p in prompts for _ in range(group)]
    expanded_records = [r for r in records for _ in range(group)]
    expanded_ids = [i for i in record_ids for _ in range(group)]
    totals, per_reward = score(rewards, expanded, rollout.completions, expanded_records, expanded_ids)
    advantages = group_advantages(totals, group, bool(objective.scale_advantages))

    mask = rollout.completion_mask.float()
    token_advantages = torch.tensor(advantages, dtype=torch.float32, device=mask.device).unsqueeze(-1) * mask
    metrics: dict[str, float] = {}
    if reference is not None and reference.available:
        ref = reference.logprobs(rollout)
        _, sampler = rollout.token_lists()
        ref_rows = [ref[row, :len(lps)].tolist() for row, lps in enumerate(sampler)]
        adv_rows = [[advantages[row]] * len(lps) for row, lps in enumerate(sampler)]
        penalised, kl_ref = kl_penalised(adv_rows, sampler, ref_rows, float(objective.kl_coef))
        token_advantages = torch.zeros_like(mask)
        for row, values in enumerate(penalised):
            token_advantages[row, :len(values)] = torch.tensor(values, dtype=torch.float32)
        metrics["kl/policy_ref"] = kl_ref

    logprobs, entropy = completion_logprobs(model, rollout)
    inputs = {"logprobs": rollout.sampler_logprobs, "advantages": token_advantages,
              "sequence_ratio_mask": mask, "sampled": mask}
    per_token = rl_losses.elementwise(str(objective.loss), logprobs, inputs, loss_config) * mask
    loss = per_token.sum()

    tokens = max(float(mask.sum()), 1.0)
    with torch.no_grad():
        gap = (rollout.sampler_logprobs - logprobs.detach()) * mask
        ratio = torch.exp(logprobs.detach() - rollout.sampler_logprobs)
        if "clip_low_threshold" in loss_config:
            outside = (ratio < loss_config["clip_low_threshold"]) | (ratio > loss_config["clip_high_threshold"])
            metrics["clip_fraction"] = float((outside.float() * mask).sum()) / tokens
    reward_mean, reward_std = mean_std(totals)
    metrics.update({
        "reward/mean": reward_mean, "reward/std": reward_std,
        **{f"reward/{name}": mean_std(values)[0] for name, values in per_reward.items()},
        "advantage/std": mean_std(advantages)[1],
        "kl/sample_train": float(gap.sum()) / tokens,  # tinker-cookbook's kl_sample_train_v1: E[log q - log p]
        "kl/sample_train_max": float(gap.abs().max()) if mask.any() else 0.0,
        "entropy": float((entropy * mask).sum()) / tokens,
        "completion/length": float(mask.sum(-1).mean()),
        "train_loss": float(loss.detach()),
        "sampled_tokens": float(mask.sum()),
    })
    table = [{"prompt": p, "completion": c, "reward": t, **{n: v[i] for n, v in per_reward.items()}}
             for i, (p, c, t) in enumerate(zip(expanded, rollout.completions, totals, strict=True))]
    return StepResult(loss, metrics, table, rollout, token_advantages)


class GrpoModule(FineTuneModule):
    """The GRPO step inside the shared Lightning run (thinker.backends.local.lightning_run); each loader item is
    the step's prompt indices (thinker.backends.local.prompts)."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, prompts: list[str], records: list[Any],
                 rewards: list[Reward], objective: Any, optimizer_cfg: Any, total_steps: int,
                 device_type: str = "cpu", log_every_n_steps: int = 1, table_writer: Any = None):
        super().__init__(model, optimizer_cfg, total_steps, device_type, log_every_n_steps)
        self.tokenizer, self.prompts, self.records, self.rewards = tokenizer, prompts, records, rewards
        self.objective = objective
        self.loss_config = rl_losses.check_config(str(objective.loss), dict(objective.get("loss_config") or {}))
        self.reference = Reference(model, needs_copy=float(objective.kl_coef) > 0)
        self.table_writer = table_writer
        self.history: list[dict[str, float]] = []  # every step's metrics (tests, the run's report)

    def training_step(self, batch: list[list[int]], batch_idx: int) -> torch.Tensor:
        """One optimizer step over `trainer.grad_accum` micro-batches of `trainer.batch_size` prompts: each is
        sampled, scored and back-propagated in turn (memory for one), the summed loss is backend=tinker's one
        forward_backward over all of them."""
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        results = []
        for micro in batch:
            result = grpo_step(self.model, self.tokenizer, [self.prompts[i] for i in micro],
                               [self.records[i] for i in micro], list(micro), self.rewards, self.objective,
                               self.loss_config, self.reference)
            self.manual_backward(result.loss)
            result.loss, result.rollout, result.token_advantages = result.loss.detach(), None, None
            results.append(result)
        if self.max_grad_norm > 0:
            self.clip_gradients(optimizer, gradient_clip_val=self.max_grad_norm, gradient_clip_algorithm="norm")
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()

        step = int(self.global_step)
        table = [row for r in results for row in r.table]
        metrics = {**merge_metrics(results, table), "lr": lr}
        self.trained_tokens += int(metrics["sampled_tokens"])
        self.history.append({"step": float(step), **metrics})
        self.train_history.append((step, metrics["train_loss"]))
        self.log("loss", metrics["train_loss"], prog_bar=True, logger=False, on_step=True)  # the progress lines
        self.log("reward", metrics["reward/mean"], prog_bar=True, logger=False, on_step=True)
        if step % self.log_every_n_steps == 0 or step >= self.total_steps:
            self.log_to_tracker(metrics, step)
        if self.table_writer is not None and table_due(step, int(self.objective.table_every)):
            self.table_writer(step, table)
        return torch.tensor(metrics["train_loss"])


TOKEN_MEANS = ("kl/sample_train", "entropy", "clip_fraction", "kl/policy_ref")  # per sampled token


def merge_metrics(results: list[StepResult], table: list[dict[str, Any]]) -> dict[str, float]:
    """One step's metrics from its micro-batches': sums, maxima, means over its sampled tokens or completions
    (the reward's over every completion of the step); one micro-batch gives its own metrics back."""
    if len(results) == 1:
        return dict(results[0].metrics)
    tokens = [r.metrics["sampled_tokens"] for r in results]
    rows = [len(r.table) for r in results]
    merged: dict[str, float] = {"train_loss": sum(r.metrics["train_loss"] for r in results),
                                "sampled_tokens": sum(tokens),
                                "kl/sample_train_max": max(r.metrics["kl/sample_train_max"] for r in results)}
    for key in results[0].metrics:
        if key in merged or key in ("reward/mean", "reward/std"):
            continue
        weights = tokens if key in TOKEN_MEANS else rows
        if key == "advantage/std":  # pooled: every micro-batch's advantages are centred within their groups
            merged[key] = (sum(w * r.metrics[key] ** 2 for w, r in zip(weights, results, strict=True))
                           / max(sum(weights), 1)) ** 0.5
        else:
            merged[key] = sum(w * r.metrics[key] for w, r in zip(weights, results, strict=True)) / max(sum(weights), 1)
    merged["reward/mean"], merged["reward/std"] = mean_std([row["reward"] for row in table])
    return merged
