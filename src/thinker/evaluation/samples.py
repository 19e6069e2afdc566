"""The evaluation set: SciFact claims + corpus -> prompts and gold completions, built as training builds them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from thinker.data.scifact import scifact_examples


@dataclass(frozen=True)
class EvalSample:
    claim_id: int
    prompt: str  # claim_format's prompt; the runner renders it with render_prompt as training does
    gold_completion: str


def load_eval_samples(claims_path: str | Path, corpus_path: str | Path, max_samples: int | None) -> list[EvalSample]:
    """The first `max_samples` claims of the file (all when None), checked like the converter checks them."""
    pairs = scifact_examples(claims_path, corpus_path, stage="eval", limit=max_samples)
    return [EvalSample(claim.record["id"], ex["prompt"], ex["completion"]) for claim, ex in pairs]
