"""Held-out preference pairs scored by log-probabilities (docs/objectives.md, "Preference tuning").

A backend's log-prob scorer (thinker.backends.Backend.logprob_scorer) gives, for each tokenized sequence
(prompt + one completion, a thinker.data.tokenize.TokenizedExample), the sum of log p(token | before it) over
its weighted tokens: the completion's. Per held-out pair, from the chosen and rejected completions' sums and
token counts:

    pref_accuracy  the share of pairs whose chosen completion has the higher mean log-prob per token
    pref_margin    the mean of (mean log-prob per token of chosen - of rejected), in nats per token

Both need no reference model, so the base weights (before) and the trained ones (after) are scored alike, on
every backend that has a scorer. Per token, because summed log-probs mostly rank completions by length (a
rejected completion that drops the evidence lines is far shorter than the chosen one): the normalisation is
SimPO's and TRL's IPO's. With both scored, the trained weights' DPO implicit rewards against the base
(TRL's eval rewards, summed log-probs) are reported too:

    pref_reward_accuracy  the share of pairs with (after - before) log-prob of chosen > of rejected
    pref_reward_margin    beta x the mean of that difference (objective.beta; 1 when the run has none)

torch is imported when a scorer is built, never at module import.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PREFERENCE_METRICS = ("pref_accuracy", "pref_margin")
LogprobScorer = Callable[[list[Any]], list[float]]


@dataclass(frozen=True)
class PairScores:
    """Summed completion log-probs and completion token counts of each pair's two sequences."""

    chosen: list[float]
    rejected: list[float]
    chosen_tokens: list[int]
    rejected_tokens: list[int]


def scored_tokens(sequence: Any) -> int:
    """The completion tokens a scorer sums over: the weighted targets (the first token is never one)."""
    return sum(1 for w in sequence.weights[1:] if w > 0)


def score_pairs(scorer: LogprobScorer, pairs: Sequence[tuple[Any, Any]]) -> PairScores:
    """Every pair's sequences scored in one call (chosen, rejected, chosen, ...)."""
    sums = scorer([seq for pair in pairs for seq in pair])
    return PairScores(sums[0::2], sums[1::2], [scored_tokens(c) for c, _ in pairs],
                      [scored_tokens(r) for _, r in pairs])


def preference_metrics(scores: PairScores) -> dict[str, float]:
    """pref_accuracy, pref_margin (per-token mean log-probs) and the number of pairs."""
    margins = [c / max(nc, 1) - r / max(nr, 1) for c, r, nc, nr in
               zip(scores.chosen, scores.rejected, scores.chosen_tokens, scores.rejected_tokens, strict=True)]
    if not margins:
        return {}
    return {"pref_accuracy": sum(1 for m in margins if m > 0) / len(margins),
            "pref_margin": sum(margins) / len(margins), "pref_pairs": float(len(margins))}


def reward_metrics(after: PairScores, before: PairScores, beta: float = 1.0) -> dict[str, float]:
    """The trained weights' DPO implicit rewards against the base: accuracy and beta-scaled margin."""
    deltas = [(ca - cb) - (ra - rb) for ca, cb, ra, rb in
              zip(after.chosen, before.chosen, after.rejected, before.rejected, strict=True)]
    if not deltas:
        return {}
    return {"pref_reward_accuracy": sum(1 for d in deltas if d > 0) / len(deltas),
            "pref_reward_margin": beta * sum(deltas) / len(deltas)}


def model_logprob_scorer(model: Any, pad_id: int, device: Any, batch_size: int = 8) -> LogprobScorer:
    """Summed completion log-probs from a causal LM in memory, `batch_size` sequences a forward pass."""
    import torch

    from thinker.data.packing import collate, single_rows
    from thinker.objectives.dpo_loss import sequence_logps

    def score(sequences: list[Any]) -> list[float]:
        out: list[float] = []
        for start in range(0, len(sequences), batch_size):
            batch = collate(single_rows(sequences[start:start + batch_size]), pad_id, packed=False)
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.inference_mode():
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                               use_cache=False).logits
            out.extend(float(v) for v in sequence_logps(logits, batch["input_ids"], batch["weights"]).cpu())
        return out

    return score


def local_logprob_scorer(weights_dir: str | Path, device: str = "cpu", batch_size: int = 8) -> LogprobScorer:
    """The scorer of a local weights folder (an adapter on its base, or a full model), loaded once."""
    from thinker.evaluation.generate import load_model

    model, tokenizer = load_model(Path(weights_dir), device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return model_logprob_scorer(model, pad, device, batch_size)
