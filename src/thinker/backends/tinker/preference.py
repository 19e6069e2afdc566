"""objective=dpo on backend=tinker: preference tuning through the Tinker SDK (docs/objectives.md, "Preference
tuning"), beside the supervised loop it extends (thinker.backends.tinker.loop: checkpoints, resume, faults,
in-flight steps and the tracker are the same).

- data: backend=local's pairs (thinker.backends.local.dpo.preference_data: the same split, tokens and pairs
  left out), in the same seeded order, `trainer.batch_size` pairs a micro-batch, `trainer.grad_accum` of them a
  step; each pair is two Datums, prompt + chosen and prompt + rejected, whose weights mark the completion;
- reference: the weights the run starts from, which for a Tinker LoRA client is its base model (the adapter
  starts at zero). Its log-probs come from a SamplingClient of the base (`compute_logprobs`), once per sequence
  (cached: they never change), so resume=true uses the same reference as the first attempt;
- loss: `forward_backward_custom` (the SDK's: a forward for the policy's log-probs, the loss and its gradient
  here, then a backward of cross_entropy weighted by -dLoss/dlogprob), with thinker.objectives.dpo_loss, the
  functions backend=local uses, over all the step's pairs at once: each pair's loss counts 1 / (the step's
  pairs), as backend=local's grad_accum does;
- metrics per step, as TRL names them: `loss`, `rewards/chosen`, `rewards/rejected`, `rewards/margin`,
  `rewards/accuracy` (and `train_loss`); each checkpoint logs the held-out pairs' `val_loss`,
  `val_rewards/accuracy` and `val_rewards/margin`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from thinker.backends import TrainingReport
from thinker.backends.tinker.datums import Targets, output_logprobs, to_datums
from thinker.backends.tinker.loop import Submitted, TinkerTrainer

log = logging.getLogger("thinker")

REWARDS = ("rewards/chosen", "rewards/rejected", "rewards/margin", "rewards/accuracy")


@dataclass(frozen=True)
class PairTargets:
    """One pair's two sequences (prompt + chosen, prompt + rejected) as Tinker targets."""

    chosen: Targets
    rejected: Targets

    @classmethod
    def of(cls, pair: tuple[Any, Any]) -> PairTargets:
        return cls(Targets.of(pair[0]), Targets.of(pair[1]))


def sequence_logp(logprobs: Any, targets: Targets) -> Any:
    """The completion's summed log-prob: the per-target log-probs weighted by the completion's weights."""
    import torch

    return (logprobs.float() * torch.tensor(targets.weights, dtype=torch.float32)).sum()


def completion_tokens(targets: Targets) -> float:
    return float(sum(1 for w in targets.weights if w > 0))


class PairScorer:
    """Reference log-probs of sequences from a SamplingClient (the base model), each sequence asked once."""

    def __init__(self, sampler: Any, watch: Any):
        self.sampler, self.watch = sampler, watch
        self.cache: dict[tuple[int, ...], float] = {}

    def logps(self, targets: list[Targets]) -> list[float]:
        from tinker import types

        keys = [(*t.inputs, t.targets[-1]) for t in targets]
        missing = {k: t for k, t in zip(keys, targets, strict=True) if k not in self.cache}
        futures = {k: self.sampler.compute_logprobs(types.ModelInput.from_ints(list(k))) for k in missing}
        for key, future in futures.items():
            per_token = self.watch.result(future)[1:]  # the first token has no log-prob
            self.cache[key] = float(sum(w * (lp or 0.0) for w, lp in zip(missing[key].weights, per_token,
                                                                         strict=True)))
        return [self.cache[k] for k in keys]


def pair_metrics(out: Any) -> dict[str, float]:
    """The step's mean loss and TRL's reward metrics from a PreferenceLoss."""
    return {"loss": float(out.losses.detach().mean()), "rewards/chosen": float(out.chosen_rewards.mean()),
            "rewards/rejected": float(out.rejected_rewards.mean()), "rewards/margin": float(out.margins.mean()),
            "rewards/accuracy": float(out.accuracies.mean())}


