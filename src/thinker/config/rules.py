"""Cross-field rules: every constraint that spans more than one config key lives here.

Each rule reads the composed config (and the environment, for credentials) and yields Violations. The
check module turns the first violation into a ThinkerError; tests call the rules one by one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from thinker.config.enums import DpoLoss, OptimizerName, TrainingMethod
from thinker.validation.schema_language import FieldSpec, SchemaError


@dataclass(frozen=True)
class Violation:
    what: str
    where: str
    fix: str


Rule = Callable[[DictConfig, Mapping[str, str]], Iterator[Violation]]


def _s(value: object) -> str:
    return str(value.value if hasattr(value, "value") else value)


def grokfast_only_for_pretraining(cfg: DictConfig, env: Mapping[str, str]) -> Iterator[Violation]:
    # GrokFast is a pretraining optimizer (docs/decisions/0010-cognate-pretraining-path.md); on fine-tuning it destabilises a trained model.
    if _s(cfg.optimizer.name) == OptimizerName.grokfast and _s(cfg.method.name) != TrainingMethod.pretrain:
        yield Violation(
            f"optimizer=grokfast only works with method=pretrain (got method={_s(cfg.method.name)})",
            "optimizer, method",
            "use optimizer=adamw for fine-tuning, or method=pretrain with a from-scratch model",
        )


def pretrain_needs_buildable_model(cfg: DictConfig, env: Mapping[str, str]) -> Iterator[Violation]:
    if _s(cfg.method.name) == TrainingMethod.pretrain and not cfg.model.from_scratch:
        yield Violation(
            f"method=pretrain needs a model that can be built from its config, and model={cfg.model.name} cannot",
            "method, model",
            "use model=cognate-25m (or tiny-qwen) for pretraining, or method=lora to fine-tune this model",
        )


def data_task_known(cfg: DictConfig, env: Mapping[str, str]) -> Iterator[Violation]:
    # data.format (or data.task) names the task that reads, tokenises and evaluates the data (thinker.tasks)
    from thinker.errors import ThinkerError
    from thinker.tasks import task_of

    try:
        task_of(cfg.data)
    except ThinkerError as error:
        yield Violation(error.what, error.where, error.fix)


def _task(cfg: DictConfig):  # noqa: ANN202 - a thinker.tasks.base.Task, or None when data_task_known objects
    from thinker.errors import ThinkerError
    from thinker.tasks import task_of

    try:
        return task_of(cfg.data)
    except ThinkerError:
        return None


def pretrain_needs_reasoning_data(cfg: DictConfig, env: Mapping[str, str]) -> Iterator[Violation]:
    # pretraining has its own data processors (docs/decisions/0010-cognate-pretraining-path.md) (GSM8K, HotpotQA), not fine-tuning's formats
    if _s(cfg.method.name) != TrainingMethod.pretrain:
        return
    task = _task(cfg)
    if task is not None and not task.pretrains:
        yield Violation(
            f"method=pretrain trains on reasoning data, not data.format={_s(cfg.data.format)} (data={cfg.data.name})",
            "method, data",
            "use data=gsm8k or data=hotpotqa (or a file in one of those formats), or a fine-tuning method",
        )


def model_spec_fixed(cfg: DictConfig, env: Mapping[str, str]) -> Iterator[Violation]:
    # a family may fix its options' architecture (cognate-25m: docs/decisions/0010-cognate-pretraining-path.md;
    # its 25M parameters are checked when built); the family table says which and how
    from thinker.models.families import spec_problem

    problem = spec_problem(cfg.model)
    if problem:
        yield Violation(problem, "model.arch", f"drop the override: the {cfg.model.name} specification is fixed")


def qlora_needs_4bit(cfg: DictConfig, env: Mapping[str, str]) -> Iterator[Violation]:
    if _s(cfg.method.name) != TrainingMethod.qlora:
        return
    if not cfg.model.supports_4bit:
        yield Violation(
            f"method=qlora needs 4-bit loading, which model={cfg.model.name} does not support",
            "method, model",
            "use method=lora",
        )


def method_supported_by_backend(cfg: DictConfig, env: Mapping[str, str]) -> Iterator[Violation]:
    method = _s(cfg.method.name)
    backend = _s(cfg.backend.name)
    supported = [_s(m) for m in cfg.backend.supported_methods]
    if method not in supported:
        yield Violation(
            f"backend={backend} cannot train with method={method}",
            "backend, method",
            f"choose one of method={','.join(supported)} or another backend",
        )
    # what the chosen provider offers is its adapter's capabilities (thinker.providers), checked by
    # backend=provider's check right after these rules


def provider_matches_backend(cfg: DictConfig, env: Mapping[str, str]) -> Iterator[Violation]:
    backend = _s(cfg.backend.name)
    provider = cfg.provider.name
    if cfg.backend.uses_provider and provider == "none":
        yield Violation(
            f"backend={backend} needs a hosted provider",
            "provider",
            "add provider=together|fireworks|openai (thinker providers list)",
        )
    if not cfg.backend.uses_provider and provider != "none":
        yield Violation(
            f"provider={provider} only takes effect with backend=provider (got backend={backend})",
            "backend, provider",
            "add backend=provider, or drop the provider override",
        )


def credentials_present(cfg: DictConfig, env: Mapping[str, str]) -> Iterator[Violation]:
    # Only the variable's name is ever mentioned, never its value.
    needed = []
    if cfg.backend.api_key_env:
        needed.append(("backend", cfg.backend.api_key_env))
    if cfg.backend.uses_provider and cfg.provider.name != "none":
        needed += [("provider", var) for var in [cfg.provider.api_key_env, *cfg.provider.required_env] if var]
    for group, var in needed:
        if not env.get(var, "").strip():
            yield Violation(
                f"{var} is not set in the environment",
                f"{group}={_s(cfg[group].name)}",
                f"export {var}=<your key> before launching (it is read from the environment only)",
            )


def max_steps_valid(cfg: DictConfig, env: Mapping[str, str]) -> Iterator[Violation]:
    steps = cfg.trainer.max_steps
    if steps != -1 and steps < 1:
        yield Violation(
            f"trainer.max_steps={steps} is not allowed",
            "trainer.max_steps",
            "use a positive number of optimizer steps, or -1 to let trainer.epochs decide",
        )


def validation_split_valid(cfg: DictConfig, env: Mapping[str, str]) -> Iterator[Violation]:
    split = cfg.data.validation_split
    if not 0.0 <= split < 1.0:
        yield Violation(
            f"data.validation_split={split} is outside [0, 1)",
            "data.validation_split",
            "use a fraction such as 0.1 (0 disables the held-out split)",
        )
    max_examples = cfg.data.max_examples
    if max_examples is not None and max_examples < 1:
        yield Violation(
            f"data.max_examples={max_examples} is not allowed",
            "data.max_examples",
            "use a positive count, or null for the whole file",
        )


# Precisions Lightning can train in; fp8 / int8 / int4 are weight formats (4 bit comes from method=qlora).
TRAINING_PRECISIONS = ("fp32", "bf16", "fp16")


def precision_can_train(cfg: DictConfig, env: Mapping[str, str]) -> Iterator[Violation]:
    precision = _s(cfg.trainer.precision)
    if precision not in TRAINING_PRECISIONS:
        yield Violation(
            f"trainer.precision={precision} is a weight format, not a training precision",
            "trainer.precision",
            "use fp32, bf16 or fp16 (4-bit weights come from method=qlora)",
        )
    compute = cfg.method.get("compute_dtype")
    if compute is not None and _s(compute) not in TRAINING_PRECISIONS:
        yield Violation(f"method.compute_dtype={_s(compute)} cannot be computed in", "method.compute_dtype",
                        "use fp32, bf16 or fp16, or null to follow trainer.precision")
    if precision == "fp16" and cfg.backend.runs_here and str(cfg.trainer.accelerator) == "cpu":
        yield Violation("trainer.precision=fp16 mixed precision needs a GPU (the CPU has no fp16 autocast)",
                        "trainer.precision, trainer.accelerator", "use trainer.precision=bf16 or fp32 on the CPU")


def optimizations_supported(cfg: DictConfig, env: Mapping[str, str]) -> Iterator[Violation]:
    supported = cfg.backend.get("supported_optimizations")
    if supported is None:  # a remote service decides; its own capability check applies
        return
    offered = [_s(o) for o in supported]
    for feature in (_s(o) for o in cfg.trainer.optimizations):
        if feature not in offered:
            yield Violation(
                f"trainer.optimizations has {feature}, which backend={_s(cfg.backend.name)} does not implement",
                "trainer.optimizations",
                f"remove it (this backend offers: {', '.join(offered)})",
            )
        elif feature == "flash_attention" and str(cfg.trainer.accelerator) == "cpu":
            yield Violation("trainer.optimizations has flash_attention, which needs a CUDA GPU",
                            "trainer.optimizations, trainer.accelerator",
                            "remove flash_attention on the CPU, or use trainer=gpu")


def output_name_free(cfg: DictConfig, env: Mapping[str, str]) -> Iterator[Violation]:
    # A training run registers its weights at the end: a taken output.name or a corrupt registry must stop
    # it now, not after training. Runs that do not train never read the registry.
    if _s(cfg.stage) not in ("train", "run"):
        return
    from thinker.errors import ThinkerError
    from thinker.models.finetunes import check_output_name

    try:
        check_output_name(cfg)
    except ThinkerError as error:
        yield Violation(error.what, f"output.name={cfg.output.name}" if cfg.output.name else error.where, error.fix)


def evaluation_settings_valid(cfg: DictConfig, env: Mapping[str, str]) -> Iterator[Violation]:
    # Checked up front so a bad eval setting stops a full run before training, not after it.
    ev = cfg.evaluation
    checks = [
        ("evaluation.max_samples", ev.max_samples, ev.max_samples is None or ev.max_samples >= 1,
         "use a positive count, or null for every claim"),
        ("evaluation.batch_size", ev.batch_size, ev.batch_size >= 1, "use a positive batch size"),
        ("evaluation.decoding.max_new_tokens", ev.decoding.max_new_tokens, ev.decoding.max_new_tokens >= 1,
         "use a positive number of tokens"),
        ("evaluation.decoding.temperature", ev.decoding.temperature, ev.decoding.temperature > 0,
         "use a temperature above 0 (do_sample=false for greedy decoding)"),
        ("evaluation.decoding.top_p", ev.decoding.top_p, 0 < ev.decoding.top_p <= 1, "use a value in (0, 1]"),
        ("evaluation.embedding.threshold", ev.embedding.threshold, -1 <= ev.embedding.threshold <= 1,
         "use a cosine similarity in [-1, 1], e.g. 0.7"),
    ]
    for key, value, ok, fix in checks:
        if not ok:
            yield Violation(f"{key}={value} is not allowed", key, fix)


def data_source_valid(cfg: DictConfig, env: Mapping[str, str]) -> Iterator[Violation]:
    fmt = cfg.data.get("source_format")
    if fmt is None:
        return
    if fmt != "scifact":
        yield Violation(f"data.source_format={fmt} is not supported", "data.source_format",
                        "use scifact, or null when data.path is already prompt/completion JSONL")
    elif not cfg.data.claims_file or not cfg.data.corpus_file:
        yield Violation("data.source_format=scifact needs data.claims_file and data.corpus_file",
                        "data.claims_file / data.corpus_file", "set both to SciFact release files")


def hub_dataset_loadable(cfg: DictConfig, env: Mapping[str, str]) -> Iterator[Violation]:
    # data.path=hf://org/name[:split] (thinker.data.hub): a malformed id, or one HF_HUB_OFFLINE=1 cannot load
    # because it is not cached, is known before the validate stage would load it
    from thinker.data.hub import cached, hub_cache_dir, hub_dataset, offline
    from thinker.errors import ThinkerError

    if cfg.data.get("source_format"):
        return
    try:
        hub = hub_dataset(cfg.data.get("path"))
    except ThinkerError as error:
        yield Violation(error.what, error.where, error.fix)
        return
    if hub is not None and offline(env) and not cached(hub[0], env):
        yield Violation(f"hub dataset {hub[0]} is not in the datasets cache ({hub_cache_dir(env)}) and "
                        "HF_HUB_OFFLINE=1 keeps it from being downloaded", f"data.path={cfg.data.path}",
                        "run once online (HF_HUB_OFFLINE unset), or set HF_DATASETS_CACHE to the cache that has it")


def input_files_regular(cfg: DictConfig, env: Mapping[str, str]) -> Iterator[Violation]:
    # A named pipe as an input file would block the run forever, a device would never end: refused before
    # anything opens it (thinker.paths.check_input_file, which the readers call again).
    from thinker.errors import ThinkerError
    from thinker.paths import check_input_file, resolve_input

    keys = ["data.claims_file", "data.corpus_file"] if cfg.data.get("source_format") else ["data.path"]
    if cfg.evaluation.enabled and _s(cfg.stage) in ("eval", "run"):
        keys += ["evaluation.claims_file", "evaluation.corpus_file"]
    for key in keys:
        value = OmegaConf.select(cfg, key, default=None)
        if not value:
            continue
        try:
            check_input_file(resolve_input(str(value)), key)
        except ThinkerError as error:
            yield Violation(error.what, error.where, error.fix)


def data_schema_valid(cfg: DictConfig, env: Mapping[str, str]) -> Iterator[Violation]:
    # Building the specs is the check: keywords that fit the type, regexes compile, validators import and can
    # be called as fn(value, record). The validate stage builds them again from the same config.
    try:
        FieldSpec.from_config(cfg.data.schema)
    except SchemaError as error:
        yield Violation(f"data.schema field {error.field!r}: {error.problem}", f"data.schema{error.where}", error.fix)


def data_format_trainable_by_backend(cfg: DictConfig, env: Mapping[str, str]) -> Iterator[Violation]:
    if _s(cfg.method.name) == TrainingMethod.pretrain:  # its own processors decide (pretrain_needs_reasoning_data)
        return
    formats = cfg.backend.get("data_formats")
    stage, backend, fmt = _s(cfg.stage), _s(cfg.backend.name), str(cfg.data.format)
    task = _task(cfg)
    # a task of the user's own (data.task) gives the backend tokens like any built-in one
    restricted = formats is not None and not cfg.data.get("task") and fmt not in [str(f) for f in formats]
    if stage not in ("train", "run") or task is None or (task.fine_tunes and not restricted):
        return
    trains = (f"backend={backend} trains {', '.join(str(f) for f in formats)} data, not {fmt}" if restricted
              else f"backend={backend} trains fine-tuning data, not {fmt} ({task.describe()} is pretraining data)")
    yield Violation(
        f"data.format={fmt}: {trains} (stage={stage} trains; the file can still be checked with stage=validate)",
        f"data={cfg.data.name}, backend={backend}",
        "use stage=validate to check the file, or train on prompt/completion data (data=sample, data=jsonl)",
    )


def objective_fits_data(cfg: DictConfig, env: Mapping[str, str]) -> Iterator[Violation]:
    # objective=dpo trains on chosen/rejected pairs and nothing else; pairs have no single target for sft
    # (docs/objectives.md, "Preference tuning")
    objective, task = str(OmegaConf.select(cfg, "objective.name", default="sft")), _task(cfg)
    if task is None:
        return
    if objective == "dpo" and not task.pairs:
        yield Violation(f"objective=dpo trains on preference pairs, and data={cfg.data.name} "
                        f"({task.describe()}) has none", "objective, data",
                        "use data=preference (or a file of prompt / chosen / rejected records), or objective=sft")
    elif objective == "sft" and task.pairs and _s(cfg.stage) in ("train", "run"):
        yield Violation(f"data={cfg.data.name} holds preference pairs, which objective=sft cannot train on",
                        "objective, data", "add objective=dpo (stage=validate checks the file with any objective)")


def dpo_settings_valid(cfg: DictConfig, env: Mapping[str, str]) -> Iterator[Violation]:
    if str(OmegaConf.select(cfg, "objective.name", default="sft")) != "dpo":
        return
    beta, loss = cfg.objective.beta, str(cfg.objective.loss)
    if not beta > 0:
        yield Violation(f"objective.beta={beta} is not allowed", "objective.beta",
                        "use a positive strength such as 0.1 (higher keeps the policy nearer the reference)")
    if loss not in DpoLoss.values():
        yield Violation(f"objective.loss={loss} is not a preference loss thinker knows", "objective.loss",
                        f"use one of {', '.join(DpoLoss.values())}")
    reference = str(OmegaConf.select(cfg, "objective.reference", default="base"))
    if reference != "base":  # the weights the run starts from; another model as reference is not offered
        yield Violation(f"objective.reference={reference} is not supported", "objective.reference",
                        "use objective.reference=base (the starting weights; LoRA and QLoRA switch their adapters off)")


def targets_installed(cfg: DictConfig, env: Mapping[str, str]) -> Iterator[Violation]:
    # an optimizer, logger or callback of an uninstalled package fails here, not once the model has loaded
    from thinker.config.targets import missing_package

    callbacks = OmegaConf.select(cfg, "callbacks", default=None) or {}
    for group in ("optimizer", "logger", *(f"callbacks.{name}" for name in callbacks)):
        target = OmegaConf.select(cfg, f"{group}._target_", default=None)
        if target and (package := missing_package(str(target))):
            yield Violation(f"{group}._target_={target} names package {package}, which is not installed",
                            f"{group}._target_", "install it, or fix the name (a module of your own goes on PYTHONPATH)")


GRPO_LOSSES = ("importance_sampling", "ppo", "cispo", "gspo", "dro")  # the Tinker SDK's names (thinker.models.rl_losses)


def grpo_settings_valid(cfg: DictConfig, env: Mapping[str, str]) -> Iterator[Violation]:
    # objective=grpo (docs/objectives.md, "Reinforcement learning"): a backend that samples, a loss Tinker names,
    # sampling settings that sample, and rewards that resolve
    objective = OmegaConf.select(cfg, "objective", default=None)
    if objective is None or str(objective.get("name")) != "grpo" or _s(cfg.stage) not in ("train", "run"):
        return
    if not cfg.backend.get("runs_here") and cfg.backend.get("uses_provider"):
        yield Violation(
            f"objective=grpo cannot run on backend={cfg.backend.name}: a hosted provider's fine-tuning API takes "
            "a data file and trains on it, while reinforcement learning samples from the policy every step",
            "objective, backend", "use backend=local (this machine) or backend=tinker (Tinker, or thinker tinker-serve)")
    if _s(cfg.method.name) == TrainingMethod.pretrain:
        yield Violation("objective=grpo fine-tunes a model that can already write; method=pretrain builds one",
                        "objective, method", "use method=lora, qlora or full")
    if str(objective.loss) not in GRPO_LOSSES:
        yield Violation(f"objective.loss={objective.loss} is not a policy-gradient loss thinker trains with",
                        "objective.loss", f"use one of {', '.join(GRPO_LOSSES)}")
    if int(objective.group_size) < 2:
        yield Violation(f"objective.group_size={objective.group_size}: advantages compare the completions of a "
                        "group, so a group needs at least 2", "objective.group_size", "use 2 or more (4-16 is usual)")
    for key, ok, fix in (("temperature", float(objective.temperature) > 0, "a number above 0 (1.0 samples the policy)"),
                         ("top_p", 0 < float(objective.top_p) <= 1, "a number in (0, 1]"),
                         ("max_new_tokens", int(objective.max_new_tokens) >= 1, "1 or more"),
                         ("kl_coef", float(objective.kl_coef) >= 0, "0 (no penalty) or more")):
        if not ok:
            yield Violation(f"objective.{key}={objective[key]} is out of range", f"objective.{key}", f"use {fix}")
    processes = cfg.trainer.devices if isinstance(cfg.trainer.devices, int) else None
    if cfg.backend.get("runs_here") and ((processes or 1) > 1 or int(cfg.trainer.num_nodes) > 1):
        yield Violation("objective=grpo trains in one process (its steps sample as they go)",
                        "trainer.devices, trainer.num_nodes", "use trainer.devices=1 trainer.num_nodes=1")
    from thinker.errors import ThinkerError
    from thinker.rewards.spec import reward_specs

    try:
        reward_specs(objective.rewards)
    except ThinkerError as error:
        yield Violation(error.what, error.where, error.fix)


def hparams_search_valid(cfg: DictConfig, env: Mapping[str, str]) -> Iterator[Violation]:
    # hparams_search=<option>: a direction the sweeper knows, an objective this run reports, an RDB URL
    from thinker.sweeps.search import search_problems

    for what, where, fix in search_problems(cfg):
        yield Violation(what, where, fix)


RULES: list[Rule] = [
    max_steps_valid,
    validation_split_valid,
    grokfast_only_for_pretraining,
    pretrain_needs_buildable_model,
    pretrain_needs_reasoning_data,
    model_spec_fixed,
    qlora_needs_4bit,
    provider_matches_backend,
    method_supported_by_backend,
    credentials_present,
    precision_can_train,
    optimizations_supported,
    output_name_free,
    evaluation_settings_valid,
    data_source_valid,
    hub_dataset_loadable,
    input_files_regular,
    data_task_known,
    data_schema_valid,
    data_format_trainable_by_backend,
    objective_fits_data,
    dpo_settings_valid,
    targets_installed,
    grpo_settings_valid,
    hparams_search_valid,
]


def violations(cfg: DictConfig, env: Mapping[str, str]) -> list[Violation]:
    return [v for rule in RULES for v in rule(cfg, env)]
