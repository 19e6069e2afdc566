"""The preference losses of objective=dpo, in plain torch (docs/objectives.md, "Preference tuning").

Inputs are one value per pair: the summed log-probabilities of the chosen and the rejected completion's
tokens under the policy and under the reference (`sequence_logps` makes them from logits), and for the
length-normalised losses the completions' token counts. The formulas are TRL's (DPOTrainer, 1.16) so a run
here and a TRL run on the same batch give the same loss (tests/test_dpo_loss.py checks it):

    sigmoid  DPO:   -log sigmoid(beta * (chosen log-ratio - rejected log-ratio))
    ipo      IPO:   (chosen / |chosen| - rejected / |rejected| log-ratios - 1 / (2 beta))^2, per-token averages
                    as TRL averages them (the IPO authors' normalised form)
    simpo    SimPO: -log sigmoid(beta * (mean chosen log-prob - mean rejected log-prob) - gamma), no reference;
                    gamma = SIMPO_GAMMA_RATIO * beta (the paper's recommended gamma / beta)

The rewards are TRL's: beta x the log-ratio (SimPO: beta x the mean log-prob), so `rewards/margin` and
`rewards/accuracy` mean what they mean in TRL. When policy and reference agree (the first step of a LoRA
run, whose adapters start at zero) the sigmoid loss is ln 2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812

from thinker.config.enums import DpoLoss

SIMPO_GAMMA_RATIO = 0.5  # SimPO's target margin gamma as a fraction of beta (Meng et al. 2024 recommend 0.5)
NEEDS_REFERENCE = {DpoLoss.sigmoid.value: True, DpoLoss.ipo.value: True, DpoLoss.simpo.value: False}


@dataclass
class PreferenceLoss:
    """Per pair: the loss and the implicit rewards of the chosen and rejected completions (detached)."""

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor

    @property
    def margins(self) -> torch.Tensor:
        return self.chosen_rewards - self.rejected_rewards

    @property
    def accuracies(self) -> torch.Tensor:
        return (self.chosen_rewards > self.rejected_rewards).float()


def sequence_logps(logits: torch.Tensor, input_ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per row, the weighted sum of log p(token t+1 | ..t) over the positions whose *target* token has weight
    (the completion's tokens: `weights` is per input position, as thinker.data.tokenize makes it).
    Computed in float32 whatever the logits' dtype."""
    targets = input_ids[:, 1:]
    target_weights = weights[:, 1:].to(torch.float32)
    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    token_logps = torch.gather(logprobs, 2, targets.unsqueeze(-1)).squeeze(-1)
    return (token_logps * target_weights).sum(dim=1)


def preference_loss(loss: str, beta: float, chosen_logps: torch.Tensor, rejected_logps: torch.Tensor,
                    ref_chosen_logps: torch.Tensor | None = None, ref_rejected_logps: torch.Tensor | None = None,
                    chosen_tokens: torch.Tensor | None = None,
                    rejected_tokens: torch.Tensor | None = None) -> PreferenceLoss:
    """objective.loss `loss` with strength `beta` for a batch of pairs (see the module docstring)."""
    if loss == DpoLoss.simpo:
        chosen_mean = chosen_logps / chosen_tokens.clamp(min=1)
        rejected_mean = rejected_logps / rejected_tokens.clamp(min=1)
        logits = beta * (chosen_mean - rejected_mean) - SIMPO_GAMMA_RATIO * beta
        return PreferenceLoss(-F.logsigmoid(logits), beta * chosen_mean.detach(), beta * rejected_mean.detach())
    chosen_ratio = chosen_logps - ref_chosen_logps
    rejected_ratio = rejected_logps - ref_rejected_logps
    if loss == DpoLoss.sigmoid:
        losses = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio))
    elif loss == DpoLoss.ipo:
        delta = chosen_ratio / chosen_tokens.clamp(min=1) - rejected_ratio / rejected_tokens.clamp(min=1)
        losses = (delta - 1 / (2 * beta)) ** 2
    else:  # the config check refuses any other name (thinker.config.rules.dpo_settings_valid)
        raise ValueError(f"objective.loss={loss} is not one of {', '.join(DpoLoss.values())}")
    return PreferenceLoss(losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach())
