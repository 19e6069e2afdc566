"""A logger option that is not MLflow (logger=csv) also records the runs of backends without a Lightning run of
their own (backend=tinker, backend=provider): the train stage gives them a tracker that writes their per-step
metrics to that option's logger (thinker.tracking.loggers.logger_tracker). The fast test uses a remote-like
backend of the test's own; the slow one runs backend=provider against a loopback server."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import compose

from thinker.backends import Backend, TrainingReport

STEPS = {1: 2.0, 2: 1.5, 3: 1.25}


class RemoteLikeBackend(Backend):
    """Trains nowhere: logs a loss per step into the tracker it is given, as the Tinker loop and the provider
    flow do (no Lightning run of its own)."""

    def train(self, cfg, run_dir, tracker):
        assert tracker is not None, "logger=csv gave this backend nothing to log into"
        tracker.set_tags({"remote_job": "job-1"})  # MLflow-only calls are accepted and left out
        tracker.log_artifact(run_dir, "provider")
        for step, loss in STEPS.items():
            tracker.log_metrics({"train_loss": loss}, step=step)
        return TrainingReport(backend=self.name, weights=None, metrics={"train_loss": 1.25, "optimizer_steps": 3.0})


def stage_train_with(logger: str, tmp_path):
    from thinker.run.context import StageContext
    from thinker.run.train import stage_train
    from thinker.tracking.run_record import RunRecord

    run_dir = tmp_path / "run"
    cfg = compose([f"logger={logger}", f"output.dir={run_dir}", "backend=tinker",
                   "backend._target_=test_logger_trackers.RemoteLikeBackend", "stage=train"])
    stage_train(StageContext(cfg=cfg, run_dir=run_dir, record=RunRecord(path=run_dir / "run_record.json")))
    return run_dir


def csv_rows(run_dir):
    files = sorted(run_dir.glob("csv/version_*/metrics.csv"))
    assert len(files) == 1, files
    with files[0].open() as fh:
        return list(csv.DictReader(fh))


def test_logger_csv_records_a_remote_backends_steps_and_totals(tmp_path):
    rows = csv_rows(stage_train_with("csv", tmp_path))
    steps = {int(r["step"]): float(r["train_loss"]) for r in rows if r.get("train_loss")}
    assert steps == STEPS
    assert any(r.get("optimizer_steps") == "3.0" for r in rows)  # the run's totals, at its last step


def test_logger_none_gives_a_remote_backend_no_tracker(tmp_path):
    with pytest.raises(AssertionError, match="nothing to log into"):
        stage_train_with("none", tmp_path)
    assert not (tmp_path / "run" / "csv").exists()


@pytest.mark.slow
def test_logger_csv_records_a_provider_jobs_steps(tmp_path, private_models_dir):
    from conftest import clean_env, launch
    from provider_servers import together_api
    from provider_servers.loopback import LoopbackServer

    app = together_api.create_app(steps=2)
    with LoopbackServer(app) as server:
        env = together_api.client_env(server.url)
        url = next((v for k, v in env.items() if k.endswith("_BASE_URL")), server.url)
        out = launch(["backend=provider", "provider=together", "method=lora", "logger=csv", "stage=train",
                      "provider.base_model=meta-llama/Meta-Llama-3.1-8B-Instruct-Reference", f"provider.base_url={url}",
                      "provider.poll_interval=0.05", "provider.max_wait=120", "validation.pytest.enabled=false",
                      "data.max_examples=40", "hydra.run.dir=run"], cwd=tmp_path,
                     env=clean_env(THINKER_MODELS_DIR=str(private_models_dir),
                                   **{k: v for k, v in env.items() if not k.endswith("_BASE_URL")}))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    rows = csv_rows(tmp_path / "run")
    assert {int(r["step"]) for r in rows if r.get("train_loss")} == {1, 2}  # the job's two steps, as reported
    record = json.loads((tmp_path / "run" / "run_record.json").read_text())
    assert record["stages"]["train"]["status"] == "passed" and record["mlflow_run_id"] is None
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_logger_csv_records_a_tinker_runs_steps(tmp_path, private_models_dir):
    from conftest import clean_env, launch

    from thinker.tinker_serve.server import start_in_thread

    with start_in_thread("tiny-qwen", tmp_path / "tinker-state") as server:
        out = launch(["backend=tinker", "logger=csv", "stage=train", "trainer.max_steps=3", "data.max_examples=24",
                      "validation.pytest.enabled=false", "hydra.run.dir=run"], cwd=tmp_path,
                     env=clean_env(TINKER_BASE_URL=server.base_url, TINKER_API_KEY="tml-SECRETlocalkey0123456789",
                                   THINKER_MODELS_DIR=str(private_models_dir)))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    rows = csv_rows(tmp_path / "run")
    assert {int(r["step"]) for r in rows if r.get("train_loss")} == {1, 2, 3}  # every optimizer step's loss
    assert not (tmp_path / "mlflow.db").exists()
