"""The shipped rewards (conf/reward/*.yaml): verifiable checks on a completion's text.

Each reuses the check the rest of thinker already has: GSM8K's final answer is the reasoning task's
`final_answer` (the eval stage's answer accuracy), claim lines are parsed by evaluation.claim_schema.
"""

from __future__ import annotations

import re
from typing import Any

from thinker.evaluation.claim_schema import parse_claims
from thinker.evaluation.matching import normalise
from thinker.tasks.reasoning import final_answer


def reference_completion(record: Any) -> str:
    """The record's reference completion (an Example's `completion`, or a mapping's "completion" / "answer")."""
    if hasattr(record, "completion"):
        return str(record.completion)
    if isinstance(record, dict):
        for key in ("completion", "answer"):
            if key in record:
                return str(record[key])
    raise ValueError(f"the record has no reference completion (a 'completion' or 'answer'): {record!r:.80}")


def gsm8k_answer(prompt: str, completion: str, record: Any) -> float:
    """1.0 when the completion's `#### <number>` equals the reference's (the eval stage's answer_accuracy)."""
    predicted = final_answer(completion)
    return 1.0 if predicted is not None and predicted == final_answer(reference_completion(record)) else 0.0


def claim_format(prompt: str, completion: str, record: Any) -> float:
    """0 without a well-formed `CLAIM[c1]: <text>` line; otherwise the share of the completion's claims whose
    text is found in the source (the prompt: its hypothesis and cited abstracts), so invented claims cost."""
    claims = parse_claims(completion)
    hypothesis = claims.hypothesis
    if hypothesis is None or not hypothesis.text:
        return 0.0
    source = normalise(prompt)
    return sum(1 for c in claims.claims if c.text and normalise(c.text) in source) / len(claims.claims)


class RegexReward:
    """`match_score` when `pattern` is found in the completion (re.search; `full: true` for re.fullmatch),
    else `miss_score`."""

    def __init__(self, pattern: str, full: bool = False, match_score: float = 1.0, miss_score: float = 0.0):
        self.pattern = re.compile(pattern)
        self.full, self.match_score, self.miss_score = full, float(match_score), float(miss_score)

    def __call__(self, prompt: str, completion: str, record: Any) -> float:
        found = self.pattern.fullmatch(completion) if self.full else self.pattern.search(completion)
        return self.match_score if found else self.miss_score


class LengthPenalty:
    """-(characters beyond `free_chars`) / `scale_chars`, at most `max_penalty` below zero: a weight of 0.1
    next to a 0/1 reward prefers the shorter of two right answers."""

    def __init__(self, free_chars: int = 0, scale_chars: int = 1000, max_penalty: float = 1.0):
        if scale_chars <= 0:
            raise ValueError(f"scale_chars must be > 0, not {scale_chars}")
        self.free_chars, self.scale_chars, self.max_penalty = int(free_chars), int(scale_chars), float(max_penalty)

    def __call__(self, prompt: str, completion: str, record: Any) -> float:
        over = max(0, len(completion) - self.free_chars)
        return -min(self.max_penalty, over / self.scale_chars)
