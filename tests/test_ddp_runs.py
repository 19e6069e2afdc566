"""Real 2-process DDP on the CPU (gloo) through launch.py: Lightning starts rank 1 by re-running the command
line, torchrun starts both ranks itself. Rank 0 alone validates, tracks in MLflow (a SQLite store in the test's
folder), registers, evaluates and records; the ranks train disjoint shards, and the result is the one a single
process gets with the same global batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, clean_env, compose, launch

pytestmark = [pytest.mark.slow]

# 24 examples pack into 10 rows: 2 ranks x 5 rows a epoch, 2 steps of 4 + 1 rows a rank; 4 steps = 2 epochs
TRAINING = ["method=lora", "data.max_examples=24", "trainer.max_steps=4", "trainer.evaluations=2"]
QUICK_EVAL = ["evaluation.max_samples=1", "evaluation.decoding.max_new_tokens=8", "evaluation.compare_base=false",
              "evaluation.embedding.enabled=false"]
# Measured on 2 CPU cores after these 4 steps: final train_loss 7.9532601 (DDP) vs 7.9532606 (one process), a
# difference of 5e-7 (7e-8 relative: the ranks' partial sums add in another order); val_loss identical. The
# tolerance leaves room for other CPUs' kernels, and is still far below what one training step changes (~1e-2).
TOLERANCE = 1e-5  # relative


def records_under(folder: Path) -> list[Path]:
    """Run records in run folders (MLflow's artifact copies under mlartifacts/ left out)."""
    return sorted(p for p in folder.rglob("run_record.json") if "mlartifacts" not in p.parts)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, private_models_dir):
    """python launch.py trainer=ddp_cpu: the whole pipeline, gate included, with Lightning starting rank 1."""
    cwd = tmp_path_factory.mktemp("ddp")
    out = launch(["trainer=ddp_cpu", *TRAINING, *QUICK_EVAL, "output.register_min_steps=1"], cwd=cwd,
                 env=clean_env(THINKER_MODELS_DIR=str(private_models_dir), HF_HUB_OFFLINE="1"), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    (record_path,) = records_under(cwd)
    return cwd, out, record_path.parent, json.loads(record_path.read_text())


def test_only_rank_0_gates_tracks_registers_evaluates_and_records(ddp_run, private_models_dir):
    from mlflow.tracking import MlflowClient

    cwd, out, run_dir, record = ddp_run
    assert record["exit_status"] == "succeeded" and record["stages"]["validate"]["pytest"] == "passed"
    # one MLflow run, whose metrics were logged once per step (rank 1 has no tracker)
    client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("thinker").experiment_id])
    assert [r.info.run_id for r in runs] == [record["mlflow_run_id"]] and runs[0].info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(record["mlflow_run_id"], "train_loss")] == [1, 2, 3, 4]
    # one registry entry, for that run
    entries = json.loads((private_models_dir / "registry.json").read_text())["models"]
    assert [(e["mlflow_run_id"], e["local_path"]) for e in entries] == [(record["mlflow_run_id"],
                                                                         str(run_dir / "weights"))]
    assert record["stages"]["eval"]["status"] == "passed"

    # rank 1 wrote only its own log into the run folder; rank 0's launch.log has none of its lines
    assert {p.name for p in run_dir.iterdir()} == {".hydra", "launch.log", "run_record.json", "checkpoints",
                                                  "weights", "eval", "train_ddp_process_1.log"}
    rank1 = (run_dir / "train_ddp_process_1.log").read_text()
    assert "rank 1 of a data-parallel run" in rank1 and "GLOBAL_RANK: 1" in rank1
    for rank_0_only in ("validating", "pytest gate", "MLflow run", "registered", "evaluating", "run record"):
        assert rank_0_only not in rank1, rank_0_only
    assert "rank 1 of a data-parallel run" not in (run_dir / "launch.log").read_text()
    # both ranks print into the same console (Lightning's child inherits it): the progress shows once
    console = out.stdout + out.stderr
    assert console.count("step 2/4: held-out loss") == 1 and console.count("pytest gate passed") == 1
    assert console.count("GLOBAL_RANK: 1") == 0


def test_the_two_ranks_trained_disjoint_shards_covering_every_epoch(ddp_run):
    _cwd, _out, _run_dir, record = ddp_run
    shards = record["stages"]["train"]["data_parallel"]
    assert shards["ranks"] == 2 and shards["global_batch_rows"] == 8
    # gathered from both ranks' loaders at the end of the run: no (epoch, row) trained by both
    assert shards["rows_trained_by_several_ranks"] == 0
    assert shards["rows_trained_per_rank"] == [shards["rows_per_epoch"]] * 2  # half of each of 2 epochs each
    assert record["metrics"]["optimizer_steps"] == 4


