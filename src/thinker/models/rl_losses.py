"""Tinker's policy-gradient losses per token, in plain torch: one definition for every backend.

`thinker tinker-serve` computes its built-in `loss_fn`s with these functions, and a local RL objective can call
the same ones, so a loss means the same numbers everywhere (docs/backends/tinker.md, "Losses"). The names, the
loss inputs and the `loss_fn_config` keys are the tinker SDK's (0.38); the formulas are those of Tinker's loss
docs, except `stable_reinforce`, whose objective Tinker has not published: ours is written out below.

Conventions: the last dimension is the token axis (`[T]` for one datum, `[B, T]` for a padded batch); every
function returns the per-token loss (`elementwise_loss`), and a datum's loss is its sum (`loss:sum`).
`logprobs` are the trained policy's log-probabilities of the target tokens (differentiable);
`sampling_logprobs` the sampler's (q), `advantages` one value per token. Thresholds are ratio bounds
(`clip_low_threshold` 0.8 is 1 - epsilon 0.2) and may be floats or per-token tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

CLIP = (0.8, 1.2)  # PPO's clip_low_threshold / clip_high_threshold in Tinker (epsilon 0.2); cispo and gspo too
DRO_BETA = 0.05  # the beta of Tinker's DRO example (its default is not published)
STABLE_BAND = (0.5, 2.0)  # stable_reinforce trains a token only while p/q stays in this band
STABLE_KL_COEFF = 0.0


class LossConfigError(ValueError):
    """A loss name, loss_fn_config key or value that the loss cannot use (the message says which and why)."""


def _ratio(logprobs: torch.Tensor, sampling_logprobs: torch.Tensor) -> torch.Tensor:
    return torch.exp(logprobs - sampling_logprobs)


def _clip(x: torch.Tensor, low: Any, high: Any) -> torch.Tensor:
    low_t = torch.as_tensor(low, dtype=x.dtype, device=x.device)
    high_t = torch.as_tensor(high, dtype=x.dtype, device=x.device)
    return torch.minimum(torch.maximum(x, low_t), high_t)


def importance_sampling(logprobs: torch.Tensor, sampling_logprobs: torch.Tensor,
                        advantages: torch.Tensor) -> torch.Tensor:
    """-(p/q) A: REINFORCE corrected for sampling from q."""
    return -(_ratio(logprobs, sampling_logprobs) * advantages)


def ppo(logprobs: torch.Tensor, sampling_logprobs: torch.Tensor, advantages: torch.Tensor,
        clip_low: Any = CLIP[0], clip_high: Any = CLIP[1]) -> torch.Tensor:
    """-min(r A, clip(r, low, high) A) with r = p/q, token by token."""
    ratio = _ratio(logprobs, sampling_logprobs)
    return -torch.minimum(ratio * advantages, _clip(ratio, clip_low, clip_high) * advantages)


def cispo(logprobs: torch.Tensor, sampling_logprobs: torch.Tensor, advantages: torch.Tensor,
          clip_low: Any = CLIP[0], clip_high: Any = CLIP[1]) -> torch.Tensor:
    """-sg(clip(r, low, high)) log p A: the clipped ratio weighs the log-probability, and is not differentiated."""
    weight = _clip(_ratio(logprobs, sampling_logprobs), clip_low, clip_high).detach()
    return -(weight * logprobs * advantages)


def dro(logprobs: torch.Tensor, sampling_logprobs: torch.Tensor, advantages: torch.Tensor,
        beta: float = DRO_BETA) -> torch.Tensor:
    """-(log p A - beta/2 (log p - log q)^2): a quadratic penalty keeps p near the sampler.

    The penalty counts on sampled tokens only: a position with neither an advantage nor a sampler log-prob is a
    prompt position in tinker-cookbook's Datum layout (q = 0 there is no sampler's value), and pulling its
    log p towards 0 would train the prompt. backend=local scores the sampled tokens alone, so both agree."""
    sampled = ((advantages != 0) | (sampling_logprobs != 0)).to(logprobs.dtype)
    return -(logprobs * advantages - 0.5 * beta * sampled * (logprobs - sampling_logprobs) ** 2)


def gspo(logprobs: torch.Tensor, sampling_logprobs: torch.Tensor, advantages: torch.Tensor,
         sequence_ratio_mask: torch.Tensor | None = None, clip_low: Any = CLIP[0],
         clip_high: Any = CLIP[1]) -> torch.Tensor:
    """GSPO-token: every token carries the sequence ratio s (the geometric mean of p/q over the masked tokens)
    as its value and its own log-probability's gradient, then PPO's clipped objective.

    Without `sequence_ratio_mask` the ratio is taken over the tokens with a nonzero advantage: the sampled ones
    in tinker-cookbook's data (rl.train sends no mask; its prompt positions have advantage 0 and logprob 0)."""
    mask = (advantages != 0) if sequence_ratio_mask is None else (sequence_ratio_mask != 0)
    mask = mask.to(logprobs.dtype)
    count = mask.sum(-1, keepdim=True).clamp(min=1.0)
    log_ratio = ((logprobs.detach() - sampling_logprobs) * mask).sum(-1, keepdim=True) / count
    ratio = torch.exp(log_ratio + logprobs - logprobs.detach())
    return -torch.minimum(ratio * advantages, _clip(ratio, clip_low, clip_high) * advantages)


