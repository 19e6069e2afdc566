"""Parallel jobs never race: a joblib sweep on a fresh MLflow store and registry, and the locks behind it
(the SQLite store's schema creation, experiment get-or-create, registry writes) under real concurrent processes.

Each lock test has a control that runs the same workers with the lock taken away and must see the race
break something, so the locked run passing means the lock is what protects it.
"""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from conftest import ROOT, clean_env, launch

FAST = ["trainer.max_steps=2", "output.register_min_steps=1", "evaluation.max_samples=1",
        "evaluation.decoding.max_new_tokens=8", "validation.pytest.enabled=false"]
WORKERS = 4  # processes hitting the same store / registry at once
SPAWN = multiprocessing.get_context("spawn")  # fresh interpreters, like joblib's and submitit's workers


def last_line(text: str) -> str:
    return [line for line in text.splitlines() if line.strip()][-1]


def job_records(cwd: Path) -> dict[int, dict]:
    return {int(p.parent.name): json.loads(p.read_text()) for p in cwd.glob("multirun/*/*/*/run_record.json")}


def stamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.mark.slow
def test_a_joblib_sweep_on_two_workers_tracks_and_registers_every_job(tmp_path):
    # a fresh MLflow store (tmp_path is the working directory: ./mlflow.db) and a fresh models folder: the
    # workers build the builtin model and write the registry at the same time
    models = tmp_path / "models"
    out = launch(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "method=lora",
                  "optimizer.lr=1e-3,2e-3,3e-3", *FAST],
                 cwd=tmp_path, env=clean_env(HF_HUB_OFFLINE="1", THINKER_MODELS_DIR=str(models)))
    assert out.returncode == 0, out.stderr[-4000:]
    assert last_line(out.stdout) == "sweep: 3 of 3 jobs succeeded", out.stdout[-2000:]
    assert "Traceback" not in out.stdout + out.stderr, out.stderr[-4000:]

    records = job_records(tmp_path)
    assert sorted(records) == [0, 1, 2]
    assert [records[n]["exit_status"] for n in range(3)] == ["succeeded"] * 3
    # the launcher really ran two jobs at once: #1 started before #0 had finished
    assert stamp(records[1]["timestamp"]) < stamp(records[0]["finished_at"])

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiments = [e for e in client.search_experiments() if e.name == "thinker"]
    assert len(experiments) == 1
    runs = {r.info.run_id: r for r in client.search_runs([experiments[0].experiment_id])}
    job_runs = [records[n]["mlflow_run_id"] for n in range(3)]
    assert len(set(job_runs)) == 3
    assert [runs[run_id].info.status for run_id in job_runs] == ["FINISHED"] * 3
    assert sorted(float(runs[run_id].data.params["optimizer.lr"]) for run_id in job_runs) == [1e-3, 2e-3, 3e-3]

    from thinker.models.registry import Registry

    entries = Registry(models).entries()
    assert len(entries) == 3
    assert sorted(e.mlflow_run_id for e in entries) == sorted(job_runs)
    assert sorted(Path(e.local_path).parent.name for e in entries) == ["0", "1", "2"]


