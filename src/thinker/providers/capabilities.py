"""What a provider supports and what validation says about a job: the types the adapter contract and the
generic checks (thinker.providers.checks) share (docs/decisions/0003-universal-job-configuration.md)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from thinker.config.ranges import PARAMETER_RANGES, Range


@dataclass(frozen=True)
class ParameterDefinition:
    """A provider-specific parameter, set as provider.options.<name> (docs/decisions/0003-universal-job-configuration.md)."""

    type: str  # string | number | boolean | enum
    description: str
    required: bool = False
    default: Any = None
    enum_values: list[str] | None = None
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class PreferenceSupport:
    """objective=dpo on a provider: its own preference job (docs/objectives.md, "Preference tuning")."""

    methods: list[str]  # the `method` options its preference jobs train
    losses: list[str]  # objective.loss values it runs (sigmoid: DPO itself)
    beta_min: float  # objective.beta must be above this (exclusive)
    beta_max: float | None = None  # and at most this (None: no published bound)
    beta_max_exclusive: bool = False
    upload_format: str = "preference_jsonl"  # input / preferred_output / non_preferred_output per line
    base_models: list[str] = field(default_factory=list)  # empty: the same as supervised fine-tuning

    def beta_range(self) -> str:
        high = "inf)" if self.beta_max is None else f"{self.beta_max:g}{')' if self.beta_max_exclusive else ']'}"
        return f"({self.beta_min:g}, {high}"

    def beta_fits(self, beta: float) -> bool:
        if beta <= self.beta_min:
            return False
        if self.beta_max is None:
            return True
        return beta < self.beta_max if self.beta_max_exclusive else beta <= self.beta_max


@dataclass(frozen=True)
class Capabilities:
    """What the provider supports (the universal schema's keys and ranges), plus what the flow needs to know."""

    provider: str
    available: bool  # false: the provider runs no fine-tuning jobs (any more); `unavailable_reason` says why
    supported_methods: list[str] = field(default_factory=list)
    supported_optimizations: list[str] = field(default_factory=list)
    supported_precisions: list[str] = field(default_factory=list)
    supported_schedulers: list[str] = field(default_factory=list)
    # stricter ranges than the universal table, keyed like thinker.config.ranges.PARAMETER_RANGES
    # ("method.rank", "trainer.epochs", ...); a universal key absent here uses the universal range
    parameter_ranges: dict[str, Range] = field(default_factory=dict)
    # universal keys this provider has no setting for, with what happens instead: dropped with a warning
    # unless the user's value differs from the seed default in a way that changes training (then refused):
    # {"optimizer.max_grad_norm": "Together clips at 1.0"}
    ignored_keys: dict[str, str] = field(default_factory=dict)
    # universal keys it cannot honour, with why: refused at config check when set to anything but the default
    # (training would differ from what the config says): {"trainer.max_steps": "Fireworks trains whole epochs"}
    refused_keys: dict[str, str] = field(default_factory=dict)
    custom_parameters: dict[str, ParameterDefinition] = field(default_factory=dict)
    # methods whose result can be sampled without a paid deployment (else eval needs evaluation.provider_deploy)
    serverless_inference: list[str] = field(default_factory=list)
    upload_format: str = "chat_messages_jsonl"
    min_examples: int = 1
    max_file_bytes: int | None = None
    # how optimizer.lr becomes the provider's setting (OpenAI: a multiplier of its own base rate)
    learning_rate_note: str | None = None
    unavailable_reason: str | None = None
    # objective=dpo: the provider's preference job; None: it runs none (refused at config check with this reason)
    preference: PreferenceSupport | None = None
    preference_refusal: str | None = None
    alternatives: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # the universal job configuration's optional parts this provider takes (docs/providers.md): integrations
    # it logs to ("wandb"), whether users choose its hardware, whether output.suffix names the fine-tune
    integrations: list[str] = field(default_factory=list)
    integration_keys: dict[str, str] = field(default_factory=dict)  # integration -> the variable holding its key
    hardware_selection: bool = False
    output_suffix: bool = False

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["parameter_ranges"] = {k: {"min": r.min, "max": r.max, "integer": r.integer}
                                    for k, r in self.parameter_ranges.items()}
        return data


@dataclass(frozen=True)
class Finding:
    """One validation result. `error` stops the run at config check; a warning names what is dropped."""

    key: str  # the config key it is about ("method", "method.rank", "optimizer.scheduler.type")
    message: str  # what is wrong or dropped
    fix: str = ""  # what to do (errors)
    error: bool = True


def universal_range(key: str, caps: Capabilities) -> Range:
    return caps.parameter_ranges.get(key, PARAMETER_RANGES[key])


def narrowed(key: str, low: float, high: float) -> Range:
    """The universal range of `key` intersected with the provider's published bounds."""
    universal = PARAMETER_RANGES[key]
    return Range(max(universal.min, low), min(universal.max, high), universal.default, universal.seed_name,
                 integer=universal.integer, min_exclusive=universal.min_exclusive)
