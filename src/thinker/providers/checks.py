"""The checks every provider shares, driven by its capabilities(): method, optimizer, scheduler, ranges,
precision and optimizations, keys the provider has no setting for, and provider.options.

Findings name the config key users set (not the job configuration's field), so the fix is an override.
"""

from __future__ import annotations

from typing import Any

from thinker.config.job_configuration import JobConfiguration
from thinker.config.ranges import PARAMETER_RANGES
from thinker.providers.capabilities import Capabilities, Finding, universal_range

# config key -> where its value sits in the job configuration
JOB_FIELDS: dict[str, tuple[str, ...]] = {
    "trainer.epochs": ("schedule", "epochs"),
    "trainer.batch_size": ("schedule", "batch_size"),
    "trainer.max_seq_length": ("schedule", "sequence_length"),
    "trainer.grad_accum": ("schedule", "gradient_accumulation"),
    "trainer.save_total_limit": ("schedule", "checkpoints"),
    "trainer.evaluations": ("schedule", "evaluations"),
    "trainer.train_on_inputs": ("schedule", "train_on_inputs"),
    "trainer.max_steps": ("schedule", "max_steps"),
    "optimizer.lr": ("optimizer", "learning_rate"),
    "optimizer.weight_decay": ("optimizer", "weight_decay"),
    "optimizer.max_grad_norm": ("optimizer", "max_gradient_norm"),
    "optimizer.scheduler.type": ("optimizer", "scheduler", "type"),
    "optimizer.scheduler.warmup_ratio": ("optimizer", "scheduler", "warmup_ratio"),
    "optimizer.scheduler.min_lr_ratio": ("optimizer", "scheduler", "min_lr_ratio"),
    "optimizer.scheduler.cycles": ("optimizer", "scheduler", "cycles"),
    "method.rank": ("method", "lora", "rank"),
    "method.alpha": ("method", "lora", "alpha"),
    "method.dropout": ("method", "lora", "dropout"),
    "method.target_modules": ("method", "lora", "trainable_modules"),
}
LORA_KEYS = ("method.rank", "method.alpha", "method.dropout", "method.target_modules")
# defaults of the keys outside the ranged table: a value equal to these changes nothing when dropped
PLAIN_DEFAULTS: dict[str, Any] = {"trainer.max_steps": -1, "trainer.train_on_inputs": "auto",
                                  "method.target_modules": "all-linear", "optimizer.scheduler.type": "cosine"}
TRAINING_OPTIMIZER = "adamw"  # what every hosted provider trains with
CONSTANT_SCHEDULERS = ("constant", "constant_with_warmup")


def job_value(job: JobConfiguration, key: str) -> Any:
    value: Any = job
    for part in JOB_FIELDS[key]:
        value = getattr(value, part)
    return value


def default_of(key: str) -> Any:
    return PLAIN_DEFAULTS[key] if key in PLAIN_DEFAULTS else PARAMETER_RANGES[key].default


def generic_findings(caps: Capabilities, job: JobConfiguration) -> list[Finding]:
    name = f"provider={caps.provider}"
    method = str(job.method.type)
    found: list[Finding] = objective_findings(caps, job)
    preference = caps.preference if is_preference(job) else None
    methods = preference.methods if preference else caps.supported_methods
    if method not in methods:
        kind = " preference (objective=dpo) jobs" if preference else ""
        found.append(Finding("method", f"{name} does not train method={method}{kind}",
                             f"use method={' or method='.join(methods)}, or another provider"))
    if str(job.optimizer.name) != TRAINING_OPTIMIZER:
        found.append(Finding("optimizer", f"{name} trains with AdamW, not optimizer={job.optimizer.name}",
                             "use optimizer=adamw (the default)"))
    scheduler = str(job.optimizer.scheduler.type)
    if caps.supported_schedulers and scheduler not in caps.supported_schedulers:
        found.append(Finding("optimizer.scheduler.type", f"{name} has no {scheduler} learning-rate schedule",
                             f"set optimizer.scheduler.type={' or '.join(caps.supported_schedulers)}"))
    floor = job.optimizer.scheduler.min_lr_ratio
    if scheduler in CONSTANT_SCHEDULERS and scheduler in caps.supported_schedulers and floor not in (
            None, default_of("optimizer.scheduler.min_lr_ratio")):
        found.append(Finding("optimizer.scheduler.min_lr_ratio", f"optimizer.scheduler.min_lr_ratio={floor} is "
                             "dropped: a constant schedule has no floor", error=False))
    for key in JOB_FIELDS:
        if key in LORA_KEYS and method not in ("lora", "qlora"):
            continue
        value = job_value(job, key)
        if key in caps.refused_keys:
            if value is not None and value != default_of(key):
                found.append(Finding(key, f"{key}={value}: {caps.refused_keys[key]}",
                                     f"set {key}={default_of(key)} (the default), or use a provider that offers it "
                                     f"(thinker providers capabilities <name>)"))
            continue
        if key in caps.ignored_keys:
            if value is not None and value != default_of(key):
                found.append(Finding(key, f"{key}={value} is dropped: {caps.ignored_keys[key]}", error=False))
            continue
        if key in PARAMETER_RANGES and value is not None:
            allowed = universal_range(key, caps)
            if not allowed.contains(value):
                found.append(Finding(key, f"{key}={value} is outside what {name} accepts, {allowed.describe()}",
                                     f"set {key} within {allowed.describe()}"))
    precision = str(job.model.precision)
    if caps.supported_precisions and precision not in caps.supported_precisions:
        found.append(Finding("trainer.precision", f"trainer.precision={precision} is dropped: {name} trains in "
                             f"{'/'.join(caps.supported_precisions)}", error=False))
    dropped = [str(o) for o in (job.optimizations or []) if str(o) not in caps.supported_optimizations]
    if dropped:
        found.append(Finding("trainer.optimizations", f"trainer.optimizations {', '.join(dropped)} are dropped: "
                             f"{name} decides these itself", error=False))
    found += option_findings(caps, dict(job.metadata or {}))
    found += optional_part_findings(caps, job)
    return found


