"""Claim-extraction metrics, per sample and over an evaluation set. Same definitions on every backend.

Per sample (gold = the completion built from the SciFact record, predicted = the parsed model output):

- c1 exact match: the predicted `CLAIM[c1]` text equals the gold hypothesis after collapsing whitespace runs
  and stripping the ends (case and punctuation count). A missing c1 line is a miss.
- evidence match: the fraction of gold evidence sentences (gold claims c2, c3, ...) matched by at least one
  predicted evidence claim (any predicted claim other than c1). With no gold evidence it is 1.0 when nothing
  was predicted as evidence and 0.0 otherwise (inventing evidence is the error then). Two matchers:
  `string` (equal after whitespace collapse and case folding) and `semantic` (cosine similarity of
  all-MiniLM-L6-v2 embeddings >= evaluation.embedding.threshold; the string matcher when that model is
  unavailable).
- relation accuracy: the fraction of gold RELATION lines reproduced: a predicted relation with the same verb
  whose source and target are aligned with the gold ones (c1 aligns with c1; an evidence claim aligns with
  a gold evidence claim its text matches under the semantic matcher). No gold relations: 1.0 when none
  were predicted, else 0.0.

Over the set: total (samples), c1_exact_match (count), c1_exact_match_rate (count / total),
evidence_string_match_avg, evidence_semantic_match_avg and relation_accuracy (means of the per-sample
values; 0.0 for an empty set).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from thinker.evaluation.claim_schema import HYPOTHESIS_ID, ClaimSet
from thinker.evaluation.matching import Matcher

METRIC_NAMES = ("total", "c1_exact_match", "c1_exact_match_rate", "evidence_string_match_avg",
                "evidence_semantic_match_avg", "relation_accuracy")


def collapse_whitespace(text: str) -> str:
    return " ".join(text.split())


def c1_exact_match(gold: ClaimSet, predicted: ClaimSet) -> bool:
    gold_c1, predicted_c1 = gold.hypothesis, predicted.hypothesis
    if gold_c1 is None or predicted_c1 is None:
        return False
    return collapse_whitespace(gold_c1.text) == collapse_whitespace(predicted_c1.text)


def evidence_match(gold: ClaimSet, predicted: ClaimSet, matcher: Matcher) -> float:
    gold_texts = [c.text for c in gold.evidence]
    predicted_texts = [c.text for c in predicted.evidence]
    if not gold_texts:
        return 1.0 if not predicted_texts else 0.0
    matches = matcher(gold_texts, predicted_texts)
    return sum(1 for row in matches if any(row)) / len(gold_texts)


def _alignment(gold: ClaimSet, predicted: ClaimSet, matcher: Matcher) -> dict[str, set[str]]:
    """gold claim id -> the predicted claim ids that stand for it."""
    aligned: dict[str, set[str]] = {HYPOTHESIS_ID: {HYPOTHESIS_ID}}
    gold_evidence, predicted_evidence = gold.evidence, predicted.evidence
    if gold_evidence and predicted_evidence:
        matches = matcher([c.text for c in gold_evidence], [c.text for c in predicted_evidence])
        for g, row in zip(gold_evidence, matches, strict=True):
            aligned.setdefault(g.id, set()).update(p.id for p, hit in zip(predicted_evidence, row, strict=True) if hit)
    return aligned


def relation_accuracy(gold: ClaimSet, predicted: ClaimSet, matcher: Matcher) -> float:
    if not gold.relations:
        return 1.0 if not predicted.relations else 0.0
    aligned = _alignment(gold, predicted, matcher)
    predicted_relations = {(r.source, r.verb, r.target) for r in predicted.relations}
    hits = 0
    for r in gold.relations:
        sources, targets = aligned.get(r.source, set()), aligned.get(r.target, set())
        if any((s, r.verb, t) in predicted_relations for s in sources for t in targets):
            hits += 1
    return hits / len(gold.relations)


@dataclass(frozen=True)
class SampleScore:
    c1_exact_match: bool
    evidence_string_match: float
    evidence_semantic_match: float
    relation_accuracy: float


def score_sample(gold: ClaimSet, predicted: ClaimSet, semantic: Matcher, string: Matcher) -> SampleScore:
    return SampleScore(
        c1_exact_match=c1_exact_match(gold, predicted),
        evidence_string_match=evidence_match(gold, predicted, string),
        evidence_semantic_match=evidence_match(gold, predicted, semantic),
        relation_accuracy=relation_accuracy(gold, predicted, semantic),
    )


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def aggregate(scores: list[SampleScore]) -> dict[str, float]:
    """The set-level metrics (METRIC_NAMES), all plain numbers."""
    total = len(scores)
    exact = sum(1 for s in scores if s.c1_exact_match)
    return {
        "total": total,
        "c1_exact_match": exact,
        "c1_exact_match_rate": exact / total if total else 0.0,
        "evidence_string_match_avg": _mean([s.evidence_string_match for s in scores]),
        "evidence_semantic_match_avg": _mean([s.evidence_semantic_match for s in scores]),
        "relation_accuracy": _mean([s.relation_accuracy for s in scores]),
    }


def per_sample(scores: list[SampleScore]) -> dict[str, list]:
    """The per-sample lists, aligned with the evaluated samples: evidence_string_match,
    evidence_semantic_match and relation_match (each sample's relation accuracy)."""
    rows = [asdict(s) for s in scores]
    return {
        "evidence_string_match": [row["evidence_string_match"] for row in rows],
        "evidence_semantic_match": [row["evidence_semantic_match"] for row in rows],
        "relation_match": [row["relation_accuracy"] for row in rows],
    }
