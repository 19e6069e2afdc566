"""resume=true after the faults a kill leaves in a real run's checkpoint folder, through launch.py.

One run is interrupted (SIGINT: it saves last.ckpt at the step it stopped at, logs every step to MLflow and
prints the command that continues it). Each test puts that folder back as it was (with its mlflow.db, at the
same path: checkpoints record their folder), damages the checkpoints as a kill -9 would have
(tests/test_checkpoint_resume.py has the cases without training), resumes with the printed command, and
checks the step it resumed from, the one MLflow run, one train_loss point per step and a tidy checkpoint
folder. Pretraining gets the same; a Tinker run's interruption prints its command too.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys

import pytest
import torch
from conftest import clean_env, printed_command
from test_launch_runs import client_for, only_run, read_until, start_launch

pytestmark = pytest.mark.slow

STEPS = 12
ARGS = ["method=lora", f"trainer.max_steps={STEPS}", "trainer.epochs=10", "data.max_examples=32",
        "trainer.max_seq_length=256", "trainer.batch_size=4", "trainer.evaluations=6", "trainer.save_total_limit=2",
        "validation.pytest.enabled=false", "evaluation.enabled=false"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return clean_env(THINKER_MODELS_DIR=str(tmp_path_factory.getbasetemp() / "shared-models"), HF_HUB_OFFLINE="1")


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, env):
    """(the folder holding mlflow.db and the interrupted run/, its output)."""
    cwd = tmp_path_factory.mktemp("interrupted")
    proc = start_launch([*ARGS, "hydra.run.dir=run"], cwd, env)
    lines = read_until(proc, f"step 4/{STEPS}: held-out loss")  # checkpoints at 2 and 4 are on disk
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=240)
    output = "".join(lines) + rest
    assert proc.returncode == 130, output[-3000:]
    shutil.copytree(cwd, cwd.parent / "pristine")
    return cwd, output


def restored(interrupted):
    """The interrupted run's folder as the interruption left it."""
    cwd = interrupted[0]
    shutil.rmtree(cwd)
    shutil.copytree(cwd.parent / "pristine", cwd)
    return cwd, cwd / "run" / "checkpoints"


def step_of(path):
    return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["global_step"])


def periodic(ckpts):
    """The periodic checkpoints, oldest step first."""
    return sorted(ckpts.glob("step*.ckpt"), key=step_of)


def resume(interrupted, env):
    """The printed command, as a user pastes it."""
    words = printed_command(interrupted[1])
    return subprocess.run([sys.executable, *words[1:]], cwd=interrupted[0], env=env, capture_output=True, text=True,
                          timeout=600)


def assert_one_run_with_one_point_per_step(cwd, run_id):
    client, runs = only_run(cwd)
    assert [(r.info.run_id, r.info.status) for r in runs] == [(run_id, "FINISHED")]
    steps = [m.step for m in client_for(cwd).get_metric_history(run_id, "train_loss")]
    assert sorted(steps) == list(range(1, STEPS + 1)), steps  # every step once: none twice, none lost


def assert_tidy(ckpts):
    assert not [p for p in ckpts.parent.rglob("*") if p.name.endswith(".tmp")]
    names = sorted(p.name for p in ckpts.iterdir())
    assert names == ["last.ckpt", f"step{STEPS - 2:06d}.ckpt", f"step{STEPS:06d}.ckpt"], names  # save_total_limit=2


def test_the_interruption_prints_the_command_that_continues_the_run(interrupted):
    output = interrupted[1]
    words = printed_command(output)
    assert words[0] == "python" and words[1].endswith("launch.py")
    assert words[2:] == [*ARGS, f"hydra.run.dir={interrupted[0] / 'run'}", "resume=true"]
    assert "weights_only" not in output and "Traceback" not in output


def test_a_kill_between_the_periodic_checkpoint_and_last_ckpt_resumes_from_the_periodic_one(
        interrupted, env):
    cwd, ckpts = restored(interrupted)
    run_id = only_run(cwd)[1][0].info.run_id
    older, newest = periodic(ckpts)
    resumed_at = step_of(newest)
    last = (ckpts / "last.ckpt").read_bytes()
    (ckpts / "last.ckpt").unlink()  # killed after the periodic checkpoint was complete, before last.ckpt
    (ckpts / ".last.ckpt.q8v2m1.tmp").write_bytes(last[:1_081_344])  # ... inside the write of last.ckpt
    shutil.copyfile(older, ckpts / f"{older.stem}-v1.ckpt")  # a stale copy that nothing tracks
    older.touch()  # the newest file is not the newest checkpoint
    out = resume(interrupted, env)
    output = out.stdout + out.stderr
    assert out.returncode == 0, output[-3000:]
    assert f"resuming from step {resumed_at} ({newest})" in output
    assert "weights_only" not in output
    assert_one_run_with_one_point_per_step(cwd, run_id)
    assert_tidy(ckpts)


def test_a_torn_last_ckpt_falls_back_to_the_newest_complete_checkpoint_with_a_warning(interrupted, env):
    cwd, ckpts = restored(interrupted)
    run_id = only_run(cwd)[1][0].info.run_id
    newest = periodic(ckpts)[-1]
    resumed_at = step_of(newest)
    last = ckpts / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    out = resume(interrupted, env)
    output = out.stdout + out.stderr
    assert out.returncode == 0, output[-3000:]
    warning = next(line for line in output.splitlines() if f"{last} does not load" in line)
    assert f"continuing from {newest.name} (step {resumed_at})" in warning
    assert f"resuming from step {resumed_at} ({newest})" in output and "Traceback" not in output
    assert_one_run_with_one_point_per_step(cwd, run_id)
    assert_tidy(ckpts)


def test_pretraining_resumes_from_the_newest_complete_checkpoint_too(tmp_path, env):
    args = ["experiment=cognate_pretrain", "trainer.max_steps=6", "trainer.evaluations=3", "trainer.epochs=10",
            "trainer.max_seq_length=128", "trainer.batch_size=4", "data.max_examples=64",
            "validation.pytest.enabled=false", "hydra.run.dir=pre"]
    proc = start_launch(args, tmp_path, env)
    lines = read_until(proc, "step 2: val_loss")  # the step-2 checkpoint is on disk
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=240)
    output = "".join(lines) + rest
    assert proc.returncode == 130 and "weights_only" not in output, output[-3000:]
    ckpts = tmp_path / "pre" / "checkpoints"
    newest = periodic(ckpts)[-1]
    resumed_at = step_of(newest)
    last = ckpts / "last.ckpt"
    last.write_bytes(last.read_bytes()[:4096])
    client = client_for(tmp_path)
    (run,) = client.search_runs([client.get_experiment_by_name("cognate_pretrain").experiment_id])

    words = printed_command(output)
    out = subprocess.run([sys.executable, *words[1:]], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    output = out.stdout + out.stderr
    assert out.returncode == 0, output[-3000:]
    assert f"{last} does not load" in output and f"resuming from step {resumed_at} ({newest})" in output
    assert "weights_only" not in output
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert sorted(steps) == list(range(1, 7)), steps
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