def optional_part_findings(caps: Capabilities, job: JobConfiguration) -> list[Finding]:
    """provider.integrations / hardware / output.suffix where the provider has no such thing."""
    name = f"provider={caps.provider}"
    found = []
    wandb = job.integrations.wandb if job.integrations else None
    if wandb is not None and wandb.project and "wandb" not in caps.integrations:
        found.append(Finding("provider.integrations.wandb", f"{name} does not log to Weights & Biases",
                             "drop provider.integrations.wandb (the run's MLflow run has its metrics)"))
    hardware = job.hardware
    if hardware is not None and (hardware.gpu_type or hardware.num_gpus) and not caps.hardware_selection:
        found.append(Finding("provider.hardware", f"{name} chooses the hardware itself",
                             "drop provider.hardware.gpu_type / num_gpus"))
    suffix = job.output.suffix if job.output else None
    if suffix and not caps.output_suffix:
        found.append(Finding("output.name", f"output.name={suffix} does not reach {name}: it names its "
                             "fine-tunes itself (the registry still uses it)", error=False))
    return found


def is_preference(job: JobConfiguration) -> bool:
    return str(job.objective.name) == "dpo"


def objective_findings(caps: Capabilities, job: JobConfiguration) -> list[Finding]:
    """objective=dpo becomes the provider's own preference job where it has one (docs/objectives.md); any
    other objective than sft and dpo has no hosted job."""
    name, objective = f"provider={caps.provider}", str(job.objective.name)
    if objective == "sft":
        return []
    see = f"thinker providers capabilities {caps.provider}"
    if objective != "dpo":
        return [Finding("objective", f"{name} has no objective={objective} job",
                        f"use objective=sft or objective=dpo, or backend=local / backend=tinker ({see})")]
    preference = caps.preference
    if preference is None:
        reason = caps.preference_refusal or "it offers no preference fine-tuning"
        return [Finding("objective", f"{name} runs no preference (DPO) jobs: {reason}",
                        "use a provider that does (thinker providers capabilities <name>: preference), "
                        "or backend=local / backend=tinker")]
    found = []
    if str(job.schedule.train_on_inputs) == "enabled":
        found.append(Finding("trainer.train_on_inputs", "trainer.train_on_inputs=enabled is dropped: a preference "
                             "job scores the completions only", error=False))
    loss = str(job.objective.loss)
    if loss not in preference.losses:
        found.append(Finding("objective.loss", f"objective.loss={loss} is not a loss {name} trains",
                             f"set objective.loss={' or objective.loss='.join(preference.losses)} ({see})"))
    beta = job.objective.beta
    if isinstance(beta, int | float) and not isinstance(beta, bool) and not preference.beta_fits(float(beta)):
        found.append(Finding("objective.beta", f"objective.beta={beta} is outside what {name} accepts, "
                             f"{preference.beta_range()}", f"set objective.beta within {preference.beta_range()}"))
    return found


def option_findings(caps: Capabilities, options: dict[str, Any]) -> list[Finding]:
    found = []
    known = caps.custom_parameters
    for key, value in options.items():
        spec = known.get(key)
        where = f"provider.options.{key}"
        if spec is None:
            offered = ", ".join(sorted(known)) or "none"
            found.append(Finding(where, f"provider={caps.provider} has no parameter {key}",
                                 f"remove it (its parameters: {offered})"))
        elif spec.enum_values and value not in spec.enum_values:
            found.append(Finding(where, f"{where}={value} is not one of {', '.join(spec.enum_values)}",
                                 f"set one of {', '.join(spec.enum_values)}"))
        elif spec.type == "number" and (not isinstance(value, int | float) or isinstance(value, bool)
                                        or (spec.min is not None and value < spec.min)
                                        or (spec.max is not None and value > spec.max)):
            found.append(Finding(where, f"{where}={value} is not a number in [{spec.min}, {spec.max}]",
                                 f"set a number in [{spec.min}, {spec.max}]"))
        elif spec.type == "boolean" and not isinstance(value, bool):
            found.append(Finding(where, f"{where}={value} is not true/false", "set true or false"))
    for key, spec in known.items():
        if spec.required and key not in options:
            found.append(Finding(f"provider.options.{key}", f"provider={caps.provider} needs {key}",
                                 f"set provider.options.{key} ({spec.description})"))
    return found
