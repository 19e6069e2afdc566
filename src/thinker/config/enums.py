"""The enums of the universal job schema (docs/decisions/0003-universal-job-configuration.md). Every other module reads them from here.

Member names equal their values (lowercase) because OmegaConf converts YAML strings to enum members by
name: `method.name: qlora` becomes TrainingMethod.qlora.
"""

from __future__ import annotations

import enum


class _StrEnum(enum.StrEnum):
    @classmethod
    def values(cls) -> list[str]:
        return [m.value for m in cls]


class TrainingMethod(_StrEnum):
    full = "full"
    lora = "lora"
    qlora = "qlora"
    pretrain = "pretrain"  # from-scratch pretraining (Cognate); not a fine-tuning method of the universal job schema


class DpoLoss(_StrEnum):
    """objective.loss of objective=dpo (thinker.objectives.dpo_loss implements each)."""

    sigmoid = "sigmoid"  # DPO (Rafailov et al. 2023)
    ipo = "ipo"  # IPO (Azar et al. 2023): squared distance of the log-ratio margin from 1 / (2 beta)
    simpo = "simpo"  # SimPO (Meng et al. 2024): length-normalised log-probs, no reference model


class LRSchedulerType(_StrEnum):
    cosine = "cosine"
    linear = "linear"
    constant = "constant"
    constant_with_warmup = "constant_with_warmup"
    polynomial = "polynomial"


class ModelPrecision(_StrEnum):
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"
    fp8 = "fp8"
    int8 = "int8"
    int4 = "int4"


class OptimizationFeature(_StrEnum):
    flash_attention = "flash_attention"
    gradient_checkpointing = "gradient_checkpointing"
    optimizer_8bit = "optimizer_8bit"
    paged_optimizer = "paged_optimizer"
    fused_kernels = "fused_kernels"
    sequence_packing = "sequence_packing"
    dynamic_padding = "dynamic_padding"
    activation_offloading = "activation_offloading"


class TrainOnInputs(_StrEnum):
    auto = "auto"  # the backend decides (local: completion-only, as prompts are masked)
    enabled = "enabled"
    disabled = "disabled"


class Stage(_StrEnum):
    validate = "validate"
    train = "train"
    eval = "eval"
    run = "run"  # validate -> train -> eval


class OptimizerName(_StrEnum):
    adamw = "adamw"
    adam = "adam"
    sgd = "sgd"
    adamw_8bit = "adamw_8bit"
    paged_adamw = "paged_adamw"
    grokfast = "grokfast"


class FieldType(_StrEnum):
    """Types a dataset schema field may declare: the JSON types, and `messages` (a chat conversation)."""

    string = "string"
    integer = "integer"
    number = "number"
    boolean = "boolean"
    object = "object"
    array = "array"
    messages = "messages"  # [{"role", "content"}, ...]: optional system, then user/assistant turns
