"""The one Lightning run fine-tuning and pretraining share (thinker.backends.local.lightning_run): the Trainer
follows trainer.* for both, pretraining in one process whatever trainer.devices says."""

from __future__ import annotations

from conftest import compose

from thinker.backends.local.lightning_run import LightningRun


def _run(tmp_path, overrides, **options):
    cfg = compose([*overrides, "logger=none"])
    return LightningRun(cfg, tmp_path, None, steps=4, every=2, steps_per_epoch=2, has_val=True, max_epochs=1,
                        **options)


def test_pretraining_trains_in_the_trainers_precision_on_one_device(tmp_path):
    run = _run(tmp_path, ["experiment=cognate_pretrain", "trainer.precision=bf16", "trainer.devices=2"],
               single_process=True)
    assert run.trainer.precision == "bf16-mixed"
    assert run.trainer.num_devices == 1 and run.trainer.world_size == 1


def test_fine_tuning_takes_devices_and_precision_from_the_trainer_config(tmp_path):
    run = _run(tmp_path, ["trainer=cpu", "trainer.precision=bf16"])
    assert run.trainer.precision == "bf16-mixed" and run.trainer.num_devices == 1
    assert run.trainer.val_check_interval == 2 and run.trainer.max_steps == 4


def test_a_stop_signal_ends_in_one_line_that_says_how_to_resume(tmp_path):
    import pytest

    from thinker.errors import ExitCode, ThinkerError

    run = _run(tmp_path, ["trainer=cpu"])
    run.stopper.requested = "SIGINT"
    with pytest.raises(ThinkerError) as info:
        run.finish("pretraining")
    assert info.value.exit_code == ExitCode.INTERRUPTED
    assert "pretraining stopped by SIGINT at step 0" in info.value.line() and "continue with:" in info.value.line()


def test_the_progress_callbacks_come_from_the_callbacks_option(tmp_path):
    from thinker.backends.local.progress import ProgressLogLines, StepProgressBar

    kinds = [type(c) for c in _run(tmp_path, ["trainer=cpu", "trainer.progress_every_s=7"]).trainer.callbacks]
    assert StepProgressBar in kinds and ProgressLogLines in kinds
    lines = next(c for c in _run(tmp_path, ["trainer=cpu", "trainer.progress_every_s=7"]).trainer.callbacks
                 if isinstance(c, ProgressLogLines))
    assert lines.every_s == 7
    assert not {StepProgressBar, ProgressLogLines} & {type(c) for c in
                                                      _run(tmp_path, ["callbacks=none"]).trainer.callbacks}


def test_a_callback_of_ones_own_is_one_entry_with_a_target(tmp_path):
    from lightning.pytorch.callbacks import LearningRateMonitor

    run = _run(tmp_path, ["+callbacks.lr._target_=lightning.pytorch.callbacks.LearningRateMonitor",
                          "+callbacks.lr.logging_interval=step"])
    monitors = [c for c in run.trainer.callbacks if isinstance(c, LearningRateMonitor)]
    assert len(monitors) == 1 and monitors[0].logging_interval == "step"


def test_a_callback_of_an_uninstalled_package_fails_at_the_config_check():
    import pytest

    from thinker.config.check import check_config
    from thinker.errors import ExitCode, ThinkerError

    with pytest.raises(ThinkerError) as info:
        check_config(compose(["+callbacks.mine._target_=not_installed_pkg.Thing"]), env={})
    assert info.value.exit_code == ExitCode.CONFIG
    assert "callbacks.mine._target_=not_installed_pkg.Thing names package not_installed_pkg" in str(info.value)