class TinkerDpoTrainer(TinkerTrainer):
    unit = "pairs"

    def __init__(self, cfg: DictConfig, *args: Any, **kwargs: Any):
        super().__init__(cfg, *args, **kwargs)
        from thinker.objectives.dpo_loss import NEEDS_REFERENCE

        self.beta, self.loss_name = float(cfg.objective.beta), str(cfg.objective.loss)
        self.needs_reference = NEEDS_REFERENCE[self.loss_name]
        self.reference: PairScorer | None = None
        self.last: dict[str, float] = {}

    # ------------------------------------------------------------ data and reference

    def prepare_data(self, tokenizer: Any) -> tuple[list[Any], dict[str, float]]:
        from thinker.backends.local.dpo import preference_data

        train, val, read = preference_data(self.cfg, self.run_dir, tokenizer)
        self.val_pairs = [PairTargets.of(p) for p in val]
        if self.needs_reference:
            sampler = self.watch.result(self.service.create_sampling_client(base_model=self.base))
            self.reference = PairScorer(sampler, self.watch)
        tokens = sum(completion_tokens(t) for pair in train for t in map(Targets.of, pair))
        return train, {"train_examples": float(read), "train_tokens": tokens}

    def loss_inputs(self, pairs: list[PairTargets]) -> tuple[list[Targets], list[float] | None]:
        """The step's Datum targets (chosen sequences first, then rejected: TRL's layout) and their reference
        log-probs (None for a reference-free loss)."""
        targets = [p.chosen for p in pairs] + [p.rejected for p in pairs]
        return targets, self.reference.logps(targets) if self.reference is not None else None

    def loss_of(self, targets: list[Targets], policy: list[Any], reference: list[float] | None) -> Any:
        """thinker.objectives.dpo_loss's loss of the pairs (per pair; policy log-probs keep their graph)."""
        import torch

        from thinker.objectives.dpo_loss import preference_loss

        half = len(targets) // 2
        logps = torch.stack([sequence_logp(lp, t) for lp, t in zip(policy, targets, strict=True)])
        tokens = torch.tensor([completion_tokens(t) for t in targets])
        ref = torch.tensor(reference, dtype=torch.float32) if reference is not None else None
        return preference_loss(self.loss_name, self.beta, logps[:half], logps[half:],
                               ref[:half] if ref is not None else None, ref[half:] if ref is not None else None,
                               tokens[:half], tokens[half:])

    # ------------------------------------------------------------ steps

    def submit(self, index: int) -> Submitted:
        epoch, item = divmod(index, self.steps_per_epoch)
        pairs = [PairTargets.of(pair) for micro in self.loader.rows_of(item, epoch) for pair in micro]
        targets, reference = self.loss_inputs(pairs)

        def dpo_loss(_data: list[Any], logprobs: list[Any]) -> tuple[Any, dict[str, float]]:
            out = self.loss_of(targets, logprobs, reference)
            return out.losses.mean(), pair_metrics(out)

        lr, adam = self.adam_params(index)
        fb = self.client.forward_backward_custom(to_datums(targets, normalise=False), dpo_loss)
        return Submitted(index, targets, lr, fb, self.client.optim_step(adam))

    def adam_params(self, index: int) -> tuple[float, Any]:
        from tinker import types

        from thinker.backends.schedules import scheduled_multiplier

        opt = self.cfg.optimizer
        lr = float(opt.lr) * scheduled_multiplier(index, self.steps, opt.scheduler)
        return lr, types.AdamParams(learning_rate=lr, beta1=float(opt.betas[0]), beta2=float(opt.betas[1]),
                                    eps=float(opt.eps), weight_decay=float(opt.weight_decay),
                                    grad_clip_norm=float(opt.max_grad_norm))

    def finish(self, job: Submitted) -> None:
        output = self.watch.result(job.forward_backward)
        self.watch.result(job.optim)
        metrics = {k: float(output.metrics[k]) for k in ("loss", *REWARDS)}
        p = self.progress
        tokens = int(sum(completion_tokens(t) for t in job.targets))
        p.step, p.trained_tokens, p.train_loss = job.index + 1, p.trained_tokens + tokens, metrics["loss"]
        p.tokens_per_sec = (p.trained_tokens - self.clock[1]) / max(time.perf_counter() - self.clock[0], 1e-9)
        self.last = metrics
        p.held_back.append((p.step, {**metrics, "train_loss": metrics["loss"], "lr": job.lr,
                                     "trained_tokens": float(p.trained_tokens), "tokens_per_sec": p.tokens_per_sec}))

    # ------------------------------------------------------------ held-out pairs

    def held_out_metrics(self) -> dict[str, float]:
        if not self.val_pairs:
            return {}
        batch = int(self.cfg.trainer.batch_size)
        chunks = [self.val_pairs[i:i + batch] for i in range(0, len(self.val_pairs), batch)]
        inputs = [self.loss_inputs(chunk) for chunk in chunks]
        futures = [self.client.forward(to_datums(targets, normalise=False), "cross_entropy")
                   for targets, _ in inputs]
        sums = {"val_loss": 0.0, "val_rewards/accuracy": 0.0, "val_rewards/margin": 0.0}
        for (targets, reference), future in zip(inputs, futures, strict=True):
            import torch

            policy = [torch.tensor(lp) for lp in output_logprobs(self.watch.result(future))]
            out = self.loss_of(targets, policy, reference)
            sums["val_loss"] += float(out.losses.sum())
            sums["val_rewards/accuracy"] += float(out.accuracies.sum())
            sums["val_rewards/margin"] += float(out.margins.sum())
        return {k: v / len(self.val_pairs) for k, v in sums.items()}

    def report(self, sampler_path: str, seconds: float, steps_run: int) -> TrainingReport:
        report = super().report(sampler_path, seconds, steps_run)
        report.metrics.update({f"train_{k.replace('/', '_')}": v for k, v in self.last.items() if k in REWARDS})
        report.extra["objective"] = "dpo"
        return report
