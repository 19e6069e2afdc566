"""Run an evaluation: render prompts, call any generate function, parse, score, write predictions.

`generate(prompts) -> completions` is the only thing a backend provides (the local Hugging Face model, a
Tinker sampler, a provider API), so every backend is scored by exactly the same code.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thinker.data.tokenize import render_prompt
from thinker.evaluation.claim_schema import parse_claims
from thinker.evaluation.matching import STRING, NamedMatcher
from thinker.evaluation.metrics import aggregate, per_sample, score_sample
from thinker.evaluation.samples import EvalSample
from thinker.tracking.atomic import atomic_write

Generate = Callable[[list[str]], list[str]]


@dataclass
class EvalResult:
    metrics: dict[str, float]  # METRIC_NAMES: plain numbers for the run record and MLflow
    per_sample: dict[str, list] = field(default_factory=dict)  # e.g. evidence_semantic_match per sample
    semantic_matcher: str = "string"
    predictions_path: Path | None = None
    rows: list[dict[str, Any]] = field(default_factory=list, repr=False)


def evaluate(samples: list[EvalSample], generate: Generate, *, semantic: NamedMatcher = STRING,
             output_path: str | Path | None = None, batch_size: int = 8) -> EvalResult:
    """Score `generate` on `samples`; write one JSON line per sample to `output_path` (atomically) if given."""
    prompts = [render_prompt(s.prompt) for s in samples]  # the exact text training put before a completion
    completions: list[str] = []
    for start in range(0, len(prompts), max(1, batch_size)):
        batch = prompts[start : start + batch_size]
        out = list(generate(batch))
        if len(out) != len(batch):
            raise ValueError(f"generate returned {len(out)} completions for {len(batch)} prompts")
        completions.extend(out)

    scores, rows = [], []
    for sample, prompt, completion in zip(samples, prompts, completions, strict=True):
        gold, predicted = parse_claims(sample.gold_completion), parse_claims(completion)
        score = score_sample(gold, predicted, semantic.match, STRING.match)
        scores.append(score)
        rows.append({"claim_id": sample.claim_id, "prompt": prompt, "completion": completion,
                     "claims": predicted.to_dict(), "gold_completion": sample.gold_completion,
                     "scores": {**score.__dict__}})
    result = EvalResult(aggregate(scores), per_sample(scores), semantic.name, rows=rows)
    if output_path is not None:
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        result.predictions_path = atomic_write(output_path, lambda fh: fh.write(text.encode("utf-8")))
    return result
