"""objective=grpo on backend=tinker: reinforcement learning through the Tinker SDK (docs/objectives.md,
"Reinforcement learning"), beside the supervised loop it extends (thinker.backends.tinker.loop: checkpoints,
resume, faults, in-flight submission and the tracker are the same).

Each step, as tinker-cookbook's synchronous RL loop does: a sampling client of the current weights
(`save_weights_and_get_sampling_client`, which the service orders after the previous step's optim_step),
`objective.group_size` samples of each of the step's prompts with their log-probabilities (seeded per step and
prompt, so a resumed run samples what the first attempt would have), the rewards and group-normalised
advantages of thinker.rewards (the KL penalty to the base, scored by a sampling client of the base, folded in),
one Datum per completion, `forward_backward` with `objective.loss` and `optim_step`. The maths of the loss is the
service's; thinker tinker-serve computes it with thinker.models.rl_losses, as backend=local does.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from thinker.backends.tinker.datums import output_logprobs
from thinker.backends.tinker.loop import Submitted, TinkerTrainer
from thinker.rewards.advantages import group_advantages, kl_penalised, mean_std

log = logging.getLogger("thinker")


@dataclass
class GrpoSubmitted(Submitted):
    metrics: dict[str, float] = field(default_factory=dict)
    sampled: list[list[float]] = field(default_factory=list)  # each completion's sampler log-probs
    prompt_lengths: list[int] = field(default_factory=list)


def completion_datum(prompt: list[int], tokens: list[int], sampler_logprobs: list[float],
                     advantages: list[float], loss: str) -> Any:
    """One sampled completion as a Datum for a policy-gradient loss: the model reads prompt + completion[:-1] and
    is scored on completion tokens; prompt positions carry advantage 0 (and, for gspo, are outside the mask)."""
    from tinker import types

    n = len(prompt) - 1
    inputs: dict[str, Any] = {
        "target_tokens": [*prompt[1:], *tokens],
        "logprobs": [0.0] * n + list(sampler_logprobs),
        "advantages": [0.0] * n + list(advantages),
    }
    if loss == "gspo":
        inputs["sequence_ratio_mask"] = [0.0] * n + [1.0] * len(tokens)
    return types.Datum(model_input=types.ModelInput.from_ints([*prompt, *tokens[:-1]]),
                       loss_fn_inputs={k: types.TensorData(data=v, dtype="int64" if k == "target_tokens" else
                                                            "float32", shape=[len(v)]) for k, v in inputs.items()})


class TinkerGrpoTrainer(TinkerTrainer):
    unit = "prompts"

    def prepare_data(self, tokenizer: Any) -> tuple[list[Any], dict[str, float]]:
        """The training split's prompts as token ids; the loader orders their indices."""
        from thinker.rewards.prompts import training_prompts
        from thinker.rewards.spec import build_rewards, reward_specs

        self.rewards = build_rewards(reward_specs(self.cfg.objective.rewards))
        self.prompts, self.records = training_prompts(self.cfg, self.run_dir, tokenizer)
        self.prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in self.prompts]
        self.val_targets = []  # no held-out loss: the eval stage scores the task's metrics
        self.base_sampler: Any = None
        return list(range(len(self.prompts))), {"train_prompts": float(len(self.prompts))}

    def held_out_metrics(self) -> dict[str, float]:
        return {}

    def _reference(self) -> Any:
        if self.base_sampler is None:
            self.base_sampler = self.watch.result(self.service.create_sampling_client(base_model=self.base))
        return self.base_sampler

    def submit(self, index: int) -> Submitted:
        """The step's grad_accum x batch_size prompts in one forward_backward (backend=local accumulates the
        same summed loss over its micro-batches)."""
        from tinker import types

        from thinker.backends.schedules import scheduled_multiplier
        from thinker.rewards.spec import score

        cfg, objective = self.cfg, self.cfg.objective
        group = int(objective.group_size)
        epoch, item = divmod(index, self.steps_per_epoch)
        chosen = [i for micro in self.loader.rows_of(item, epoch) for i in micro if isinstance(i, int)]
        sampler = self.watch.result(self.client.save_weights_and_get_sampling_client(name=f"grpo{index:06d}"))
        params = [types.SamplingParams(max_tokens=int(objective.max_new_tokens), temperature=float(objective.temperature),
                                       top_p=float(objective.top_p), seed=sample_seed(int(cfg.seed), index, i))
                  for i in chosen]
        futures = [sampler.sample(prompt=types.ModelInput.from_ints(self.prompt_ids[i]), num_samples=group,
                                  sampling_params=p) for i, p in zip(chosen, params, strict=True)]
        tokens, sampled, prompts, records, ids = [], [], [], [], []
        for i, future in zip(chosen, futures, strict=True):
            for seq in self.watch.result(future).sequences:
                tokens.append(list(seq.tokens))
                sampled.append([float(x) for x in seq.logprobs])
                prompts.append(self.prompts[i])
                records.append(self.records[i])
                ids.append(i)
        completions = [self.tokenizer.decode(t, skip_special_tokens=True) for t in tokens]
        totals, per_reward = score(self.rewards, prompts, completions, records, ids)
        advantages = group_advantages(totals, group, bool(objective.scale_advantages))
        token_advantages = [[a] * len(t) for a, t in zip(advantages, tokens, strict=True)]
        prompt_ids = [self.prompt_ids[i] for i in ids]
        # the reference is the base (a fresh LoRA adapter is zero): its log-probs of each sampled completion
        reference = self._reference()
        ref_futures = [reference.compute_logprobs(types.ModelInput.from_ints([*p, *t]))
                       for p, t in zip(prompt_ids, tokens, strict=True)]
        ref = [[float(x) for x in self.watch.result(f)[len(p):]] for f, p in zip(ref_futures, prompt_ids, strict=True)]
        token_advantages, kl_ref = kl_penalised(token_advantages, sampled, ref, float(objective.kl_coef))
        loss = str(objective.loss)
        datums = [completion_datum(p, t, s, a, loss)
                  for p, t, s, a in zip(prompt_ids, tokens, sampled, token_advantages, strict=True)]
        opt = cfg.optimizer
        lr = float(opt.lr) * scheduled_multiplier(index, self.steps, opt.scheduler)
        adam = types.AdamParams(learning_rate=lr, beta1=float(opt.betas[0]), beta2=float(opt.betas[1]),
                                eps=float(opt.eps), weight_decay=float(opt.weight_decay),
                                grad_clip_norm=float(opt.max_grad_norm))
        loss_config = dict(objective.get("loss_config") or {}) or None
        fb = self.client.forward_backward(datums, loss, loss_config)
        reward_mean, reward_std = mean_std(totals)
        metrics = {"reward/mean": reward_mean, "reward/std": reward_std,
                   **{f"reward/{name}": mean_std(v)[0] for name, v in per_reward.items()},
                   "advantage/std": mean_std(advantages)[1], "kl/policy_ref": kl_ref,
                   "completion/length": sum(len(t) for t in tokens) / max(1, len(tokens))}
        self.write_table(index + 1, [{"prompt": p, "completion": c, "reward": t,
                                      **{n: v[k] for n, v in per_reward.items()}}
                                     for k, (p, c, t) in enumerate(zip(prompts, completions, totals, strict=True))])
        return GrpoSubmitted(index, [], lr, fb, self.client.optim_step(adam), metrics, sampled,
                             [len(p) for p in prompt_ids])

    def write_table(self, step: int, rows: list[dict[str, Any]]) -> None:
        from thinker.rewards.report import table_due, write_table

        if table_due(step, int(self.cfg.objective.table_every)):
            write_table(self.run_dir, self.tracker, step, rows)

    def finish(self, job: Submitted) -> None:
        import time

        assert isinstance(job, GrpoSubmitted)
        output = self.watch.result(job.forward_backward)
        self.watch.result(job.optim)
        loss_sum = float(output.metrics.get("loss:sum", 0.0))
        gaps, outside, count, neg_logp = 0.0, 0, 0, 0.0
        low, high = clip_bounds(self.cfg.objective)
        for trained_all, q, n in zip(output_logprobs(output), job.sampled, job.prompt_lengths, strict=True):
            trained = list(trained_all)[n - 1:]
            for qt, pt in zip(q, trained, strict=True):
                gaps += qt - pt
                neg_logp -= qt
                ratio = math.exp(pt - qt)
                outside += int(low is not None and (ratio < low or ratio > high))
                count += 1
        p = self.progress
        p.step, p.trained_tokens, p.train_loss = job.index + 1, p.trained_tokens + count, loss_sum
        p.tokens_per_sec = (p.trained_tokens - self.clock[1]) / max(time.perf_counter() - self.clock[0], 1e-9)
        metrics = {**job.metrics, "train_loss": loss_sum, "lr": job.lr, "sampled_tokens": float(count),
                   "kl/sample_train": gaps / max(count, 1),
                   # Tinker returns no logits: the entropy is estimated by the sampled tokens' -log q
                   "entropy": neg_logp / max(count, 1), "trained_tokens": float(p.trained_tokens),
                   "tokens_per_sec": p.tokens_per_sec}
        if low is not None:
            metrics["clip_fraction"] = outside / max(count, 1)
        self.history.append({"step": float(p.step), **metrics})
        p.held_back.append((p.step, metrics))

    def report(self, sampler_path: str, seconds: float, steps_run: int) -> Any:
        from thinker.rewards.report import reward_window

        report = super().report(sampler_path, seconds, steps_run)
        report.metrics.update(reward_window(self.history))
        report.extra["grpo_history"] = self.history
        return report

    @property
    def history(self) -> list[dict[str, float]]:
        if not hasattr(self, "_history"):
            self._history: list[dict[str, float]] = []
        return self._history


def sample_seed(seed: int, step: int, prompt: int) -> int:
    """The sampling seed of one prompt's group at one step: the same on a resumed run."""
    return (seed * 1_000_003 + step * 10_007 + prompt) % (2**31)


def clip_bounds(objective: Any) -> tuple[float | None, float | None]:
    """The ratio bounds clip_fraction counts against: the loss's clip thresholds (None for an unclipped loss)."""
    from thinker.models import rl_losses

    config = rl_losses.check_config(str(objective.loss), dict(objective.get("loss_config") or {}))
    return config.get("clip_low_threshold"), config.get("clip_high_threshold")
