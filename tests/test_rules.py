"""Each cross-field rule, both ways: a config that breaks it fails, the nearest one that keeps it passes."""

from __future__ import annotations

import pytest
from conftest import compose

from thinker.config import rules

KEYS = {"TINKER_API_KEY": "tml-abcdefghijklmnop", "OPENAI_API_KEY": "sk-abcdefghijklmnopqrst",
        "TOGETHER_API_KEY": "together-secret-value", "FIREWORKS_API_KEY": "fw_abcdefghijkl",
        "FIREWORKS_ACCOUNT_ID": "my-account"}


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
        (rules.provider_matches_backend, ["backend=provider", "method=lora"],
         ["backend=provider", "provider=together", "method=lora"]),
        (rules.provider_matches_backend, ["provider=openai"], []),
        (rules.max_steps_valid, ["trainer.max_steps=0"], ["trainer.max_steps=5"]),
        (rules.model_spec_fixed, ["model=cognate-25m", "model.arch.n_layers=6"], ["model=cognate-25m"]),
        (rules.pretrain_needs_reasoning_data, ["experiment=cognate_pretrain", "data=sample"],
         ["experiment=cognate_pretrain", "data=hotpotqa"]),
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
     (["backend=provider", "provider=fireworks", "method=lora"], "FIREWORKS_ACCOUNT_ID")],
)
def test_credentials_both_ways(overrides, var):
    """A provider's key, and the other variables its SDK needs (provider.required_env), are asked for."""
    cfg = compose(overrides)
    assert any(var in v.what for v in rules.credentials_present(cfg, {}))
    assert not list(rules.credentials_present(cfg, KEYS))
    without = [v.what for v in rules.credentials_present(cfg, {k: v for k, v in KEYS.items() if k != var})]
    assert len(without) == 1 and var in without[0]
    blank = list(rules.credentials_present(cfg, {**KEYS, var: "   "}))
    assert blank, "a blank credential must count as missing"


@pytest.mark.parametrize("provider", ["mistral", "deepseek"])
def test_a_provider_without_fine_tuning_asks_for_no_key(provider):
    """Nothing is ever called at Mistral or DeepSeek (their refusal comes at config check), so no key is needed."""
    assert not list(rules.credentials_present(compose(["backend=provider", f"provider={provider}"]), {}))


def arch_is_frozen(model_cfg):  # a family's fixed_spec check, named by test_a_familys_fixed_spec_comes_from_the_table
    return f"model.arch of {model_cfg.name} is frozen" if model_cfg.arch else None


def test_a_familys_fixed_spec_comes_from_the_family_table(monkeypatch):
    """The config check asks the family table whether a family fixes its architecture: a new family with a
    fixed_spec is refused there without touching the rules (docs/architecture.md, "Adding a model family")."""
    import dataclasses

    from thinker.models import families

    cfg = compose(["model=tiny-qwen"])
    assert cfg.model.arch and not list(rules.model_spec_fixed(cfg, KEYS))
    family = families.FAMILIES[str(cfg.model.family)]
    monkeypatch.setitem(families.FAMILIES, family.name,
                        dataclasses.replace(family, fixed_spec="test_rules:arch_is_frozen"))
    assert [v.what for v in rules.model_spec_fixed(cfg, KEYS)] == ["model.arch of tiny-qwen is frozen"]
