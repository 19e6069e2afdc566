"""The eval stage for real: train the tiny model for two steps, evaluate it, and the missing-checkpoint error."""

from __future__ import annotations

import json
import math

import pytest
from conftest import ROOT, clean_env, compose, launch

from thinker.errors import ExitCode, ThinkerError
from thinker.evaluation.metrics import METRIC_NAMES

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("private_models_dir")]

FAST = ["data.max_examples=32", "trainer.max_seq_length=256", "trainer.batch_size=4", "trainer.max_steps=2",
        "method=lora", "validation.pytest.enabled=false", "logger=none", "evaluation.max_samples=3",
        "evaluation.decoding.max_new_tokens=24"]


def context(run_dir, overrides):
    from thinker.run.context import StageContext
    from thinker.tracking.run_record import RunRecord

    cfg = compose([*FAST, f"output.dir={run_dir}", *overrides])
    return StageContext(cfg=cfg, run_dir=run_dir, record=RunRecord(path=run_dir / "run_record.json"))


def test_train_then_eval_scores_the_adapter_and_records_it(tmp_path, capsys, private_models_dir):
    from thinker.run.evaluate import stage_eval
    from thinker.run.train import stage_train
    from thinker.run.validate import stage_validate

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
    # before -> after: the untrained base scored the same way, and each score's empty-answer floor
    before, floor = stage["metrics_before"], stage["floor"]
    assert set(METRIC_NAMES) <= set(before) and before["total"] == 3
    assert floor["c1_exact_match_rate"] == 0.0 and floor["total"] == 3
    assert stage["at_floor"] == [n for n in METRIC_NAMES[2:] if stage["metrics"][n] <= floor[n]]
    assert "base" in out and "trained" in out and "change" in out
    cached = list((private_models_dir / "eval_cache").glob("*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text())["metrics"] == before

    # stage=eval on its own, pointed at those weights: greedy decoding gives the same predictions
    again = context(tmp_path / "again", ["stage=eval", f"evaluation.checkpoint_dir={run_dir / 'weights'}",
                                         "evaluation.output_path=preds.jsonl"])
    stage_eval(again)
    again_rows = [json.loads(line) for line in (tmp_path / "again" / "preds.jsonl").read_text().splitlines()]
    assert [r["completion"] for r in again_rows] == [r["completion"] for r in rows]
    assert again.record.stages["eval"]["metrics"] == stage["metrics"]
    # the same base and eval set: the base scores come from the cache, not a second generation pass
    assert again.record.stages["eval"]["metrics_before"] == before
    assert len(list((private_models_dir / "eval_cache").glob("*.json"))) == 1


def test_eval_without_a_checkpoint_says_to_train_first(tmp_path):
    from thinker.run.evaluate import stage_eval

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


def write_reasoning_file(path, n=24):
    rows = [{"question": f"Tom has {i} apples and buys {i + 2} more. How many apples does he have?",
             "answer": f"He has {i} + {i + 2} = {2 * i + 2} apples.\n#### {2 * i + 2}"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize("data", ["jsonl", "gsm8k"])
def test_data_without_claims_is_scored_by_held_out_loss_never_by_claim_metrics(tmp_path, data):
    from thinker.run.evaluate import stage_eval
    from thinker.run.train import stage_train

    source = tmp_path / "train.jsonl"
    if data == "gsm8k":
        write_reasoning_file(source)
    else:
        source.write_text((ROOT / "data" / "sample" / "claims.jsonl").read_text())
    ctx = context(tmp_path / "run", [f"data={data}", f"data.path={source}", "data.validation_split=0.2"])
    stage_train(ctx)
    stage_eval(ctx)
    metrics = ctx.record.stages["eval"]["metrics"]
    assert metrics["heldout_loss"] == ctx.record.metrics["val_loss"]
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["heldout_loss"]))
    assert not set(METRIC_NAMES) & set(ctx.record.metrics)  # no claim metrics on unrelated data
    if data == "gsm8k":
        assert metrics["answers"] == 3 and 0.0 <= metrics["answer_accuracy"] <= 1.0  # evaluation.max_samples


def test_answer_accuracy_compares_final_answers():
    from thinker.data.examples import Example
    from thinker.evaluation.heldout import answer_accuracy
    from thinker.tasks.reasoning import final_answer

    examples = [Example("q1", "so 3 + 4 = 7\n#### 7"), Example("q2", "#### 1,200")]
    assert answer_accuracy(examples, lambda prompts: ["#### 7", "the answer is #### 1200"], 8)["answer_accuracy"] == 1.0
    assert answer_accuracy(examples, lambda prompts: ["#### 8", "no answer"], 8)["answer_accuracy"] == 0.0
    assert final_answer("#### 5.0") == "5" and final_answer("nothing") is None
