"""The claim-extraction text format, and the shipped sample data built with it."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from thinker.data.claim_format import (
    C1_LINE_PREFIX,
    CLAIM_PREFIX,
    HYPOTHESIS_PREFIX,
    RELATION_PREFIX,
    build_completion,
    build_prompt,
    example_from_scifact,
)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
GENERATOR = ROOT / "scripts" / "make_sample_data.py"
GENERATED = ["corpus.jsonl", "claims_train.jsonl", "claims_dev.jsonl", "claims.jsonl", "dev.jsonl"]

CORPUS = {
    11: {"doc_id": 11, "title": "Drug A and glucose",
         "abstract": ["Background one.", "Drug A lowered glucose.", "Drug A lowered insulin too."]},
    22: {"doc_id": 22, "title": "Drug A revisited", "abstract": ["Methods two.", "Drug A did nothing."]},
    33: {"doc_id": 33, "title": "Unrelated", "abstract": ["Only filler here."]},
}
CLAIM = {
    "id": 7,
    "claim": "Drug A lowers glucose.",
    # Dict order (22 before 11) and sentence order ([2, 1]) both differ from the completion order on purpose.
    "evidence": {"22": [{"sentences": [1], "label": "CONTRADICT"}],
                 "11": [{"sentences": [2, 1], "label": "SUPPORT"}]},
    "cited_doc_ids": [11, 33, 22],
}

EXPECTED_PROMPT = """\
Extract the claims from the hypothesis and the cited abstracts.

Hypothesis: Drug A lowers glucose.

Document 11: Drug A and glucose
Background one. Drug A lowered glucose. Drug A lowered insulin too.

Document 33: Unrelated
Only filler here.

