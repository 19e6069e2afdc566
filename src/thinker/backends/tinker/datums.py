"""Training rows -> Tinker Datums, and Tinker's per-token logprobs -> the losses backend=local reports.

A row holds input_ids, labels (-100 where no loss is taken) and the token loss weights. Position t of a
Datum's model_input predicts target_tokens[t] = input_ids[t + 1] with weight weights[t + 1] (0 where the
label is ignored) — exactly the local loss's shift. Tinker's cross_entropy sums weight * -logprob, so the
weights of one optimizer step are divided by the step's total weight: the gradient is then the local
backend's token-normalised step gradient, whatever the batch size or grad_accum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from thinker.data.packing import Row
from thinker.data.tokenize import IGNORE_INDEX


@dataclass(frozen=True)
class Targets:
    """What one row contributes to a step: its target tokens, their loss weights and which are trained."""

    inputs: list[int]
    targets: list[int]
    weights: list[float]
    mask: list[bool]

    @classmethod
    def of(cls, row: Row) -> Targets:
        mask = [label != IGNORE_INDEX for label in row.labels[1:]]
        weights = [w if m else 0.0 for w, m in zip(row.weights[1:], mask, strict=True)]
        return cls(list(row.input_ids[:-1]), list(row.input_ids[1:]), weights, mask)


def step_targets(rows: Sequence[Row]) -> list[Targets]:
    return [Targets.of(row) for row in rows if len(row) > 1]


def to_datums(targets: Sequence[Targets], normalise: bool) -> list[Any]:
    """Datums for cross_entropy; `normalise` divides the weights by the step's total (training)."""
    from tinker import types

    total = sum(sum(t.weights) for t in targets) if normalise else 1.0
    scale = 1.0 / max(total, 1e-8)
    return [
        types.Datum(
            model_input=types.ModelInput.from_ints(t.inputs),
            loss_fn_inputs={
                "target_tokens": types.TensorData(data=t.targets, dtype="int64", shape=[len(t.targets)]),
                "weights": types.TensorData(data=[w * scale for w in t.weights], dtype="float32",
                                            shape=[len(t.weights)]),
            },
        )
        for t in targets
    ]


@dataclass
class LossSums:
    """Running sums over trained target tokens: plain cross-entropy and the weighted loss (docs/decisions/0011-same-training-on-every-backend.md)."""

    loss: float = 0.0
    weighted: float = 0.0
    weight: float = 0.0
    tokens: int = 0

    def add(self, targets: Sequence[Targets], logprobs: Sequence[Sequence[float]]) -> None:
        for t, lp in zip(targets, logprobs, strict=True):
            for m, w, p in zip(t.mask, t.weights, lp, strict=True):
                if m:
                    self.loss -= p
                    self.weighted -= w * p
                    self.weight += w
                    self.tokens += 1

    @property
    def mean(self) -> float:
        return self.loss / max(self.tokens, 1)

    @property
    def weighted_mean(self) -> float:
        return self.weighted / max(self.weight, 1e-8)


def output_logprobs(output: Any) -> list[list[float]]:
    """The per-datum target logprobs of a ForwardBackwardOutput."""
    return [list(o["logprobs"].tolist()) for o in output.loss_fn_outputs]
