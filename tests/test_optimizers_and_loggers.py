"""Optimizers and loggers are built from their option's `_target_` (conf/optimizer/*.yaml, conf/logger/*.yaml):
the shipped ones, one of the user's own (a YAML file and a class), and logger=csv (Lightning's CSVLogger, one
YAML file) writing the training metrics into the run folder."""

from __future__ import annotations

import csv

import pytest
import torch
from conftest import compose

from thinker.backends.local.optimizers import build_optimizer
from thinker.config.check import check_config
from thinker.errors import ThinkerError
from thinker.tracking.fingerprint import config_fingerprint

MY_OPTIMIZER = '''
import torch


class HalvedSGD(torch.optim.SGD):
    """A user's own optimizer: SGD at half the configured rate."""

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        super().__init__(params, lr=lr / 2, momentum=momentum, weight_decay=weight_decay)
'''

MY_OPTIMIZER_CONFIG = """# An optimizer of the user's own: this file and my_optimizer.py are all it takes.
defaults:
  - /schema/optimizer/optimizer@_here_
  - _self_

name: halved_sgd
_target_: my_optimizer.HalvedSGD
lr: 0.2
momentum: 0.5
"""


def params() -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.zeros(3))]


@pytest.fixture
def my_optimizer(tmp_path, monkeypatch):
    (tmp_path / "plugin" / "conf" / "optimizer").mkdir(parents=True)
    (tmp_path / "plugin" / "conf" / "optimizer" / "halved_sgd.yaml").write_text(MY_OPTIMIZER_CONFIG)
    (tmp_path / "plugin" / "my_optimizer.py").write_text(MY_OPTIMIZER)
    monkeypatch.syspath_prepend(str(tmp_path / "plugin"))
    return f"hydra.searchpath=[file://{tmp_path / 'plugin' / 'conf'}]"


@pytest.mark.parametrize(("option", "cls", "settings"), [
    ("adamw", torch.optim.AdamW, {"lr": 1e-3, "weight_decay": 0.01, "betas": (0.9, 0.999), "eps": 1e-8}),
    ("adam", torch.optim.Adam, {"lr": 1e-3, "weight_decay": 0.0, "betas": (0.9, 0.999), "eps": 1e-8}),
    ("sgd", torch.optim.SGD, {"lr": 1e-2, "momentum": 0.9, "weight_decay": 0.0}),
])
def test_a_shipped_optimizer_is_its_target_with_the_options_settings(option, cls, settings):
    cfg = compose([f"optimizer={option}", "optimizer.lr=1e-3"] if option != "sgd" else ["optimizer=sgd"])
    optimizer = build_optimizer(cfg.optimizer, params(), "cpu")
    assert type(optimizer) is cls
    group = optimizer.param_groups[0]
    assert {key: tuple(group[key]) if key == "betas" else group[key] for key in settings} == settings


def test_grokfast_gets_its_filter_settings():
    from thinker.pretraining.grokfast import GrokFastAdamW

    cfg = compose(["method=pretrain", "model=cognate-25m", "optimizer=grokfast", "optimizer.grokfast_alpha=0.9",
                   "optimizer.grokfast_lamb=3.0"])
    optimizer = build_optimizer(cfg.optimizer, params(), "cpu")
    assert type(optimizer) is GrokFastAdamW
    assert (optimizer.grokfast.alpha, optimizer.grokfast.lamb) == (0.9, 3.0)
    assert optimizer.param_groups[0]["lr"] == 1e-3 and optimizer.param_groups[0]["weight_decay"] == 0.1


def test_adamw_8bit_builds_and_paged_adamw_needs_cuda():
    import bitsandbytes as bnb

    assert type(build_optimizer(compose(["optimizer=adamw_8bit"]).optimizer, params(), "cpu")) is bnb.optim.AdamW8bit
    with pytest.raises(ThinkerError) as info:
        build_optimizer(compose(["optimizer=paged_adamw"]).optimizer, params(), "cpu")
    assert "needs a CUDA GPU" in str(info.value) and info.value.stage == "train"


