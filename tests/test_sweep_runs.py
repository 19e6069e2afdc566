"""Sweeps in MLflow: one parent run per sweep, a named child per job, the summary, and de-duplicated resumable
sweeps (a finished job is reused, not trained again). Real tiny `-m` runs through launch.py."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, clean_env, launch

from thinker.sweeps.plan import job_label
from thinker.sweeps.summary import JobRow, best_row

TINY = ["data.max_examples=24", "trainer.batch_size=4", "trainer.max_steps=2", "trainer.evaluations=2",
        "evaluation.max_samples=1", "evaluation.decoding.max_new_tokens=8", "evaluation.compare_base=false",
        "evaluation.embedding.enabled=false", "validation.pytest.enabled=false"]
# where the evaluation scores do not matter, they are left out (each job is a few seconds shorter)
NO_EVAL = [*(o for o in TINY if not o.startswith("evaluation.")), "evaluation.enabled=false"]
GRID = ["optimizer.lr=1e-3,2e-3", "method=lora,qlora"]
GRID_NAMES = {"lr=0.001 method=lora", "lr=0.001 method=qlora", "lr=0.002 method=lora", "lr=0.002 method=qlora"}
SUMMARY = ["sweep_summary.md", "sweep_summary.csv", "sweep_summary.json", "val_loss.png"]


# ---------------------------------------------------------------- fast: names and ranking


def test_a_job_is_named_by_the_values_it_sweeps_with_short_keys():
    overrides = ["optimizer.lr=0.00012345678", "method=qlora", "trainer.max_steps=2", "method.rank=8"]
    assert job_label(overrides, ["optimizer.lr", "method"]) == "lr=0.000123 method=qlora"
    assert job_label(overrides, ["optimizer.lr", "method.rank"]) == "lr=0.000123 rank=8"
    # two keys whose last parts collide keep their full names
    assert job_label(["a.lr=1", "b.lr=2"], ["a.lr", "b.lr"]) == "a.lr=1 b.lr=2"
    # nothing swept (a one-job sweep): every override names it
    assert job_label(["seed=3", "data.path=/x/y/train.jsonl"], []) == "seed=3 path=train.jsonl"


def test_the_best_job_is_the_lowest_objective_among_jobs_that_succeeded():
    rows = [JobRow(0, "a", "val_loss", 2.0, "succeeded", 1, "r0"), JobRow(1, "b", None, None, "failed", 1, "r1"),
            JobRow(2, "c", "val_loss", 1.5, "reused", 1, "r2"), JobRow(3, "d", "val_loss", 3.0, "succeeded", 1, "r3")]
    assert best_row(rows).job == 2
    assert best_row(rows, "maximize").job == 3
    assert best_row([rows[1]]) is None


# ---------------------------------------------------------------- real sweeps


def env_for(models: Path) -> dict[str, str]:
    return clean_env(THINKER_MODELS_DIR=str(models), HF_HUB_OFFLINE="1")


def client_for(cwd: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")


def all_runs(cwd: Path):
    client = client_for(cwd)
    return client, client.search_runs([client.get_experiment_by_name("thinker").experiment_id], max_results=1000)


def sweep_dirs(cwd: Path) -> list[Path]:
    return sorted(Path(p) for p in glob.glob(str(cwd / "multirun" / "*" / "*")))


def records(sweep_dir: Path) -> dict[int, dict]:
    return {int(p.parent.name): json.loads(p.read_text()) for p in sweep_dir.glob("*/run_record.json")}


def family(cwd: Path, sweep_dir: Path):
    """(client, the sweep's parent run, {job number: child run}) for the sweep in `sweep_dir`."""
    client, runs = all_runs(cwd)
    parents = [r for r in runs if r.data.tags.get("sweep_parent") == "true"
               and r.data.tags.get("sweep_dir") == str(sweep_dir.resolve())]
    assert len(parents) == 1, [r.data.tags for r in runs]
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    by_job = {int(r.data.tags["sweep_job"]): r for r in children}
    assert len(by_job) == len(children)
    return client, parent, by_job


def trained_files(job_dir: Path) -> list[Path]:
    return [p for p in (job_dir / "checkpoints", job_dir / "weights") if p.exists()]


@pytest.fixture(scope="module")
def first_sweep(tmp_path_factory, private_models_dir):
    """A 4-job grid sweep (basic launcher), run once for the tests below, which re-launch it in the same folder."""
    cwd = tmp_path_factory.mktemp("grid")
    started = time.monotonic()
    out = launch(["-m", *GRID, *TINY], cwd=cwd, env=env_for(private_models_dir))
    assert out.returncode == 0, out.stderr[-3000:]
    return cwd, out, sweep_dirs(cwd)[0], time.monotonic() - started


@pytest.mark.slow
def test_a_grid_sweep_is_one_parent_run_with_a_child_per_job_named_by_its_overrides(first_sweep):
    cwd, out, sweep_dir, _seconds = first_sweep
    client, parent, children = family(cwd, sweep_dir)
    _, runs = all_runs(cwd)
    assert len(runs) == 5, "one parent and four children, no loose runs"
    assert parent.info.run_name == f"sweep-{sweep_dir.parent.name}-{sweep_dir.name}"
    assert parent.info.status == "FINISHED"
    assert "optimizer.lr=1e-3,2e-3 method=lora,qlora" in parent.data.tags["sweep_overrides"]
    assert parent.data.tags["sweep_keys"] == "optimizer.lr,method" and parent.data.tags["sweep_jobs"] == "4"
    assert sorted(children) == [0, 1, 2, 3]
    assert {r.info.run_name for r in children.values()} == GRID_NAMES
    jobs = records(sweep_dir)
    for num, run in children.items():
        assert run.info.run_id == jobs[num]["mlflow_run_id"] and run.info.status == "FINISHED"
        assert trained_files(sweep_dir / str(num))  # these jobs trained: checkpoints and weights
        assert "reused_from" not in run.data.tags and jobs[num].get("reused_from") is None
    # a progress line per job, printed as each ends
    for num, run in children.items():
        loss = jobs[num]["metrics"]["val_loss"]
        assert f"[sweep] job {num + 1}/4 (#{num}) done: {run.info.run_name} val_loss {loss:.4f}" in out.stdout

    # the summary: in the sweep folder and on the parent run
    for name in SUMMARY:
        assert (sweep_dir / name).is_file(), name
    assert (sweep_dir / "val_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(a.path for a in client.list_artifacts(parent.info.run_id)) == sorted(SUMMARY)
    summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert [row["job"] for row in summary["jobs"]] == [0, 1, 2, 3]
    for row in summary["jobs"]:
        assert row["objective"] == pytest.approx(jobs[row["job"]]["metrics"]["val_loss"])
        assert row["status"] == "succeeded" and row["run_id"] == jobs[row["job"]]["mlflow_run_id"]
        assert row["overrides"] == children[row["job"]].info.run_name and row["seconds"] is not None
    table = (sweep_dir / "sweep_summary.md").read_text()
    assert all(f"| {name} |" in table for name in GRID_NAMES)

    # the best job, tagged on the parent and on its child only
    best = min(jobs, key=lambda n: jobs[n]["metrics"]["val_loss"])
    assert summary["best"]["job"] == best
    assert parent.data.tags["best_job"] == str(best)
    assert parent.data.tags["best_run_id"] == children[best].info.run_id
    assert parent.data.metrics["best_val_loss"] == pytest.approx(jobs[best]["metrics"]["val_loss"])
    best_tags = {n: client.get_run(r.info.run_id).data.tags.get("best") for n, r in children.items()}
    assert best_tags == {n: ("true" if n == best else None) for n in children}


@pytest.mark.slow
def test_relaunching_a_finished_sweep_reuses_every_job_and_trains_nothing(first_sweep, private_models_dir):
    cwd, _first_out, first_dir, first_seconds = first_sweep
    before = set(sweep_dirs(cwd))
    started = time.monotonic()
    out = launch(["-m", *GRID, *TINY], cwd=cwd, env=env_for(private_models_dir))
    seconds = time.monotonic() - started
    assert out.returncode == 0, out.stderr[-3000:]
    (second_dir,) = set(sweep_dirs(cwd)) - before
    client, _, originals = family(cwd, first_dir)
    _, parent, children = family(cwd, second_dir)
    assert parent.info.status == "FINISHED" and parent.data.tags["jobs_reused"] == "4"
    assert {r.info.run_name for r in children.values()} == GRID_NAMES
    original_by_name = {r.info.run_name: r for r in originals.values()}
    first_records, jobs = records(first_dir), records(second_dir)
    for num, run in children.items():
        original = original_by_name[run.info.run_name]
        origin = original.info.run_id
        assert run.data.tags["reused_from"] == origin and jobs[num]["reused_from"] == origin
        assert f"#/experiments/{run.info.experiment_id}/runs/{origin}" in run.data.tags["mlflow.note.content"]
        assert run.info.run_id not in {r.info.run_id for r in originals.values()}  # a new child of the new parent
        # the original's result, evaluation scores included (the sweep's objective does not change)
        before = first_records[int(original.data.tags["sweep_job"])]
        assert jobs[num]["metrics"] == before["metrics"] and "c1_exact_match_rate" in jobs[num]["metrics"]
        assert jobs[num]["stages"]["train"]["weights"] == before["stages"]["train"]["weights"]
        assert jobs[num]["stages"]["train"]["status"] == "reused" and jobs[num]["stages"]["reuse"]["status"] == "passed"
        history = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_loss")]
        assert history == [(m.step, m.value) for m in client.get_metric_history(origin, "val_loss")] and history
        # nothing trained: no checkpoint, no weights in the new job folder
        assert trained_files(second_dir / str(num)) == []
        assert f"(#{num}) reused run {origin[:12]}: {run.info.run_name} val_loss" in out.stdout
    assert "training:" not in out.stdout + out.stderr
    summary = json.loads((second_dir / "sweep_summary.json").read_text())
    assert [row["status"] for row in summary["jobs"]] == ["reused"] * 4
    assert seconds < first_seconds, (seconds, first_seconds)


@pytest.mark.slow
def test_sweep_reuse_false_trains_again_in_joblib_workers_linked_to_the_parent(first_sweep, private_models_dir):
    """sweep.reuse=false retrains jobs that finished before; the joblib launcher's jobs (other processes) are
    children of the parent run the launching process opened."""
    cwd, _out, _first_dir, _seconds = first_sweep
    before = set(sweep_dirs(cwd))
    out = launch(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "sweep.reuse=false",
                  "optimizer.lr=1e-3,2e-3", "method=lora", *NO_EVAL], cwd=cwd, env=env_for(private_models_dir))
    assert out.returncode == 0, out.stderr[-3000:]
    (new_dir,) = set(sweep_dirs(cwd)) - before
    _client, parent, children = family(cwd, new_dir)
    assert sorted(children) == [0, 1] and parent.info.status == "FINISHED"
    assert {r.info.run_name for r in children.values()} == {"lr=0.001", "lr=0.002"}
    jobs = records(new_dir)
    for num, run in children.items():
        assert "reused_from" not in run.data.tags and jobs[num].get("reused_from") is None
        assert jobs[num]["stages"]["train"]["status"] == "passed"
        assert (new_dir / str(num) / "weights").is_dir()  # trained again
        assert run.data.tags["sweep_job"] == str(num) and run.info.run_id == jobs[num]["mlflow_run_id"]
    assert "reused run" not in out.stdout
    assert "Joblib.Parallel(n_jobs=2" in out.stdout + out.stderr  # the jobs ran in loky worker processes


@pytest.mark.slow
def test_a_killed_sweep_relaunched_reruns_only_the_job_that_did_not_finish(tmp_path, private_models_dir):
    env = env_for(private_models_dir)
    args = [sys.executable, str(ROOT / "launch.py"), "-m", "optimizer.lr=1e-3,2e-3", "method=lora", *NO_EVAL]
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + 300
            while True:  # job #1 has opened its MLflow run: it is training
                found = glob.glob(str(tmp_path / "multirun" / "*" / "*" / "1" / "run_record.json"))
                try:
                    if found and json.loads(Path(found[0]).read_text()).get("mlflow_run_id"):
                        break
                except ValueError:
                    pass
                assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
                assert time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # a crash: no handler runs
            proc.wait()
    (first_dir,) = sweep_dirs(tmp_path)
    killed = records(first_dir)
    assert killed[0]["exit_status"] == "succeeded" and killed[1]["exit_status"] == "running"

    out = launch(args[2:], cwd=tmp_path, env=env)  # the same command
    assert out.returncode == 0, out.stderr[-3000:]
    (second_dir,) = set(sweep_dirs(tmp_path)) - {first_dir}
    client, parent, children = family(tmp_path, second_dir)
    jobs = records(second_dir)
    # the finished job is reused, the killed one trains again (its RUNNING run is not a result)
    assert jobs[0]["reused_from"] == killed[0]["mlflow_run_id"] and trained_files(second_dir / "0") == []
    assert jobs[1].get("reused_from") is None and jobs[1]["exit_status"] == "succeeded"
    assert (second_dir / "1" / "weights").is_dir() and jobs[1]["mlflow_run_id"] != killed[1]["mlflow_run_id"]
    assert client.get_run(killed[1]["mlflow_run_id"]).info.status == "RUNNING"
    assert children[0].data.tags["reused_from"] == killed[0]["mlflow_run_id"]
    assert "reused_from" not in children[1].data.tags
    assert parent.info.status == "FINISHED" and parent.data.tags["jobs_reused"] == "1"
    summary = json.loads((second_dir / "sweep_summary.json").read_text())
    assert [row["status"] for row in summary["jobs"]] == ["reused", "succeeded"]
    # the killed sweep's parent no longer shows as in progress: its process is gone
    first_parent = json.loads((first_dir / "sweep_run.json").read_text())["parent_run_id"]
    assert client.get_run(first_parent).info.status == "KILLED"
    assert f"parent run {first_parent}" in out.stdout and "marked KILLED" in out.stdout


@pytest.mark.slow
def test_an_optuna_search_is_one_parent_with_a_child_per_trial(tmp_path, private_models_dir):
    out = launch(["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3", *NO_EVAL], cwd=tmp_path,
                 env=env_for(private_models_dir))
    assert out.returncode == 0, out.stderr[-3000:]
    (sweep_dir,) = sweep_dirs(tmp_path)
    client, parent, children = family(tmp_path, sweep_dir)
    _, runs = all_runs(tmp_path)
    assert len(runs) == 4 and sorted(children) == [0, 1, 2]
    assert parent.data.tags["sweeper"] == "optuna" and parent.data.tags["sweep_jobs"] == "3"
    jobs = records(sweep_dir)
    for num, run in children.items():
        parts = run.info.run_name.split()
        assert [p.split("=")[0] for p in parts] == ["lr", "rank", "alpha", "dropout", "method"], run.info.run_name
        assert f"[sweep] job {num + 1}/3 (#{num}) done: {run.info.run_name}" in out.stdout
        assert run.info.run_id == jobs[num]["mlflow_run_id"]
    from omegaconf import OmegaConf

    results = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    best = min(jobs, key=lambda n: jobs[n]["metrics"]["val_loss"])
    assert results.best_value == pytest.approx(jobs[best]["metrics"]["val_loss"])
    assert parent.data.tags["best_run_id"] == children[best].info.run_id and parent.info.status == "FINISHED"
    assert sorted(a.path for a in client.list_artifacts(parent.info.run_id)) == sorted(SUMMARY)