@pytest.mark.slow
def test_two_runs_started_together_on_a_fresh_store_are_both_tracked(tmp_path, private_models_dir):
    # no sweep parent creates the store first here: two terminals, or two cluster jobs, on one mlflow.db
    env = clean_env(HF_HUB_OFFLINE="1")
    args = ["method=lora", "evaluation.enabled=false", *FAST]
    procs = [subprocess.Popen([sys.executable, str(ROOT / "launch.py"), *args, f"hydra.run.dir=run{n}"],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n in range(2)]
    outputs = [proc.communicate(timeout=600) for proc in procs]
    for proc, (_stdout, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stderr[-4000:]
    records = [json.loads((tmp_path / f"run{n}" / "run_record.json").read_text()) for n in range(2)]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert [client.get_run(r["mlflow_run_id"]).info.status for r in records] == ["FINISHED"] * 2
    assert len([e for e in client.search_experiments() if e.name == "thinker"]) == 1


# ------------------------------------------------------------------ SLURM (submitit), without a cluster

# Stand-ins for SLURM's commands, enough for submitit: `sbatch` keeps the script it was given (to read its
# #SBATCH lines), says `Submitted batch job <id>` and runs every array task in the background with the
# variables SLURM sets; `srun` runs the command with its --output/--error patterns filled in; `sacct` knows
# nothing (submitit then waits for each task's result file, as it does between sacct polls on a cluster).
FAKE_SBATCH = """#!{python}
import os, re, subprocess, sys
from pathlib import Path
here = Path(__file__).parent
script = Path(sys.argv[-1])
count = len(list(here.glob("submitted-*.sh")))
job = str(4200 + count)
(here / f"submitted-{{count}}.sh").write_text(script.read_text())
text = script.read_text()
flags = dict(re.findall(r"^#SBATCH --([\\w-]+)=?(.*)$", text, re.M))
last = int(re.match(r"0-(\\d+)", flags["array"]).group(1)) if "array" in flags else 0
for task in range(last + 1):
    env = {{**os.environ, "SLURM_JOB_ID": str(int(job) + 1 + task), "SLURM_ARRAY_JOB_ID": job,
           "SLURM_ARRAY_TASK_ID": str(task), "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1",
           "SLURM_JOB_NUM_NODES": "1", "SLURM_NODEID": "0", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
           "SLURM_JOB_NODELIST": "localhost", "SLURM_JOB_NAME": flags.get("job-name", "launch"),
           "SLURM_CPUS_PER_TASK": flags.get("cpus-per-task", "1")}}
    if "array" not in flags:
        env.pop("SLURM_ARRAY_JOB_ID"); env.pop("SLURM_ARRAY_TASK_ID"); env["SLURM_JOB_ID"] = job
    subprocess.Popen(["bash", str(script)], env=env, start_new_session=True,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(f"Submitted batch job {{job}}")
"""
FAKE_SRUN = """#!{python}
import os, subprocess, sys
args, files = sys.argv[1:], {{}}
while args and args[0].startswith("--"):
    flag = args.pop(0)
    if flag in ("--output", "--error"):
        files[flag] = args.pop(0)
fill = {{"%A": os.environ.get("SLURM_ARRAY_JOB_ID", ""), "%a": os.environ.get("SLURM_ARRAY_TASK_ID", ""),
        "%j": os.environ["SLURM_JOB_ID"], "%t": "0"}}
def path(pattern):
    for key, value in fill.items():
        pattern = pattern.replace(key, value)
    os.makedirs(os.path.dirname(pattern), exist_ok=True)
    return open(pattern, "a")
out = path(files["--output"])
err = path(files["--error"]) if "--error" in files else out
sys.exit(subprocess.call(args, stdout=out, stderr=err))
"""
FAKE_SACCT = """#!/bin/sh
echo 'JobID|State|NodeList'
"""


def fake_slurm(folder: Path) -> Path:
    folder.mkdir()
    scripts = {"sbatch": FAKE_SBATCH, "srun": FAKE_SRUN, "sacct": FAKE_SACCT, "scancel": "#!/bin/sh\n"}
    for name, text in scripts.items():
        (folder / name).write_text(text.format(python=sys.executable))
        (folder / name).chmod(0o755)
    return folder


@pytest.mark.slow
def test_a_slurm_sweep_runs_each_job_as_an_array_task(tmp_path, private_models_dir):
    bin_dir = fake_slurm(tmp_path / "bin")
    env = clean_env(HF_HUB_OFFLINE="1", PATH=f"{bin_dir}:{clean_env()['PATH']}")
    out = launch(["-m", "hydra/launcher=slurm", "hydra.launcher.gpus_per_node=null",
                  "hydra.launcher.cpus_per_task=2", "hydra.launcher.mem_gb=4", "hydra.launcher.timeout_min=30",
                  "trainer=cpu", "method=lora", "optimizer.lr=1e-3,2e-3", *FAST], cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-4000:]
    assert last_line(out.stdout) == "sweep: 2 of 2 jobs succeeded", out.stdout[-2000:]
    submitted = sorted(bin_dir.glob("submitted-*.sh"))
    assert len(submitted) == 1  # one sbatch array for the whole sweep
    script = submitted[0].read_text()
    for flag in ("--array=0-1%2", "--time=30", "--cpus-per-task=2", "--mem=4GB", "--ntasks-per-node=1",
                 "--nodes=1", "--signal=USR2@120", "--job-name=launch"):
        assert f"#SBATCH {flag}\n" in script, script
    assert "--gpus-per-node" not in script and "--partition" not in script
    records = job_records(tmp_path)
    assert [records[n]["exit_status"] for n in (0, 1)] == ["succeeded"] * 2
    # each job ran in its own array task: submitit's log of each holds that job's own console output
    for n in (0, 1):
        log_text = next(tmp_path.glob(f"multirun/*/*/.submitit/4200_{n}/4200_{n}_0_log.out")).read_text()
        assert str(tmp_path / "multirun") in log_text and f"/{n}/weights" in log_text, log_text[-2000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert [client.get_run(records[n]["mlflow_run_id"]).info.status for n in (0, 1)] == ["FINISHED"] * 2


@pytest.mark.slow
def test_a_submitit_local_sweep_runs(tmp_path, private_models_dir):
    out = launch(["-m", "hydra/launcher=submitit_local", "method=lora", "optimizer.lr=1e-3,2e-3", *FAST],
                 cwd=tmp_path, env=clean_env(HF_HUB_OFFLINE="1"))
    assert out.returncode == 0, out.stderr[-4000:]
    assert last_line(out.stdout) == "sweep: 2 of 2 jobs succeeded", out.stdout[-2000:]
    records = job_records(tmp_path)
    assert [records[n]["exit_status"] for n in (0, 1)] == ["succeeded"] * 2


# ------------------------------------------------------------------ failures that are not config errors

# A Hydra app behind thinker's guarded_main whose jobs fail the ways a parallel sweep can outside a job's own
# error handling: an exception reaching the launcher, a worker process that dies, a job's own SystemExit.
FAILING_APP = """
import os, sys
import hydra
from thinker.launch.entry import guarded_main

def task(cfg):
    if cfg.mode == "raise":
        raise RuntimeError("the store broke")
    if cfg.mode == "die":
        os._exit(9)
    if cfg.mode == "exit":
        raise SystemExit(4)

if __name__ == "__main__":
    guarded_main(hydra.main(config_path=None, version_base="1.3")(task))
"""


@pytest.mark.parametrize(("mode", "code", "says"), [
    ("raise", 1, "RuntimeError: the store broke"),
    ("die", 1, "TerminatedWorkerError: A worker process managed by the executor was unexpectedly terminated"),
    ("exit", 4, None),
])
def test_a_failing_parallel_job_is_never_reported_as_a_config_error(tmp_path, mode, code, says):
    app = tmp_path / "app.py"
    app.write_text(FAILING_APP)
    out = subprocess.run([sys.executable, str(app), "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                          f"+mode={mode}", "+x=1,2"], cwd=tmp_path, env=clean_env(), capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == code, out.stderr[-3000:]
    assert "could not be composed" not in out.stderr and "config composition" not in out.stderr
    assert "fix the override" not in out.stderr
    if says is not None:
        assert last_line(out.stderr).startswith(f"[thinker] error: {says}"), out.stderr[-3000:]
        assert "(not the config: it composed)" in last_line(out.stderr)


def test_a_bad_override_in_a_parallel_sweep_is_still_a_config_error(tmp_path):
    app = tmp_path / "app.py"
    app.write_text(FAILING_APP)
    out = subprocess.run([sys.executable, str(app), "-m", "hydra/launcher=joblib", "hydra/launcher/nope=x",
                          "+mode=raise"], cwd=tmp_path, env=clean_env(), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 2, out.stderr[-3000:]
    assert last_line(out.stderr).startswith("[thinker] error: ") and "fix the override" in last_line(out.stderr)


def test_masking_a_log_line_survives_another_thread_unsetting_a_variable():
    """MLflow's telemetry thread sets and unsets _MLFLOW_TELEMETRY_SESSION_ID while a job logs; every log line
    is masked by reading the environment, which once failed a sweep's job with KeyError."""
    import os
    import threading
    import time

    from thinker.tracking.secrets import secret_env_values

    stop = threading.Event()

    def flip() -> None:
        while not stop.is_set():
            os.environ["_THINKER_TEST_FLIP"] = "x"
            os.environ.pop("_THINKER_TEST_FLIP", None)

    def errors(read) -> int:
        count, end = 0, time.monotonic() + 1.0
        while time.monotonic() < end:
            try:
                read()
            except (KeyError, RuntimeError):
                count += 1
        return count

    thread = threading.Thread(target=flip)
    thread.start()
    try:
        naive = errors(lambda: [value for _name, value in os.environ.items()])  # the control: what it did
        masked = errors(secret_env_values)
    finally:
        stop.set()
        thread.join()
    assert naive > 0, "the race did not show: the control read the environment without an error"
    assert masked == 0


# ------------------------------------------------------------------ the locks, under real concurrency


def _open_store(uri: str, locked: bool, barrier, results) -> None:
    """One job's first contact with the store: open it (creating or migrating the schema), get-or-create the
    experiment, start and finish a run."""
    import mlflow.tracking  # noqa: F401  (imported before the barrier: the race is on the store)

    from thinker.tracking import mlflow_run

    if not locked:
        from contextlib import nullcontext

        mlflow_run.store_lock = lambda uri: nullcontext()  # the control: the same code without the lock
    barrier.wait(timeout=120)
    try:
        client = mlflow_run.get_client(uri)
        experiment_id = mlflow_run.ensure_experiment(client, "thinker")
        run = client.create_run(experiment_id)
        client.log_metric(run.info.run_id, "loss", 1.0, step=1)
        client.set_terminated(run.info.run_id, "FINISHED")
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put(f"{type(exc).__name__}: {str(exc)[:200]}")


def _add_entries(folder: str, worker: int, count: int, locked: bool, barrier, results) -> None:
    """Register `count` fine-tunes as fast as possible, as parallel jobs finishing together do."""
    from thinker.models import registry

    if not locked:
        from contextlib import nullcontext

        registry.exclusive_lock = lambda path: nullcontext()  # the control: the same code without the lock
    reg = registry.Registry(Path(folder))
    barrier.wait(timeout=120)
    try:
        for i in range(count):
            reg.add(lambda entries, i=i: registry.RegistryEntry(
                model_name=f"job{worker}-{i}", model_id="builtin", source="finetune", architecture="qwen2"))
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put(f"{type(exc).__name__}: {str(exc)[:200]}")


def run_together(target, args_for) -> list[str]:
    """Start WORKERS spawned processes that wait on one barrier, then return what each reported."""
    barrier, results = SPAWN.Barrier(WORKERS), SPAWN.Queue()
    processes = [SPAWN.Process(target=target, args=(*args_for(n), barrier, results)) for n in range(WORKERS)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=300) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    assert [process.exitcode for process in processes] == [0] * WORKERS  # every worker got past the barrier
    return outcomes


def store_race(tmp_path: Path, locked: bool) -> tuple[list[str], str]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return run_together(_open_store, lambda n: (uri, locked)), uri


@pytest.mark.slow
def test_jobs_opening_a_fresh_store_at_once_all_succeed(tmp_path):
    outcomes, uri = store_race(tmp_path, locked=True)
    assert outcomes == ["ok"] * WORKERS
    import sqlite3

    from mlflow.store.db.utils import _get_latest_schema_revision
    from mlflow.tracking import MlflowClient

    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        head = _get_latest_schema_revision()  # every migration ran, once
        assert db.execute("select version_num from alembic_version").fetchall() == [(head,)]
    client = MlflowClient(tracking_uri=uri)
    experiments = [e for e in client.search_experiments() if e.name == "thinker"]
    assert len(experiments) == 1
    runs = client.search_runs([experiments[0].experiment_id])
    assert len(runs) == WORKERS and {r.info.status for r in runs} == {"FINISHED"}
    assert (tmp_path / "mlflow.db.lock").is_file()  # the lock lives beside the store


@pytest.mark.slow
def test_without_the_store_lock_the_same_workers_break_the_schema(tmp_path):
    """The control: MLflow's own schema creation races, so the test above would fail without store_lock."""
    failures = []
    for attempt in range(3):  # the race is near certain with 4 processes; a few tries make it certain enough
        outcomes, _ = store_race(tmp_path / str(attempt), locked=False)
        failures = [o for o in outcomes if o != "ok"]
        if failures:
            break
    assert failures, "no worker failed without the lock: MLflow may serialise its schema creation itself now"


def registry_race(tmp_path: Path, locked: bool, count: int = 15) -> tuple[list[str], list[str]]:
    from thinker.models.registry import Registry

    outcomes = run_together(_add_entries, lambda n: (str(tmp_path), n, count, locked))
    return outcomes, [e.model_name for e in Registry(tmp_path).entries()]


@pytest.mark.slow
def test_concurrent_registry_writers_lose_no_entry(tmp_path):
    outcomes, names = registry_race(tmp_path, locked=True)
    assert outcomes == ["ok"] * WORKERS
    assert sorted(names) == sorted(f"job{w}-{i}" for w in range(WORKERS) for i in range(15))


@pytest.mark.slow
def test_without_the_registry_lock_concurrent_writers_lose_entries(tmp_path):
    """The control: unlocked read-modify-write loses entries, so the test above would fail without the lock."""
    lost = 0
    for attempt in range(3):
        outcomes, names = registry_race(tmp_path / str(attempt), locked=False)
        lost = WORKERS * 15 - len(names)
        if lost or any(o != "ok" for o in outcomes):
            break
    assert lost > 0, "no entry was lost without the lock"