def test_an_optimizer_of_ones_own_is_a_yaml_file_and_a_class(my_optimizer):
    cfg = compose([my_optimizer, "optimizer=halved_sgd"])
    check_config(cfg, env={})  # the config check takes it as it takes a shipped one
    optimizer = build_optimizer(cfg.optimizer, params(), "cpu")
    assert type(optimizer).__name__ == "HalvedSGD" and type(optimizer).__module__ == "my_optimizer"
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1) and optimizer.param_groups[0]["momentum"] == 0.5


def test_a_target_of_ones_own_changes_the_fingerprint():
    shipped = compose(["optimizer=adamw"])
    assert config_fingerprint(compose(["optimizer=adamw", "optimizer._target_=torch.optim.AdamW"])) == \
        config_fingerprint(shipped)
    assert config_fingerprint(compose(["optimizer=adamw", "optimizer._target_=torch.optim.Adam"])) != \
        config_fingerprint(shipped)


def test_an_optimizer_target_that_cannot_be_built_is_one_train_stage_error():
    cfg = compose(["optimizer._target_=torch.optim.NoSuchOptimizer"])
    with pytest.raises(ThinkerError) as info:
        build_optimizer(cfg.optimizer, params(), "cpu")
    assert "optimizer._target_=torch.optim.NoSuchOptimizer" in str(info.value) and info.value.stage == "train"


def test_logger_csv_composes_and_passes_the_config_check():
    cfg = compose(["logger=csv"])
    assert cfg.logger.name == "csv" and cfg.logger._target_ == "lightning.pytorch.loggers.CSVLogger"
    assert not cfg.logger.mlflow
    check_config(cfg, env={})
    assert compose().logger.mlflow and not compose(["logger=none"]).logger.mlflow  # mlflow is the default


def test_the_training_logger_follows_the_option(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    from thinker.tracking.loggers import training_logger

    csv_logger = training_logger(compose(["logger=csv"]).logger, run_dir=tmp_path, session=None, resuming=False)
    assert isinstance(csv_logger, CSVLogger) and csv_logger.log_dir == str(tmp_path / "csv" / "version_0")
    assert training_logger(compose(["logger=none"]).logger, run_dir=tmp_path, session=None, resuming=False) is False
    # logger=mlflow without an MLflow session (none was opened): no logger, as before
    assert training_logger(compose().logger, run_dir=tmp_path, session=None, resuming=False) is False


@pytest.mark.slow
@pytest.mark.usefixtures("private_models_dir")
def test_a_run_with_logger_csv_writes_its_metrics_into_the_run_folder(tmp_path):
    from thinker.backends.local.backend import train

    cfg = compose(["logger=csv", "method=lora", "trainer.max_steps=2", "trainer.evaluations=1",
                   "data.max_examples=24", "trainer.max_seq_length=256", "trainer.batch_size=4",
                   "validation.pytest.enabled=false", f"output.dir={tmp_path}"])
    train(cfg, tmp_path, None)
    rows = list(csv.DictReader((tmp_path / "csv" / "version_0" / "metrics.csv").open()))
    steps = {int(row["step"]) for row in rows if row.get("train_loss")}
    assert steps and all(float(row["train_loss"]) > 0 for row in rows if row.get("train_loss"))
    assert any(row.get("val_loss") for row in rows)


@pytest.mark.parametrize("group", ["optimizer", "logger"])
def test_a_target_of_an_uninstalled_package_fails_at_the_config_check(group):
    from thinker.errors import ExitCode

    with pytest.raises(ThinkerError) as info:
        check_config(compose([f"{group}._target_=not_installed_pkg.Thing"]), env={})
    assert info.value.exit_code == ExitCode.CONFIG
    assert f"{group}._target_=not_installed_pkg.Thing names package not_installed_pkg" in str(info.value)
