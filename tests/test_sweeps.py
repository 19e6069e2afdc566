"""Sweeps survive failed jobs: real `-m` multiruns (basic launcher and Optuna), and the summary they end with."""

from __future__ import annotations

import json

import pytest
from conftest import clean_env, launch

from thinker.sweeps.plan import summarize

TINY = ["data.max_examples=24", "trainer.batch_size=4", "trainer.max_steps=2", "trainer.evaluations=1",
        "validation.pytest.enabled=false", "evaluation.enabled=false"]
TOO_SHORT = "no completion token survives trainer.max_seq_length=32"


def write_record(folder, status, error=None, code=0):
    folder.mkdir(parents=True)
    (folder / "run_record.json").write_text(json.dumps({"exit_status": status, "exit_code": code, "error": error}))


def test_summary_counts_jobs_and_names_each_failure(tmp_path):
    write_record(tmp_path / "0", "failed", "[thinker] error: bad data, data.path=x, fix it", 3)
    write_record(tmp_path / "1", "succeeded")
    write_record(tmp_path / "2", "running")  # killed mid-job: it never wrote an outcome
    write_record(tmp_path / "10", "succeeded")
    (tmp_path / ".hydra").mkdir()
    outcome = summarize(tmp_path)
    assert outcome.line() == ("sweep: 2 of 4 jobs succeeded; failed: #0 bad data, data.path=x, fix it; "
                              "#2 ended as running without an error line (killed?)")
    assert outcome.exit_code == 3


def test_summary_of_a_clean_sweep_exits_zero(tmp_path):
    write_record(tmp_path / "0", "succeeded")
    outcome = summarize(tmp_path)
    assert outcome.line() == "sweep: 1 of 1 jobs succeeded" and outcome.exit_code == 0


@pytest.fixture
def env(tmp_path_factory):
    return clean_env(THINKER_MODELS_DIR=str(tmp_path_factory.getbasetemp() / "shared-models"), HF_HUB_OFFLINE="1")


def job_records(cwd):
    return {int(p.parent.name): json.loads(p.read_text()) for p in cwd.glob("multirun/*/*/*/run_record.json")}


def last_line(text):
    return [line for line in text.splitlines() if line.strip()][-1]


@pytest.mark.slow
def test_a_failed_job_does_not_stop_a_basic_sweep(tmp_path, env):
    out = launch(["-m", "method=lora", "trainer.max_seq_length=32,256", *TINY], cwd=tmp_path, env=env)
    assert out.returncode == 4, out.stderr[-3000:]  # the failed job's stage: training
    assert last_line(out.stderr).startswith(f"sweep: 1 of 2 jobs succeeded; failed: #0 {TOO_SHORT}")
    assert "Traceback" not in out.stdout + out.stderr
    records = job_records(tmp_path)
    assert records[0]["exit_status"] == "failed" and TOO_SHORT in records[0]["error"]
    assert records[1]["exit_status"] == "succeeded" and records[1]["metrics"]["val_loss"] > 0
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("thinker").experiment_id])
    status = {r.info.run_id: r.info.status for r in runs}
    assert status[records[0]["mlflow_run_id"]] == "FAILED" and status[records[1]["mlflow_run_id"]] == "FINISHED"


@pytest.mark.slow
def test_optuna_records_a_failed_trial_and_continues(tmp_path, env):
    # (read from the log and the sweeper's results file; tests/test_optuna_search.py reads the FAIL trial back
    # from the study's SQLite storage)
    out = launch(["-m", "hparams_search=optuna", "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=0",
                  "hydra.sweeper.params=null", "hydra.sweeper.n_trials=2", "method=lora",
                  "trainer.max_seq_length=choice(32,256)", "logger=none", *TINY], cwd=tmp_path, env=env)
    assert out.returncode == 4, out.stderr[-3000:]
    # seed 0 draws 256 then 32: the second trial fails after the first succeeded
    assert last_line(out.stderr).startswith(f"sweep: 1 of 2 jobs succeeded; failed: #1 {TOO_SHORT}")
    # the sweeper's own FAIL branch logs this once per failed trial, then asks for the next trial
    assert (out.stdout + out.stderr).count("Failed experiment:") == 1
    records = job_records(tmp_path)
    assert [records[n]["exit_status"] for n in (0, 1)] == ["succeeded", "failed"]
    from omegaconf import OmegaConf

    results = OmegaConf.load(next(tmp_path.glob("multirun/*/*/optimization_results.yaml")))
    assert dict(results.best_params) == {"trainer.max_seq_length": 256}
    assert results.best_value == pytest.approx(records[0]["metrics"]["val_loss"])


@pytest.mark.slow
def test_optuna_search_whose_every_trial_fails_reports_them_and_exits_with_their_stage(tmp_path, env):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p"}\n')
    out = launch(["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2", f"data.path={bad}", "logger=none",
                  *TINY], cwd=tmp_path, env=env)
    assert out.returncode == 3, out.stderr[-3000:]
    assert "sweep: 0 of 2 jobs succeeded; failed: #0 dataset failed validation" in out.stderr
    assert "#1 dataset failed validation" in out.stderr


@pytest.mark.slow
def test_a_sweeps_console_and_records_never_show_a_tracking_uri_password(tmp_path, env):
    password = "pw-Sweep5ecretValue"
    out = launch(["-m", "stage=validate", "validation.pytest.enabled=false", "logger=none", "seed=1,2",
                  f"logger.tracking_uri=postgresql://alice:{password}@db.example/mlflow"], cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "#1 : " in out.stdout + out.stderr  # the launcher's echo of the job's overrides...
    assert "alice\\:***@db.example" in out.stdout + out.stderr  # ...with the password masked
    assert password not in out.stdout + out.stderr
    for path in tmp_path.glob("multirun/*/*/*/*"):
        if path.name in ("run_record.json", "launch.log"):
            assert password not in path.read_text(), path
