"""Training progress: the bar's final frame says what the run did, and a piped log gets a line every few seconds."""

from __future__ import annotations

import io
import logging
import re

import pytest
from conftest import clean_env, launch


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_lines_come_at_the_interval_with_loss_speed_and_time_left(caplog):
    from thinker.backends.progress_lines import ProgressLines

    clock = FakeClock()
    lines = ProgressLines(total=24, every_s=10, done=4, enabled=True, clock=clock)
    caplog.set_level(logging.INFO, logger="thinker")
    clock.now += 9.9
    assert lines.update(5, 7.9, 300.0) is None  # not 10 s yet
    clock.now += 0.1
    # 2 steps of this run took 10 s: 18 more take about 90 s
    assert lines.update(6, 7.91234, 310.4) == "step 6/24: loss 7.9123, 310 tok/s, 0:00:10 so far, about 0:01:30 left"
    clock.now += 5
    assert lines.update(7, 7.8, 310.0) is None  # 5 s since the last line
    clock.now += 25
    assert lines.update(24, 7.5, 320.0) == "step 24/24: loss 7.5000, 320 tok/s, 0:00:40 so far"  # done: no estimate
    assert [r.getMessage() for r in caplog.records if r.name == "thinker"] == [
        "step 6/24: loss 7.9123, 310 tok/s, 0:00:10 so far, about 0:01:30 left",
        "step 24/24: loss 7.5000, 320 tok/s, 0:00:40 so far"]


def test_no_progress_lines_in_a_terminal_or_at_interval_zero(monkeypatch):
    from thinker.backends import progress_lines
    from thinker.backends.progress_lines import ProgressLines

    clock = FakeClock()
    assert ProgressLines(10, every_s=0, enabled=True, clock=clock).enabled is False
    monkeypatch.setattr(progress_lines, "attended_terminal", lambda: True)
    assert ProgressLines(10, every_s=5, clock=clock).enabled is False
    monkeypatch.setattr(progress_lines, "attended_terminal", lambda: False)
    assert ProgressLines(10, every_s=5, clock=clock).enabled is True


def test_the_tinker_loop_logs_progress_lines_too(caplog):
    from types import SimpleNamespace

    from thinker.backends.tinker.loop import step_progress

    caplog.set_level(logging.INFO, logger="thinker")
    with step_progress(3, 0, every_s=1e-9) as advance:
        advance(SimpleNamespace(step=1, train_loss=2.5, tokens_per_sec=1000.0))
    assert any(r.getMessage().startswith("step 1/3: loss 2.5000, 1,000 tok/s") for r in caplog.records)


def fit_tiny(callbacks, max_steps=6, max_epochs=3):
    """A 2-parameter model on 4 batches an epoch: max_steps=6 stops in the middle of the second epoch."""
    import lightning.pytorch as pl
    import torch

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)
            self.tokens_per_sec = 123.0

        def training_step(self, batch, batch_idx):
            loss = self.layer(batch[0]).pow(2).mean()
            self.log("loss", loss, prog_bar=True)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    torch.manual_seed(0)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2)), batch_size=2)
    trainer = pl.Trainer(max_steps=max_steps, max_epochs=max_epochs, logger=False, enable_checkpointing=False,
                         enable_model_summary=False, callbacks=callbacks, accelerator="cpu", devices=1)
    trainer.fit(Tiny(), data)
    return trainer


@pytest.fixture
def console_text():
    import rich

    buffer = io.StringIO()
    yield buffer
    rich.reconfigure()  # the bar reconfigured rich's global console to write into the buffer


def test_the_final_frame_of_a_finished_run_shows_its_epochs_1_based_and_no_time_left(console_text):
    from thinker.backends.local.progress import StepProgressBar

    bar = StepProgressBar(console_kwargs={"file": console_text, "width": 200, "force_terminal": False})
    fit_tiny([bar])
    frame = console_text.getvalue().strip().splitlines()[-1]
    # the run stopped at step 6 = batch 2 of the second of 2 epochs it started (of max_epochs=3): its bar is full
    assert re.match(r"Epoch 2/2 +━+ 2/2 \d:\d\d:\d\d ", frame), frame
    assert "•" not in frame, frame  # Lightning's bar showed `Epoch 1/2 ... 2/4 0:00:00 • 0:00:01` here
    assert "v_num" not in frame and "tok/s: 123" in frame


def test_planned_epochs_follow_max_steps_or_max_epochs():
    from types import SimpleNamespace

    from thinker.backends.local.progress import planned_epochs

    def trainer(max_steps, max_epochs, per_epoch=17):
        return SimpleNamespace(max_steps=max_steps, max_epochs=max_epochs, num_training_batches=per_epoch)

    assert planned_epochs(trainer(51, 3)) == 3  # trainer=cpu on the sample data
    assert planned_epochs(trainer(24, 3, per_epoch=34)) == 1  # trainer=quick
    assert planned_epochs(trainer(100, 3)) == 3  # max_epochs stops it first
    assert planned_epochs(trainer(40, -1)) == 3  # pretraining with max_steps: unbounded epochs
    assert planned_epochs(trainer(-1, 2)) == 2


def test_progress_log_lines_come_from_the_lightning_loop(caplog):
    from thinker.backends.local.progress import ProgressLogLines

    caplog.set_level(logging.INFO, logger="thinker")
    fit_tiny([ProgressLogLines(every_s=1e-9, enabled=True)], max_steps=3)
    lines = [r.getMessage() for r in caplog.records if r.name == "thinker"]
    assert [line.split(":")[0] for line in lines] == ["step 1/3", "step 2/3", "step 3/3"]
    assert all(re.search(r"loss \d+\.\d{4}, 123 tok/s, \d:\d\d:\d\d so far", line) for line in lines), lines


@pytest.mark.slow
def test_a_piped_run_prints_progress_lines_between_held_out_evaluations(tmp_path, private_models_dir):
    """stdout is a pipe here, as in a CI log: the lines come at trainer.progress_every_s."""
    out = launch(["method=lora", "trainer.max_steps=4", "trainer.evaluations=1", "data.max_examples=32",
                  "trainer.max_seq_length=256", "trainer.progress_every_s=0.001", "validation.pytest.enabled=false",
                  "logger=none", "evaluation.enabled=false", "output.register=false", "hydra.run.dir=run"],
                 cwd=tmp_path, env=clean_env(THINKER_MODELS_DIR=str(private_models_dir), HF_HUB_OFFLINE="1"))
    assert out.returncode == 0, out.stderr[-3000:]
    steps = re.findall(r"step (\d)/4: loss \d+\.\d{4}, [\d,]+ tok/s, \d:\d\d:\d\d so far", out.stdout)
    assert steps == ["1", "2", "3", "4"], out.stdout[-3000:]
    assert "about" in out.stdout and "left" in out.stdout  # an estimate while steps remain
    # the final frame: 1-based epochs of what was planned, no remaining time
    assert re.search(r"Epoch 1/1 +━+ 4/4 \d:\d\d:\d\d [^•\n]*\n", out.stdout), out.stdout[-3000:]