def stable_reinforce(logprobs: torch.Tensor, sampling_logprobs: torch.Tensor, advantages: torch.Tensor,
                     sampled: torch.Tensor | None = None, kl_coeff: float = STABLE_KL_COEFF,
                     clip_low: Any = STABLE_BAND[0], clip_high: Any = STABLE_BAND[1]) -> torch.Tensor:
    """Thinker's StableReinforce (Tinker's own objective is unpublished):

        loss_t = -sg(w_t) log p_t A_t + kl_coeff (r_t - 1 - log r_t),  r_t = p_t / q_t,
        w_t = r_t while clip_low <= r_t <= clip_high, else 0,

    on the sampled tokens only (`sampled` marks them; prompt tokens cost nothing). `q` is what the sampler
    recorded for that token. Inside the band the gradient is importance sampling's; a token the trained policy
    has left (or numerics have moved) far from its sampler is dropped rather than weighted without bound, and
    the k3 estimate of KL(q || p) pulls the policy back towards the sampler."""
    log_ratio = logprobs - sampling_logprobs
    ratio = torch.exp(log_ratio)
    low = torch.as_tensor(clip_low, dtype=ratio.dtype, device=ratio.device)
    high = torch.as_tensor(clip_high, dtype=ratio.dtype, device=ratio.device)
    weight = torch.where((ratio >= low) & (ratio <= high), ratio, torch.zeros_like(ratio)).detach()
    loss = -(weight * logprobs * advantages) + kl_coeff * (ratio - 1 - log_ratio)
    if sampled is not None:
        loss = loss * (sampled != 0).to(loss.dtype)
    return loss


# ---------------------------------------------------------------- the table: name -> loss, its inputs, its knobs


@dataclass(frozen=True)
class Loss:
    """A policy-gradient loss as Tinker names it: its function, the loss inputs it reads, its config keys."""

    fn: Callable[..., torch.Tensor]
    config: Mapping[str, float] = field(default_factory=dict)  # loss_fn_config key -> default
    optional_inputs: tuple[str, ...] = ()  # per-token loss_fn_inputs besides logprobs and advantages
    clipped: bool = False  # takes clip_low_threshold / clip_high_threshold (config, or per-token inputs)


_CLIP_CONFIG = {"clip_low_threshold": CLIP[0], "clip_high_threshold": CLIP[1]}
LOSSES: dict[str, Loss] = {
    "importance_sampling": Loss(importance_sampling),
    "ppo": Loss(ppo, _CLIP_CONFIG, ("clip_low_threshold", "clip_high_threshold"), clipped=True),
    "cispo": Loss(cispo, _CLIP_CONFIG, ("clip_low_threshold", "clip_high_threshold"), clipped=True),
    "dro": Loss(dro, {"beta": DRO_BETA}),
    "gspo": Loss(gspo, _CLIP_CONFIG, ("sequence_ratio_mask", "clip_low_threshold", "clip_high_threshold"),
                 clipped=True),
    "stable_reinforce": Loss(stable_reinforce, {"kl_coeff": STABLE_KL_COEFF, "clip_low_threshold": STABLE_BAND[0],
                                                "clip_high_threshold": STABLE_BAND[1]}, clipped=True),
}


def check_config(name: str, config: Mapping[str, Any] | None) -> dict[str, float]:
    """`config` checked against loss `name`, with its defaults filled in; LossConfigError names what is wrong."""
    if name not in LOSSES:
        raise LossConfigError(f"loss {name!r} is not one of {', '.join(LOSSES)}")
    spec = LOSSES[name]
    config = dict(config or {})
    unknown = sorted(set(config) - set(spec.config))
    if unknown:
        accepted = ", ".join(spec.config) or "none"
        raise LossConfigError(f"loss_fn_config key {', '.join(map(repr, unknown))} is not used by {name!r} "
                              f"(its keys: {accepted})")
    values: dict[str, float] = {}
    for key, default in spec.config.items():
        value = config.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise LossConfigError(f"loss_fn_config[{key!r}] must be a number, got {value!r}")
        values[key] = float(value)
    if spec.clipped:
        low, high = values["clip_low_threshold"], values["clip_high_threshold"]
        if not 0 <= low <= 1 <= high:
            raise LossConfigError(f"{name!r} needs 0 <= clip_low_threshold <= 1 <= clip_high_threshold (ratio "
                                  f"bounds around 1, e.g. 0.8 and 1.2), got {low:g} and {high:g}")
    for key in ("beta", "kl_coeff"):
        if key in values and values[key] < 0:
            raise LossConfigError(f"loss_fn_config[{key!r}] must be 0 or more, got {values[key]:g}")
    return values


def elementwise(name: str, logprobs: torch.Tensor, inputs: Mapping[str, torch.Tensor],
                config: Mapping[str, float]) -> torch.Tensor:
    """Loss `name` per token from a datum's tensors (`logprobs` = q, `advantages`, and the loss's optional
    inputs) and its checked config (check_config); per-token clip thresholds win over the config's."""
    spec = LOSSES[name]
    q, advantages = inputs["logprobs"], inputs["advantages"]
    kwargs: dict[str, Any] = {}
    if spec.clipped:
        kwargs["clip_low"] = inputs.get("clip_low_threshold", config["clip_low_threshold"])
        kwargs["clip_high"] = inputs.get("clip_high_threshold", config["clip_high_threshold"])
    if name == "dro":
        kwargs["beta"] = config["beta"]
    elif name == "gspo":
        kwargs["sequence_ratio_mask"] = inputs.get("sequence_ratio_mask")
    elif name == "stable_reinforce":
        kwargs["kl_coeff"] = config["kl_coeff"]
        kwargs["sampled"] = inputs.get("sampled")
    return spec.fn(logprobs, q, advantages, **kwargs)
