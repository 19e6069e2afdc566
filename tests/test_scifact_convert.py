"""The SciFact converter: release-format files -> prompt/completion JSONL, with line-numbered errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT

from thinker.data.claim_format import example_from_scifact
from thinker.data.scifact import convert_scifact
from thinker.errors import ExitCode, ThinkerError

CORPUS = [
    {"doc_id": 11, "title": "Smoking and cancer", "abstract": ["Background sentence.", "Smoking raises cancer risk."]},
    {"doc_id": 22, "title": "Coffee", "abstract": ["Coffee was studied.", "No effect was found.", "Sleep fell."]},
]
CLAIMS = [
    {"id": 1, "claim": "Smoking causes cancer.", "evidence": {"11": [{"sentences": [1], "label": "SUPPORT"}]},
     "cited_doc_ids": [11, 22]},
    {"id": 2, "claim": "Coffee ruins sleep.", "evidence": {}, "cited_doc_ids": [22]},  # no evidence
    {"id": 3, "claim": "Coffee has effects.", "evidence": {"22": [{"sentences": [1], "label": "CONTRADICT"}]},
     "cited_doc_ids": [22]},
]


def write_jsonl(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


@pytest.fixture
def files(tmp_path):
    return write_jsonl(tmp_path / "claims.jsonl", CLAIMS), write_jsonl(tmp_path / "corpus.jsonl", CORPUS)


def test_converts_with_claim_format_and_keeps_claims_without_evidence(tmp_path, files):
    claims, corpus = files
    out = tmp_path / "out" / "train.jsonl"
    assert convert_scifact(claims, corpus, out) == 3
    records = [json.loads(line) for line in out.read_text().splitlines()]
    by_id = {doc["doc_id"]: doc for doc in CORPUS}
    assert records == [example_from_scifact(c, by_id) for c in CLAIMS]
    assert records[0]["completion"] == ("CLAIM[c1]: Smoking causes cancer.\n"
                                        "CLAIM[c2] (Document 11): Smoking raises cancer risk.\n"
                                        "RELATION: c2 supports c1")
    assert records[1]["completion"] == "CLAIM[c1]: Coffee ruins sleep."
    assert "RELATION: c2 refutes c1" in records[2]["completion"]


def test_shipped_sample_converts_to_the_shipped_training_files(tmp_path):
    sample = ROOT / "data" / "sample"
    for claims, converted in (("claims_train.jsonl", "claims.jsonl"), ("claims_dev.jsonl", "dev.jsonl")):
        out = tmp_path / converted
        convert_scifact(sample / claims, sample / "corpus.jsonl", out)
        assert out.read_bytes() == (sample / converted).read_bytes()


BAD_CLAIMS = {
    "unknown cited doc": ({**CLAIMS[1], "cited_doc_ids": [22, 999]}, "unknown doc id 999"),
    "unknown evidence doc": ({**CLAIMS[0], "evidence": {"777": [{"sentences": [0], "label": "SUPPORT"}]}},
                             "unknown doc id '777'"),
    "sentence index past the end": ({**CLAIMS[0], "evidence": {"11": [{"sentences": [2], "label": "SUPPORT"}]}},
                                    "bad sentence index 2"),
    "negative sentence index": ({**CLAIMS[0], "evidence": {"11": [{"sentences": [-1], "label": "SUPPORT"}]}},
                                "bad sentence index -1"),
    "unknown label": ({**CLAIMS[0], "evidence": {"11": [{"sentences": [0], "label": "MAYBE"}]}}, "'MAYBE'"),
    "malformed json": ('{"id": 9, "claim": "broken', "malformed JSON"),
    "missing field": ({"id": 9, "claim": "x", "evidence": {}}, "missing field 'cited_doc_ids'"),
}


@pytest.mark.parametrize("case", sorted(BAD_CLAIMS))
def test_bad_claim_lines_name_file_and_line_and_write_nothing(tmp_path, files, case):
    _claims, corpus = files
    bad, expected = BAD_CLAIMS[case]
    # the bad record is on line 4: two good claims and a blank line come first
    claims = write_jsonl(tmp_path / "bad_claims.jsonl", [CLAIMS[0], CLAIMS[1], "", bad])
    out = tmp_path / "out.jsonl"
    with pytest.raises(ThinkerError) as info:
        convert_scifact(claims, corpus, out)
    message = info.value.line()
    assert expected in message and f"{claims}:4" in message, message
    assert message.count("\n") == 0 and message.startswith("[thinker] error:")
    assert not out.exists() and not list(tmp_path.glob(".out.jsonl*")), "a failed conversion left a file behind"


def test_malformed_corpus_line_is_reported_with_its_line(tmp_path, files):
    claims, _corpus = files
    corpus = write_jsonl(tmp_path / "corpus_bad.jsonl", [CORPUS[0], "not json at all"])
    with pytest.raises(ThinkerError, match=rf"{corpus}:2"):
        convert_scifact(claims, corpus, tmp_path / "out.jsonl")


def test_failed_conversion_keeps_an_existing_output_intact(tmp_path, files):
    _claims, corpus = files
    out = write_jsonl(tmp_path / "out.jsonl", [{"prompt": "old", "completion": "old"}])
    before = out.read_bytes()
    bad = write_jsonl(tmp_path / "bad.jsonl", [{**CLAIMS[1], "cited_doc_ids": [5]}])
    with pytest.raises(ThinkerError):
        convert_scifact(bad, corpus, out)
    assert out.read_bytes() == before


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "thinker.commands.cli", *args], capture_output=True, text=True, timeout=120)


def test_cli_convert_scifact(tmp_path, files):
    claims, corpus = files
    out = tmp_path / "cli.jsonl"
    ok = run_cli("data", "convert-scifact", "--claims", str(claims), "--corpus", str(corpus), "--out", str(out))
    assert ok.returncode == 0, ok.stderr
    assert "3 prompt/completion records" in ok.stdout and len(out.read_text().splitlines()) == 3

    bad = write_jsonl(tmp_path / "bad.jsonl", [CLAIMS[0], {**CLAIMS[0], "cited_doc_ids": [11, 404]}])
    failed_out = tmp_path / "never.jsonl"
    failed = run_cli("data", "convert-scifact", "--claims", str(bad), "--corpus", str(corpus), "--out",
                     str(failed_out))
    assert failed.returncode == ExitCode.VALIDATE
    assert failed.stderr.strip().splitlines() == [failed.stderr.strip()]  # one line, no traceback
    assert f"{bad}:2" in failed.stderr and "404" in failed.stderr
    assert not failed_out.exists()

    missing = run_cli("data", "convert-scifact", "--corpus", str(corpus), "--out", str(out))
    assert missing.returncode == 2 and "--claims" in missing.stderr  # argparse usage error


def test_validate_stage_converts_on_the_fly_into_the_run_folder(tmp_path, files, composed):
    from thinker.data.source import effective_data_path
    from thinker.run.context import StageContext
    from thinker.run.validate import stage_validate
    from thinker.tracking.run_record import RunRecord

    claims, corpus = files
    run_dir = tmp_path / "run"
    cfg = composed([f"output.dir={run_dir}", "data.source_format=scifact", f"data.claims_file={claims}",
                    f"data.corpus_file={corpus}", "validation.pytest.enabled=false", "logger=none"])
    record = RunRecord(path=run_dir / "run_record.json")
    stage_validate(StageContext(cfg=cfg, run_dir=run_dir, record=record))
    converted = run_dir / "data" / "sample.jsonl"
    assert effective_data_path(cfg, run_dir) == converted
    assert len(converted.read_text().splitlines()) == 3
    assert record.stages["validate"]["status"] == "passed" and record.stages["validate"]["dataset_records"] == 3
    assert record.dataset_path == str(converted)

    bad = write_jsonl(tmp_path / "bad.jsonl", [{**CLAIMS[0], "cited_doc_ids": [11, 404]}])
    cfg_bad = composed([f"output.dir={tmp_path / 'run2'}", "data.source_format=scifact", f"data.claims_file={bad}",
                        f"data.corpus_file={corpus}", "validation.pytest.enabled=false", "logger=none"])
    with pytest.raises(ThinkerError) as info:
        stage_validate(StageContext(cfg=cfg_bad, run_dir=tmp_path / "run2",
                                    record=RunRecord(path=tmp_path / "run2" / "run_record.json")))
    assert info.value.exit_code == ExitCode.VALIDATE and f"{bad}:1" in info.value.line()
    assert not (tmp_path / "run2" / "data" / "sample.jsonl").exists()


@pytest.mark.parametrize("overrides, key", [
    (["evaluation.max_samples=0"], "evaluation.max_samples"),
    (["evaluation.decoding.top_p=1.5"], "evaluation.decoding.top_p"),
    (["evaluation.decoding.temperature=0"], "evaluation.decoding.temperature"),
    (["evaluation.decoding.max_new_tokens=0"], "evaluation.decoding.max_new_tokens"),
    (["data.source_format=scifact"], "data.claims_file"),
    (["data.source_format=csv"], "data.source_format"),
])
def test_bad_eval_and_data_source_settings_stop_at_the_config_check(composed, overrides, key):
    from thinker.config.check import check_config

    with pytest.raises(ThinkerError) as info:
        check_config(composed(overrides), env={})
    assert info.value.exit_code == ExitCode.CONFIG and key in info.value.line()
