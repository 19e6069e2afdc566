"""Each cross-field rule, both ways: a config that breaks it fails, the nearest one that keeps it passes."""

from __future__ import annotations

import pytest
from conftest import compose

from thinker.config import rules
from thinker.config.check import check_config
from thinker.errors import ThinkerError

KEYS = {"TINKER_API_KEY": "tml-abcdefghijklmnop", "OPENAI_API_KEY": "sk-abcdefghijklmnopqrst",
        "TOGETHER_API_KEY": "together-secret-value", "FIREWORKS_API_KEY": "fw_abcdefghijkl",
        "MISTRAL_API_KEY": "mistral-secret-value"}


def names(cfg, env=KEYS):
    return [v.what for v in rules.violations(cfg, env)]


@pytest.mark.parametrize(
    ("rule", "bad", "good"),
    [
        (rules.grokfast_only_for_pretraining, ["optimizer=grokfast", "method=lora"],
         ["optimizer=grokfast", "method=pretrain", "model=cognate-25m"]),
        (rules.pretrain_needs_buildable_model, ["method=pretrain", "model=qwen-0.5b"],
         ["method=pretrain", "model=cognate-25m"]),
        (rules.qlora_needs_4bit, ["method=qlora", "model=cognate-25m"], ["method=qlora", "model=tiny-qwen"]),
        (rules.method_supported_by_backend, ["backend=tinker", "method=full"], ["backend=tinker", "method=lora"]),
        (rules.method_supported_by_backend, ["backend=provider", "provider=openai", "method=lora"],
         ["backend=provider", "provider=openai", "method=full"]),
        (rules.method_supported_by_backend, ["backend=provider", "provider=fireworks", "method=full"],
         ["backend=provider", "provider=fireworks", "method=lora"]),
        (rules.provider_matches_backend, ["backend=provider", "method=lora"],
         ["backend=provider", "provider=together", "method=lora"]),
        (rules.provider_matches_backend, ["provider=openai"], []),
        (rules.max_steps_valid, ["trainer.max_steps=0"], ["trainer.max_steps=5"]),
        (rules.validation_split_valid, ["data.validation_split=1.0"], ["data.validation_split=0.0"]),
        (rules.validation_split_valid, ["data.max_examples=0"], ["data.max_examples=10"]),
        (rules.precision_can_train, ["trainer.precision=int4"], ["trainer.precision=bf16"]),
        (rules.precision_can_train, ["trainer.precision=fp8"], ["trainer=gpu", "trainer.precision=fp16"]),
        (rules.precision_can_train, ["trainer.precision=fp16"], ["trainer.precision=fp32"]),  # no CPU fp16 autocast
        (rules.precision_can_train, ["method.compute_dtype=int8"], ["method.compute_dtype=bf16"]),
        (rules.optimizations_supported, ["trainer.optimizations=[activation_offloading]"],
         ["trainer.optimizations=[gradient_checkpointing]"]),
        (rules.optimizations_supported, ["trainer.optimizations=[flash_attention]"],
         ["trainer=gpu", "trainer.optimizations=[flash_attention]"]),
    ],
)
def test_rule_both_ways(rule, bad, good):
    assert list(rule(compose(bad), KEYS)), f"{rule.__name__} accepted {bad}"
    assert not list(rule(compose(good), KEYS)), f"{rule.__name__} rejected {good}"


@pytest.mark.parametrize(
    ("overrides", "var"),
    [(["backend=tinker", "method=lora"], "TINKER_API_KEY"),
     (["backend=provider", "provider=openai", "method=full"], "OPENAI_API_KEY"),
     (["backend=provider", "provider=together", "method=lora"], "TOGETHER_API_KEY"),
     (["backend=provider", "provider=fireworks", "method=lora"], "FIREWORKS_API_KEY"),
     (["backend=provider", "provider=mistral", "method=lora"], "MISTRAL_API_KEY")],
)
def test_credentials_both_ways(overrides, var):
    cfg = compose(overrides)
    missing = list(rules.credentials_present(cfg, {}))
    assert missing and var in missing[0].what
    assert not list(rules.credentials_present(cfg, {var: KEYS[var]}))
    blank = list(rules.credentials_present(cfg, {var: "   "}))
    assert blank, "a blank credential must count as missing"


def test_credential_error_never_contains_the_value():
    cfg = compose(["backend=tinker", "method=lora", "stage=validate"])  # validate: the service is not asked
    check_config(cfg, env={"TINKER_API_KEY": KEYS["TINKER_API_KEY"]})  # with the key, every check passes
    with pytest.raises(ThinkerError) as info:
        check_config(cfg, env={"OTHER": KEYS["TINKER_API_KEY"]})
    assert "TINKER_API_KEY" in str(info.value) and KEYS["TINKER_API_KEY"] not in str(info.value)


def test_default_config_passes_every_rule():
    assert names(compose(), {}) == []


def test_a_precision_that_cannot_train_stops_at_config_check_before_the_gate():
    with pytest.raises(ThinkerError) as info:
        check_config(compose(["trainer.precision=int4"]), env={})
    assert info.value.stage == "config" and "trainer.precision=int4" in str(info.value)


def test_lora_defaults_live_in_one_place():
    from thinker.config.ranges import PARAMETER_RANGES

    for method in ("lora", "qlora"):
        cfg = compose([f"method={method}"])
        for key in ("rank", "alpha", "dropout"):
            assert cfg.method[key] == PARAMETER_RANGES[f"method.{key}"].default, (method, key)
    assert compose(["method=qlora"]).method.compute_dtype is None  # follows trainer.precision


def test_trainer_schema_has_no_unused_keys():
    assert "num_workers" not in compose().trainer
