"""The config fingerprint ignores key order and output paths, and changes with any hyperparameter."""

from __future__ import annotations

import pytest
from conftest import compose
from omegaconf import OmegaConf

from thinker.tracking.fingerprint import config_fingerprint


def test_stable_across_compositions():
    assert config_fingerprint(compose()) == config_fingerprint(compose())


def test_ignores_key_order():
    cfg = compose()
    data = OmegaConf.to_container(cfg, resolve=False)
    reordered = OmegaConf.create(dict(reversed(list(data.items()))))
    reordered.optimizer = OmegaConf.create(dict(reversed(list(data["optimizer"].items()))))
    assert list(reordered.keys()) != list(cfg.keys())
    assert config_fingerprint(reordered) == config_fingerprint(cfg)


@pytest.mark.parametrize(
    "override", ["output.dir=/somewhere/else", "stage=validate", "debug=true", "logger.tracking_uri=sqlite:///x.db"]
)
def test_ignores_output_paths_and_run_control(override):
    assert config_fingerprint(compose([override])) == config_fingerprint(compose())


@pytest.mark.parametrize(
    "override",
    ["optimizer.lr=0.0003", "method.rank=8", "method.alpha=16", "method.dropout=0.1", "seed=7",
     "trainer.batch_size=2", "trainer.max_steps=10", "trainer.max_seq_length=256", "trainer.grad_accum=2",
     "optimizer.weight_decay=0.1", "optimizer.scheduler.type=linear", "optimizer.scheduler.warmup_ratio=0.1",
     "data.path=other.jsonl", "method=lora", "model=qwen-0.5b", "optimizer=sgd"],
)
def test_changes_with_any_hyperparameter(override):
    assert config_fingerprint(compose([override])) != config_fingerprint(compose())


def test_is_sha256_hex():
    fp = config_fingerprint(compose())
    assert len(fp) == 64 and int(fp, 16) >= 0