Document 22: Drug A revisited
Methods two. Drug A did nothing."""

EXPECTED_COMPLETION = """\
CLAIM[c1]: Drug A lowers glucose.
CLAIM[c2] (Document 11): Drug A lowered glucose.
CLAIM[c3] (Document 11): Drug A lowered insulin too.
CLAIM[c4] (Document 22): Drug A did nothing.
RELATION: c2 supports c1
RELATION: c3 supports c1
RELATION: c4 refutes c1"""


def test_example_text_is_exact():
    example = example_from_scifact(CLAIM, CORPUS)
    assert example["prompt"] == EXPECTED_PROMPT
    assert example["completion"] == EXPECTED_COMPLETION
    assert example["metadata"] == {"claim_id": 7, "doc_ids": [11, 33, 22],
                                   "labels": ["SUPPORT", "SUPPORT", "CONTRADICT"]}


def test_evidence_follows_cited_order_then_sets_then_sentences():
    evidence = {"11": [{"sentences": [2], "label": "SUPPORT"}, {"sentences": [0, 1], "label": "SUPPORT"}],
                "22": [{"sentences": [1], "label": "CONTRADICT"}]}
    claim = dict(CLAIM, cited_doc_ids=[22, 11], evidence=evidence)
    lines = example_from_scifact(claim, CORPUS)["completion"].splitlines()
    assert lines[1:5] == [
        "CLAIM[c2] (Document 22): Drug A did nothing.",
        "CLAIM[c3] (Document 11): Drug A lowered insulin too.",  # the first evidence set comes first
        "CLAIM[c4] (Document 11): Background one.",
        "CLAIM[c5] (Document 11): Drug A lowered glucose.",
    ]
    assert lines[5:] == ["RELATION: c2 refutes c1", "RELATION: c3 supports c1", "RELATION: c4 supports c1",
                         "RELATION: c5 supports c1"]


def test_claim_without_evidence_gives_only_the_hypothesis_line():
    example = example_from_scifact(dict(CLAIM, evidence={}, cited_doc_ids=[33]), CORPUS)
    assert example["completion"] == "CLAIM[c1]: Drug A lowers glucose."
    assert example["prompt"].endswith("Document 33: Unrelated\nOnly filler here.")
    assert example["metadata"]["labels"] == []


def test_builders_directly():
    assert build_prompt("H.", []) == (
        "Extract the claims from the hypothesis and the cited abstracts.\n\nHypothesis: H.")
    assert build_completion("H.", [(5, "S.", "CONTRADICT")]) == (
        "CLAIM[c1]: H.\nCLAIM[c2] (Document 5): S.\nRELATION: c2 refutes c1")
    with pytest.raises(KeyError):
        build_completion("H.", [(5, "S.", "NOT_ENOUGH_INFO")])


@pytest.mark.parametrize("claim, error", [
    (dict(CLAIM, cited_doc_ids=[11, 99]), KeyError),  # cited doc not in corpus
    (dict(CLAIM, cited_doc_ids=[11, 33]), KeyError),  # evidence doc 22 not cited
    (dict(CLAIM, evidence={"11": [{"sentences": [3], "label": "SUPPORT"}]}), IndexError),
    (dict(CLAIM, evidence={"11": [{"sentences": [-1], "label": "SUPPORT"}]}), IndexError),
])
def test_bad_references_raise(claim, error):
    with pytest.raises(error):
        example_from_scifact(claim, CORPUS)


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("name, minimum", [("claims.jsonl", 300), ("dev.jsonl", 50)])
def test_shipped_examples_are_well_formed(name, minimum):
    rows = read_jsonl(SAMPLE / name)
    assert len(rows) >= minimum
    for row in rows:
        prompt, completion = row["prompt"], row["completion"]
        hypothesis = next(line for line in prompt.splitlines() if line.startswith(HYPOTHESIS_PREFIX))
        lines = completion.splitlines()
        assert lines[0].startswith(C1_LINE_PREFIX + " ")
        assert lines[0][len(C1_LINE_PREFIX) + 1:] == hypothesis[len(HYPOTHESIS_PREFIX):]
        evidence = [line for line in lines[1:] if line.startswith(CLAIM_PREFIX)]
        relations = [line for line in lines if line.startswith(RELATION_PREFIX)]
        assert lines == lines[:1] + evidence + relations
        assert len(evidence) == len(relations) == len(row["metadata"]["labels"])
        for line in evidence:
            doc = line.split("(Document ", 1)[1].split(")", 1)[0]
            sentence = line.split("): ", 1)[1]
            block = prompt.split(f"\n\nDocument {doc}: ", 1)[1].split("\n\nDocument ", 1)[0]
            assert sentence in block.split("\n", 1)[1], f"{sentence!r} is not in document {doc}"


def test_shipped_examples_match_shipped_claims():
    # Catches a format change that was not followed by regenerating the data.
    corpus = {doc["doc_id"]: doc for doc in read_jsonl(SAMPLE / "corpus.jsonl")}
    for claims, examples in [("claims_train.jsonl", "claims.jsonl"), ("claims_dev.jsonl", "dev.jsonl")]:
        built = [example_from_scifact(claim, corpus) for claim in read_jsonl(SAMPLE / claims)]
        assert built == read_jsonl(SAMPLE / examples)
    train = {row["claim"] for row in read_jsonl(SAMPLE / "claims_train.jsonl")}
    dev = {row["claim"] for row in read_jsonl(SAMPLE / "claims_dev.jsonl")}
    assert not train & dev


def load_generator():
    spec = importlib.util.spec_from_file_location("make_sample_data", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def test_generator_is_deterministic_and_matches_shipped_files(tmp_path, capsys):
    generator = load_generator()
    for run in ("a", "b"):
        assert generator.main(["--out", str(tmp_path / run)]) == 0
    for name in GENERATED:
        first = (tmp_path / "a" / name).read_bytes()
        assert first == (tmp_path / "b" / name).read_bytes(), name
        assert first == (SAMPLE / name).read_bytes(), f"{name} is stale: rerun scripts/make_sample_data.py"
    assert sum((SAMPLE / name).stat().st_size for name in GENERATED) < 1_500_000
