"""Which checkpoint resume=true continues from, what it tidies, the command it prints, what it logs again.

Fast: the checkpoints here are real torch files shaped like Lightning's (global_step and ModelCheckpoint's
state), damaged as a kill or a full disk damages them; no training. tests/test_resume_faults.py does the
same to the checkpoints of real runs and resumes them.
"""

from __future__ import annotations

import logging
import os
import shlex

import pytest
import torch

from thinker.errors import ThinkerError

CALLBACK = "ModelCheckpoint{'monitor': 'step', 'mode': 'max', 'every_n_train_steps': 2}"


def save_checkpoint(path, step, keeps, last=True):
    """A checkpoint recorded at `step` whose ModelCheckpoint state keeps the periodic files `keeps`."""
    folder = path.parent
    state = {"best_k_models": {str(folder / name): torch.tensor(int(name[4:10])) for name in keeps},
             "last_model_path": str(folder / "last.ckpt") if last else "", "dirpath": str(folder)}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": step, "state_dict": {"w": torch.full((64, 64), float(step))},
                "callbacks": {CALLBACK: state}}, path)


@pytest.fixture
def run_dir(tmp_path):
    (tmp_path / "run_record.json").write_text("{}")  # the pipeline has checked it is the interrupted run's
    return tmp_path


def test_resume_takes_the_highest_recorded_step_that_loads_and_tidies_the_folder(run_dir, caplog):
    from thinker.backends.local.resume import read_checkpoint, resume_checkpoint

    ckpts = run_dir / "checkpoints"
    save_checkpoint(ckpts / "step000002.ckpt", 2, ["step000002.ckpt"])
    save_checkpoint(ckpts / "step000004.ckpt", 4, ["step000002.ckpt", "step000004.ckpt"])
    good = (ckpts / "step000004.ckpt").read_bytes()
    (ckpts / "last.ckpt").write_bytes(good[: len(good) // 2])  # torn: a kill or a full disk mid-write
    (ckpts / ".last.ckpt.k2j4x9.tmp").write_bytes(good[:1000])  # what a kill inside atomic_write leaves
    save_checkpoint(ckpts / "step000002-v1.ckpt", 2, ["step000002-v1.ckpt"])  # a stale copy nothing tracks
    future = ckpts.stat().st_mtime + 3600
    os.utime(ckpts / "step000002.ckpt", (future, future))  # the newest file is not the newest checkpoint

    with caplog.at_level(logging.INFO, logger="thinker"):
        chosen = resume_checkpoint(run_dir)

    assert chosen == ckpts / "last.ckpt" and read_checkpoint(chosen).step == 4
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.ckpt", "step000002.ckpt", "step000004.ckpt"]
    assert (ckpts / "step000004.ckpt").read_bytes() == good
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(ckpts / "last.ckpt") in warnings[0] and "step000004.ckpt" in warnings[0]
    assert f"resuming from step 4 ({ckpts / 'step000004.ckpt'})" in caplog.text


def test_a_kill_between_the_periodic_checkpoint_and_last_ckpt_resumes_from_the_periodic_one(run_dir, caplog):
    from thinker.backends.local.resume import read_checkpoint, resume_checkpoint

    ckpts = run_dir / "checkpoints"
    save_checkpoint(ckpts / "step000010.ckpt", 10, ["step000010.ckpt"], last=False)
    with caplog.at_level(logging.INFO, logger="thinker"):
        chosen = resume_checkpoint(run_dir)
    assert read_checkpoint(chosen).step == 10 and "resuming from step 10" in caplog.text
    # resumed through last.ckpt: Lightning never deletes the file it resumed from, and last.ckpt is rewritten
    assert chosen.name == "last.ckpt" and (ckpts / "step000010.ckpt").is_file()


def test_no_loadable_checkpoint_is_one_error_line_naming_the_folder_and_how_to_start_over(run_dir):
    from thinker.backends.local.resume import resume_checkpoint

    ckpts = run_dir / "checkpoints"
    ckpts.mkdir()
    (ckpts / "last.ckpt").write_bytes(b"PK\x03\x04" + b"\0" * 500)
    (ckpts / "step000004.ckpt").write_bytes(b"")
    with pytest.raises(ThinkerError) as info:
        resume_checkpoint(run_dir)
    message = str(info.value)
    assert "\n" not in message and str(ckpts) in message and "last.ckpt" in message
    assert "step000004.ckpt" in message and f"delete {ckpts}" in message and "drop resume=true" in message


def test_a_run_killed_before_its_first_checkpoint_restarts_and_loses_its_half_written_one(run_dir, caplog):
    from thinker.backends.local.resume import resume_checkpoint

    ckpts = run_dir / "checkpoints"
    ckpts.mkdir()
    (ckpts / ".step000002.ckpt.a1b2c3.tmp").write_bytes(b"x" * 1_081_344)
    with caplog.at_level(logging.INFO, logger="thinker"):
        assert resume_checkpoint(run_dir) is None
    assert "restarts from step 0" in caplog.text and list(ckpts.iterdir()) == []


def test_the_interruption_prints_the_runs_own_command_quoted_and_masked(tmp_path, monkeypatch):
    from thinker.tracking.resume_command import resume_command
    from thinker.tracking.run_record import RECORD_NAME, RunRecord

    secret = "SECRETtokshort99"
    overrides = ["method=lora", "data.path=my data.jsonl", f"+provider.options.token={secret}",
                 "hydra.run.dir=old", "resume=true", "trainer.max_steps=24"]
    run_dir = tmp_path / "my run"
    RunRecord(path=run_dir / RECORD_NAME, overrides=overrides).write()
    monkeypatch.setattr("sys.argv", [str(tmp_path / "launch.py")])
    monkeypatch.chdir(tmp_path)
    command = resume_command(run_dir)
    assert secret not in command
    assert shlex.split(command) == ["python", "launch.py", "method=lora", "data.path=my data.jsonl",
                                    "+provider.options.token=***", "trainer.max_steps=24",
                                    f"hydra.run.dir={run_dir}", "resume=true"]


def test_a_resumed_logger_logs_each_step_once(tmp_path):
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from thinker.tracking.mlflow_logger import BatchedMlflowLogger, logged_steps

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("x", artifact_location=str(tmp_path / "a"))).info.run_id
    # the interrupted run logged steps 1-5 and was killed; its checkpoint is at step 4
    client.log_batch(run_id, metrics=[Metric("train_loss", 10.0 - s, 0, s) for s in range(1, 6)])
    logger = BatchedMlflowLogger(client, run_id, logged_through=logged_steps(client, run_id))
    for step in range(5, 9):
        logger.log_metrics({"train_loss": 10.0 - step, "val_loss": 1.0}, step=step)
    logger.finalize("success")
    assert [m.step for m in client.get_metric_history(run_id, "train_loss")] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [m.step for m in client.get_metric_history(run_id, "val_loss")] == [5, 6, 7, 8]
