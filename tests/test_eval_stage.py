"""The eval stage for real: train the tiny model for two steps, evaluate it, and the missing-checkpoint error."""

from __future__ import annotations

import json

import pytest
from conftest import clean_env, compose, launch

from thinker.errors import ExitCode, ThinkerError
from thinker.evaluation.metrics import METRIC_NAMES

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("private_models_dir")]

FAST = ["data.max_examples=32", "trainer.max_seq_length=256", "trainer.batch_size=4", "trainer.max_steps=2",
        "method=lora", "validation.pytest.enabled=false", "logger=none", "evaluation.max_samples=3",
        "evaluation.decoding.max_new_tokens=24"]


def context(run_dir, overrides):
    from thinker.stages import StageContext
    from thinker.tracking.run_record import RunRecord

    cfg = compose([*FAST, f"output.dir={run_dir}", *overrides])
    return StageContext(cfg=cfg, run_dir=run_dir, record=RunRecord(path=run_dir / "run_record.json"))


def test_train_then_eval_scores_the_adapter_and_records_it(tmp_path, capsys):
    from thinker.stages import stage_eval, stage_train, stage_validate

    run_dir = tmp_path / "run"
    # trains on the SciFact release files converted on the fly; data.path points nowhere, so reading it fails
    ctx = context(run_dir, ["data.source_format=scifact", "data.claims_file=data/sample/claims_train.jsonl",
                            "data.corpus_file=data/sample/corpus.jsonl", "data.path=nowhere/missing.jsonl"])
    stage_validate(ctx)
    assert (run_dir / "data" / "sample.jsonl").is_file()
    stage_train(ctx)
    stage_eval(ctx)
    stage = ctx.record.stages["eval"]
    assert stage["status"] == "passed" and stage["samples"] == 3
    assert stage["weights"] == str((run_dir / "weights").resolve())
    assert set(METRIC_NAMES) <= set(stage["metrics"]) and stage["metrics"]["total"] == 3
    assert {k: ctx.record.metrics[k] for k in METRIC_NAMES} == stage["metrics"]
    assert len(stage["evidence_semantic_match"]) == 3
    assert all(0.0 <= v <= 1.0 for v in stage["evidence_semantic_match"])
    rows = [json.loads(line) for line in (run_dir / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert [r["claim_id"] for r in rows] == [32, 34, 38]  # the first claims of the shipped dev file
    assert all(r["prompt"].startswith("Extract the claims") and isinstance(r["completion"], str) for r in rows)
    out = capsys.readouterr().out
    assert "c1_exact_match_rate" in out and "evidence_semantic_match_avg" in out

    # stage=eval on its own, pointed at those weights: greedy decoding gives the same predictions
    again = context(tmp_path / "again", ["stage=eval", f"evaluation.checkpoint_dir={run_dir / 'weights'}",
                                         "evaluation.output_path=preds.jsonl"])
    stage_eval(again)
    again_rows = [json.loads(line) for line in (tmp_path / "again" / "preds.jsonl").read_text().splitlines()]
    assert [r["completion"] for r in again_rows] == [r["completion"] for r in rows]
    assert again.record.stages["eval"]["metrics"] == stage["metrics"]


def test_eval_without_a_checkpoint_says_to_train_first(tmp_path):
    from thinker.stages import stage_eval

    with pytest.raises(ThinkerError) as info:
        stage_eval(context(tmp_path / "empty", ["stage=eval"]))
    assert info.value.exit_code == ExitCode.EVAL and "train stage" in info.value.line()


def test_stage_eval_with_missing_checkpoint_exits_5_with_one_line(tmp_path):
    env = clean_env(THINKER_MODELS_DIR=str(tmp_path / "models"), HF_HUB_OFFLINE="1")
    out = launch(["stage=eval", "validation.enabled=false", "logger=none", "hydra.run.dir=run",
                  f"evaluation.checkpoint_dir={tmp_path / 'nowhere'}"], cwd=tmp_path, env=env, timeout=300)
    assert out.returncode == ExitCode.EVAL, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if "[thinker] error" in line]
    assert len(errors) == 1 and "no trained checkpoint" in errors[0] and "run the train stage first" in errors[0]
    assert "Traceback" not in out.stderr
    record = json.loads((tmp_path / "run" / "run_record.json").read_text())
    assert record["stages"]["eval"]["status"] == "failed" and record["exit_code"] == 5
