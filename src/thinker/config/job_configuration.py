"""The universal job configuration, built from the composed config by interpolation (docs/decisions/0003-universal-job-configuration.md).

Every hosted provider's option includes this schema as `provider.job` (its defaults list names
`/schema/provider/job_configuration@job`), so `python launch.py backend=provider provider=together --cfg job
--resolve` shows exactly what the run record stores and what the provider payload is translated from. The
fields are interpolations of the keys users already set (method.rank, optimizer.lr, trainer.epochs, ...): there
is no second place to configure a hosted job, and `job_configuration(cfg)` is the one function that reads it.

Types are `Any` because the values come from typed nodes elsewhere (enums, ints, floats) and are checked there;
the universal schema's names are in the comments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf


@dataclass
class JobModel:
    base_model: Any = "${provider.base_model}"  # model.baseModel: the provider's model id
    precision: Any = "${trainer.precision}"  # model.precision


@dataclass
class JobDatasets:
    # datasets.trainingFileId / validationFileId: the file ids exist only after upload, so the job names the
    # local file and split here; the provider's file ids go into the run record beside it
    training_file: Any = "${data.path}"
    validation_split: Any = "${data.validation_split}"
    max_examples: Any = "${data.max_examples}"
    format: Any = "${data.format}"


@dataclass
class JobLora:  # method.loraConfig (null fields for method=full)
    rank: Any = "${oc.select:method.rank,null}"
    alpha: Any = "${oc.select:method.alpha,null}"
    dropout: Any = "${oc.select:method.dropout,null}"
    trainable_modules: Any = "${oc.select:method.target_modules,null}"


@dataclass
class JobMethod:
    type: Any = "${method.name}"
    lora: JobLora = field(default_factory=JobLora)


@dataclass
class JobObjective:  # not in the universal schema: what training optimises (docs/objectives.md)
    name: Any = "${oc.select:objective.name,sft}"  # sft | dpo (a preference job: docs/providers.md)
    beta: Any = "${oc.select:objective.beta,null}"  # dpo only
    loss: Any = "${oc.select:objective.loss,null}"  # dpo only: sigmoid | ipo | a reference-free variant


@dataclass
class JobSchedule:
    epochs: Any = "${trainer.epochs}"
    batch_size: Any = "${trainer.batch_size}"
    sequence_length: Any = "${trainer.max_seq_length}"
    gradient_accumulation: Any = "${trainer.grad_accum}"
    checkpoints: Any = "${trainer.save_total_limit}"
    evaluations: Any = "${trainer.evaluations}"
    train_on_inputs: Any = "${trainer.train_on_inputs}"
    max_steps: Any = "${trainer.max_steps}"  # not in the universal schema: hosted jobs train whole epochs (-1)


@dataclass
class JobScheduler:
    type: Any = "${optimizer.scheduler.type}"
    min_lr_ratio: Any = "${optimizer.scheduler.min_lr_ratio}"
    warmup_ratio: Any = "${optimizer.scheduler.warmup_ratio}"
    cycles: Any = "${optimizer.scheduler.cycles}"


@dataclass
class JobOptimizer:
    name: Any = "${optimizer.name}"  # not in the universal schema (providers train with AdamW); refused when different
    learning_rate: Any = "${optimizer.lr}"
    scheduler: JobScheduler = field(default_factory=JobScheduler)
    weight_decay: Any = "${optimizer.weight_decay}"
    max_gradient_norm: Any = "${optimizer.max_grad_norm}"


@dataclass
class JobOutput:
    suffix: Any = "${oc.select:output.name,null}"  # output.suffix: part of the resulting model's name


@dataclass
class JobWandb:  # integrations.wandb (the key: WANDB_API_KEY in the environment, added only to the request)
    project: Any = "${oc.select:provider.integrations.wandb.project,null}"
    entity: Any = "${oc.select:provider.integrations.wandb.entity,null}"
    name: Any = "${oc.select:provider.integrations.wandb.name,null}"


@dataclass
class JobIntegrations:
    wandb: JobWandb = field(default_factory=JobWandb)


@dataclass
class JobHardware:  # hardware: only for providers that let users choose
    gpu_type: Any = "${oc.select:provider.hardware.gpu_type,null}"
    num_gpus: Any = "${oc.select:provider.hardware.num_gpus,null}"


@dataclass
class JobConfiguration:
    model: JobModel = field(default_factory=JobModel)
    datasets: JobDatasets = field(default_factory=JobDatasets)
    method: JobMethod = field(default_factory=JobMethod)
    objective: JobObjective = field(default_factory=JobObjective)
    schedule: JobSchedule = field(default_factory=JobSchedule)
    optimizer: JobOptimizer = field(default_factory=JobOptimizer)
    optimizations: Any = "${trainer.optimizations}"  # optimizations.enabled
    output: JobOutput = field(default_factory=JobOutput)
    seed: Any = "${seed}"
    # the universal schema's provider-specific overrides: provider.options (each provider's custom parameters)
    metadata: Any = "${provider.options}"
    integrations: JobIntegrations = field(default_factory=JobIntegrations)
    hardware: JobHardware = field(default_factory=JobHardware)
    # provider.metadata: parameters the provider's API takes that thinker does not declare, sent as they are
    passthrough: Any = "${oc.select:provider.metadata,{}}"


def job_configuration(cfg: DictConfig) -> JobConfiguration:
    """The run's universal job configuration, every interpolation resolved, enums as their plain values."""
    plain = OmegaConf.to_container(cfg.provider.job, resolve=True, enum_to_str=True)
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(JobConfiguration), plain))


def job_configuration_dict(job: JobConfiguration) -> dict[str, Any]:
    """JSON-able form, for the run record and the provider job file."""
    return OmegaConf.to_container(OmegaConf.structured(job), enum_to_str=True)
