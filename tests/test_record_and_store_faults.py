"""Damaged files a run reads, reported as one line that names the file and what to do (issue 21, "Errors that
name nothing"): a run record of the wrong shape, an unreadable record under stage=eval, and an MLflow store
whose header or pages are corrupted."""

from __future__ import annotations

import json
import sqlite3

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

    from thinker.run.reuse import _record_of

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


# ---------------------------------------------------------------- a damaged MLflow store


@pytest.fixture(scope="module")
def store_with_a_finished_run(tmp_path_factory) -> bytes:
    """The bytes of a real MLflow SQLite store holding one FINISHED run."""
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    client = MlflowClient(f"sqlite:///{db}")
    run_id = client.create_run(client.create_experiment("thinker")).info.run_id
    client.set_terminated(run_id, "FINISHED")
    return db.read_bytes()


def test_a_store_with_a_damaged_header_stops_the_run_before_training_naming_the_file(tmp_path,
                                                                                    store_with_a_finished_run):
    db = tmp_path / "mlflow.db"
    damaged = b"\x00" * 16 + store_with_a_finished_run[16:]  # the header, as a bad copy or a stray write leaves it
    db.write_bytes(damaged)
    env = clean_env(THINKER_MODELS_DIR=str(tmp_path / "models"), HF_HUB_OFFLINE="1")
    out = launch(["stage=train", "validation.enabled=false", "data.max_examples=24", "trainer.max_steps=2",
                  "hydra.run.dir=run"], cwd=tmp_path, env=env)
    assert out.returncode == ExitCode.RECORD, out.stderr[-3000:]
    line = one_error_line(out)
    assert f"the MLflow store {db} is not a readable SQLite database" in line
    assert f'sqlite3 {db} "PRAGMA integrity_check"' in line and "move it aside" in line
    assert not (tmp_path / "run" / "checkpoints").exists()  # found before training started
    record = json.loads((tmp_path / "run" / "run_record.json").read_text())
    assert record["exit_status"] == "failed" and record["stages"]["train"]["status"] == "failed"
    assert db.read_bytes() == damaged  # left as it was, for the user to inspect


def flip_a_run_status(store: bytes) -> bytes:
    """The store with one byte of its run's status changed in the runs table's page (the schema's CHECK
    constraint text, which also says FINISHED, is quoted there and left alone)."""
    at = next(i for i in range(len(store)) if store.startswith(b"FINISHED", i) and store[i - 1:i] != b"'")
    return store[:at + 5] + bytes([store[at + 5] ^ 0x5A]) + store[at + 6:]


def test_a_flipped_byte_in_the_store_is_warned_about_when_a_run_opens_it(tmp_path, store_with_a_finished_run,
                                                                         caplog):
    from thinker.tracking.mlflow_run import MlflowSession

    db = tmp_path / "mlflow.db"
    db.write_bytes(flip_a_run_status(store_with_a_finished_run))
    assert sqlite3.connect(db).execute("SELECT status FROM runs").fetchone()[0] != "FINISHED"
    with caplog.at_level("WARNING", logger="thinker"):
        session = MlflowSession(f"sqlite:///{db}", "thinker", "next run")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and str(db) in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    assert "CHECK constraint failed in runs" in warnings[0] and f'sqlite3 {db} "PRAGMA integrity_check"' in warnings[0]
    assert session.run_id  # a warning, not a stop: the new run still opens


def test_an_intact_store_opens_without_a_warning(tmp_path, store_with_a_finished_run, caplog):
    from thinker.tracking.mlflow_run import MlflowSession

    db = tmp_path / "mlflow.db"
    db.write_bytes(store_with_a_finished_run)
    with caplog.at_level("WARNING", logger="thinker"):
        MlflowSession(f"sqlite:///{db}", "thinker", "next run")
    assert str(db) not in caplog.text
