"""Damaged files a run reads, reported as one line that names the file and what to do (issue 21, "Errors that
name nothing"): a run record of the wrong shape, an unreadable record under stage=eval, and an MLflow store
whose header or pages are corrupted."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from conftest import clean_env, launch

from thinker.errors import ExitCode
from thinker.tracking.run_record import RunRecord

WRONG_SHAPES = {
    "a list": "[]",
    "stages a number": '{"stages": 5}',
    "a stage that is not an object": '{"stages": {"train": "passed"}}',
    "metrics a list": '{"metrics": [1, 2]}',
    "a metric that is text": '{"metrics": {"val_loss": "low"}}',
    "overrides a string": '{"overrides": "method=lora"}',
}


@pytest.mark.parametrize("text", WRONG_SHAPES.values(), ids=WRONG_SHAPES.keys())
def test_a_record_of_another_shape_is_refused_where_it_is_read(tmp_path, text):
    path = tmp_path / "run_record.json"
    path.write_text(text)
    with pytest.raises(ValueError, match="^its? "):  # UnreadableRecord, which the pipeline turns into one line
        RunRecord.load(path)


def test_a_record_thinker_wrote_reads_back(tmp_path):
    record = RunRecord(path=tmp_path / "run_record.json", overrides=["method=lora"], git_dirty=False)
    record.stage_update("train", "passed", weights=str(tmp_path / "weights"), metrics={"val_loss": 1.0})
    record.metrics.update(val_loss=1.0, optimizer_steps=2.0, missing=None)
    record.continue_with("eval", ["stage=eval"])
    record.finish("failed", 5, "[thinker] error: x")
    again = RunRecord.load(record.path)
    assert again.as_dict() == record.as_dict()


def one_error_line(out) -> str:
    lines = [line for line in out.stderr.splitlines() if line.startswith("[thinker] error: ")]
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize("text", ["[]", '{"stages": 5}', '{"stages": {'])
def test_stage_eval_on_an_unreadable_record_says_which_file_and_to_train(tmp_path, text):
    record = tmp_path / "run" / "run_record.json"
    record.parent.mkdir()
    record.write_text(text)
    out = launch(["stage=eval", "logger=none", "hydra.run.dir=run"], cwd=tmp_path, env=clean_env())
    assert out.returncode == ExitCode.CONFIG, out.stderr[-2000:]
    line = one_error_line(out)
    assert f"the run record {record} cannot be read" in line and "stage=train" in line
    assert "resume" not in line  # stage=eval is not a resume
    assert record.read_text() == text  # the damaged record is left for the user to look at


def test_resume_on_a_record_of_another_shape_names_the_file(tmp_path):
    record = tmp_path / "run" / "run_record.json"
    record.parent.mkdir()
    record.write_text('{"history": {"not": "a list"}}')
    out = launch(["resume=true", "logger=none", "hydra.run.dir=run"], cwd=tmp_path, env=clean_env())
    assert out.returncode == ExitCode.CONFIG, out.stderr[-2000:]
    line = one_error_line(out)
    assert f"the run record {record} cannot be read: its 'history' is a JSON object, not an array" in line


def test_reuse_skips_a_finished_run_whose_record_has_another_shape(tmp_path):
    """A sweep job looking for a run to reuse reads the record of each candidate; one of the wrong shape is
    unavailable (the job trains), not an AttributeError in the middle of adopting it."""
    from mlflow.tracking import MlflowClient

    from thinker.reuse import _record_of

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("thinker", artifact_location=(tmp_path / "artifacts").as_uri())
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    run_id = client.create_run(experiment).info.run_id
    client.set_tag(run_id, "run_dir", str(run_dir))
    record = {"mlflow_run_id": run_id, "exit_status": "succeeded", "metrics": ["not", "a", "mapping"]}
    (run_dir / "run_record.json").write_text(json.dumps(record))
    assert _record_of(client, client.get_run(run_id)) is None
    record["metrics"] = {"val_loss": 1.0}
    (run_dir / "run_record.json").write_text(json.dumps(record))
    assert _record_of(client, client.get_run(run_id)) == record