def test_ddp_matches_one_process_with_the_same_global_batch(ddp_run, tmp_path):
    """trainer=cpu trains 8 rows a micro-batch in one process, trainer=ddp_cpu 4 on each of 2 ranks."""
    from thinker.backends.local.backend import train

    _cwd, _out, _run_dir, record = ddp_run
    cfg = compose(["trainer=cpu", *TRAINING, "logger=none", f"output.dir={tmp_path}"])
    single = train(cfg, tmp_path, None).metrics
    ddp = record["metrics"]
    assert single["trained_tokens"] == ddp["trained_tokens"] and single["optimizer_steps"] == ddp["optimizer_steps"]
    for name in ("train_loss", "val_loss"):
        assert abs(single[name] - ddp[name]) <= TOLERANCE * abs(single[name]), (name, single[name], ddp[name])


def test_ranks_started_by_torchrun_train_the_same_run(ddp_run, tmp_path, private_models_dir):
    """torchrun starts both ranks from the top of launch.py; they share the run folder named on the command line."""
    _cwd, _out, _run_dir, lightning_record = ddp_run
    run_dir = tmp_path / "run"
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(ROOT / "launch.py"), "trainer=ddp_cpu", *TRAINING, f"hydra.run.dir={run_dir}", "logger=none",
         "validation.pytest.enabled=false", "evaluation.enabled=false", "output.register=false"],
        cwd=tmp_path, env=clean_env(THINKER_MODELS_DIR=str(private_models_dir), HF_HUB_OFFLINE="1"),
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert records_under(tmp_path) == [run_dir / "run_record.json"]
    assert {p.name for p in run_dir.iterdir()} == {".hydra", "launch.log", "run_record.json", "checkpoints",
                                                  "weights", "rank_1.log"}
    assert "rank 1 of a data-parallel run" in (run_dir / "rank_1.log").read_text()
    record = json.loads((run_dir / "run_record.json").read_text())
    assert record["stages"]["train"]["data_parallel"]["rows_trained_by_several_ranks"] == 0
    # the same training as the ranks Lightning started (same config fingerprint)
    assert record["config_fingerprint"] == lightning_record["config_fingerprint"]
    assert record["metrics"]["train_loss"] == pytest.approx(lightning_record["metrics"]["train_loss"], rel=TOLERANCE)


def test_an_interrupted_ddp_run_resumes_to_the_same_result(ddp_run, tmp_path, private_models_dir):
    """Ctrl+C reaches both ranks (one process group); both stop after the same step, rank 0 saves last.ckpt, and
    resume=true continues both ranks from it to what the uninterrupted run reached."""
    _cwd, _out, _run_dir, straight = ddp_run
    run_dir = tmp_path / "run"
    args = [sys.executable, str(ROOT / "launch.py"), "trainer=ddp_cpu", *TRAINING, f"hydra.run.dir={run_dir}",
            "logger=none", "validation.pytest.enabled=false", "evaluation.enabled=false", "output.register=false"]
    env = clean_env(THINKER_MODELS_DIR=str(private_models_dir), HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    console = []
    for line in proc.stdout:  # the held-out evaluation after step 2 of 4
        console.append(line)
        if "step 2/4: held-out loss" in line:
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl+C does: every process of the group
            break
    console += proc.stdout.readlines()
    assert proc.wait(timeout=120) == 130, "".join(console)[-3000:]
    interrupted = json.loads((run_dir / "run_record.json").read_text())
    assert interrupted["exit_status"] == "interrupted" and (run_dir / "checkpoints" / "last.ckpt").exists()
    assert sum("[thinker] error: training stopped by SIGINT" in line for line in console) == 1  # rank 0 only

    resumed = subprocess.run([*args, "resume=true"], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = json.loads((run_dir / "run_record.json").read_text())
    assert record["metrics"]["optimizer_steps"] == 4 and record["history"][0]["exit_status"] == "interrupted"
    # this invocation trained only the steps after the checkpoint, still on disjoint shards
    shards = record["stages"]["train"]["data_parallel"]
    assert shards["rows_trained_by_several_ranks"] == 0 and sum(shards["rows_trained_per_rank"]) < 2 * 10
    for name in ("train_loss", "val_loss"):
        assert record["metrics"][name] == pytest.approx(straight["metrics"][name], rel=TOLERANCE), name
