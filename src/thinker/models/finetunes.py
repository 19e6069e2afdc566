"""Register a run's trained weights in the model registry, with its lineage (docs/decisions/0008-local-model-registry.md).

A run's weights stay in its run folder; the registry entry points at them. The name is `output.name`, or
`{base}-finetuned-{timestamp}` (with a counter when parallel jobs finish in the same second).
Smoke runs (trainer.max_steps below output.register_min_steps) and runs with output.register=false are not
registered (should_register), so the registry holds the models worth choosing from.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from thinker.errors import ThinkerError
from thinker.models.registry import Registry, RegistryEntry, check_name, name_taken_error
from thinker.tracking.atomic import atomic_write_json

# The default of output.register_min_steps (thinker.config.schema.OutputConfig says why 20).
REGISTER_MIN_STEPS = 20
# run metrics kept in a fine-tune's registry entry (`extra`): what `thinker models list` shows
KEPT_METRICS = ("val_loss", "train_loss", "optimizer_steps")


def default_finetune_name(base: str, taken: set[str], now: datetime | None = None, verb: str = "finetuned") -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    name = f"{base}-{verb}-{stamp}"
    counter = 2
    while name in taken:
        name = f"{base}-{verb}-{stamp}-{counter}"
        counter += 1
    return name


def _setting(cfg: Any, key: str, default: Any) -> Any:
    """cfg's value at the dotted `key`, `default` when it is absent or null (plain test configs lack keys)."""
    node = cfg
    for part in key.split("."):
        try:
            node = node[part] if isinstance(node, dict) else getattr(node, part)
        except (AttributeError, KeyError):
            return default
        if node is None:
            return default
    return node


def should_register(cfg: Any, optimizer_steps: int | None = None) -> tuple[bool, str]:
    """Whether the run's weights go into the model registry, and why (the reason is logged when they do not).

    Not with output.register=false, nor when 0 < trainer.max_steps < output.register_min_steps (a smoke run);
    trainer.max_steps=-1 (the epochs decide) always registers. The decision follows the configured max_steps,
    the run's intent, so it can be made before training (optimizer_steps=None) and after it alike;
    optimizer_steps, when known, only goes into the reason."""
    trained = f" ({int(optimizer_steps)} optimizer steps trained)" if optimizer_steps is not None else ""
    if not bool(_setting(cfg, "output.register", True)):
        return False, f"output.register=false{trained}"
    max_steps = int(_setting(cfg, "trainer.max_steps", -1))
    minimum = int(_setting(cfg, "output.register_min_steps", REGISTER_MIN_STEPS))
    if max_steps <= 0:
        return True, f"trainer.max_steps={max_steps}: the epochs decide the run's length{trained}"
    if max_steps < minimum:
        return False, (f"trainer.max_steps={max_steps} is below output.register_min_steps={minimum}, a smoke run"
                       f"{trained}; output.register_min_steps={max_steps} registers it")
    return True, f"trainer.max_steps={max_steps} >= output.register_min_steps={minimum}{trained}"


def check_output_name(cfg: Any, registry: Registry | None = None) -> None:
    """Before training: the registry parses, and output.name (when given) is valid and still free. A run that
    will not register (should_register) only needs a valid name: the registry is not read."""
    if not should_register(cfg)[0]:
        if cfg.output.name is not None:
            check_name(str(cfg.output.name))
        return
    registry = registry or Registry()
    entries = registry.entries()  # corrupt -> a clear error now, not after hours of training
    name = cfg.output.name
    if name is None:
        return
    check_name(str(name))
    if any(e.model_name == str(name) for e in entries):
        raise name_taken_error(str(name), registry.path)


def register_run_output(cfg: Any, weights: Any, mlflow_run_id: str | None,
                        registry: Registry | None = None, metrics: dict | None = None,
                        run_dir: Path | None = None) -> RegistryEntry:
    """Add the run's weights (a thinker.backends.WeightsRef, or a local folder) to the registry; local weights
    also get the lineage in their metadata.json. Unconditional: the caller asks should_register first.

    `metrics` (the run's): val_loss, train_loss and optimizer_steps are kept in the entry's `extra`, which
    also says whether output.name named it (`named`; `thinker models prune` only forgets unnamed ones)."""
    registry = registry or Registry()
    uri = str(getattr(weights, "uri", weights))
    local = Path(uri) if getattr(weights, "is_local", True) else None
    # the run folder (its config, and for remote weights what sampling them needs, e.g. the tokenizer)
    folder = run_dir if run_dir is not None else (local.resolve().parent if local else None)
    base = str(cfg.model.name)  # the registry name for a registry model, the option name for a shipped one
    wanted = cfg.output.name
    pretrained = str(cfg.method.name) == "pretrain"
    kept = {k: int(metrics[k]) if k == "optimizer_steps" else float(metrics[k])
            for k in KEPT_METRICS if metrics and metrics.get(k) is not None}

    def make(entries: list[RegistryEntry]) -> RegistryEntry:
        taken = {e.model_name for e in entries}
        name = str(wanted) if wanted is not None else default_finetune_name(
            base, taken, verb="pretrained" if pretrained else "finetuned")
        if name in taken:  # registered by another job since the config check
            raise name_taken_error(name, registry.path)
        parent = next((e for e in entries if e.model_name == base), None)
        return RegistryEntry(
            model_name=name,
            model_id=parent.model_id if parent else str(cfg.model.source),
            # a from-scratch model descends from no weights: its config option is recorded instead
            source="pretrain" if pretrained else "finetune",
            architecture=str(cfg.model.family),
            local_path=str(local.resolve()) if local else None,
            weights_uri=None if local else uri,
            license=parent.license if parent else None,
            fine_tuned_from=None if pretrained else base,
            version=1,
            mlflow_run_id=mlflow_run_id,
            params=cfg.model.params,
            recommended_lr=float(cfg.model.recommended_lr),
            supports_4bit=bool(cfg.model.supports_4bit),
            extra={"method": str(cfg.method.name), "backend": str(cfg.backend.name),
                   "base_model": str(cfg.model.name), **({"run_dir": str(Path(folder).resolve())} if folder else {}),
                   "named": wanted is not None, **hosted_lineage(cfg), **kept,
                   **({"pretrained_from": base} if pretrained else {})},
        )

    try:
        entry = registry.add(make)
    except ThinkerError as error:
        raise ThinkerError(error.what, error.where, f"{error.fix}; the weights are kept in {uri}",
                           stage="record") from error
    if local is not None:
        add_lineage_to_metadata(local, entry)
    return entry


def hosted_lineage(cfg: Any) -> dict[str, str]:
    """backend=provider: the provider and the model id it fine-tuned (the model option may only name it)."""
    if not _setting(cfg, "backend.uses_provider", False) or not _setting(cfg, "provider.base_model", None):
        return {}
    return {"provider": str(cfg.provider.name), "provider_base_model": str(cfg.provider.base_model)}


def add_lineage_to_metadata(weights_dir: Path, entry: RegistryEntry) -> None:
    path = weights_dir / "metadata.json"
    existing = json.loads(path.read_text()) if path.is_file() else {}
    atomic_write_json(path, {**existing, "registered_as": entry.model_name,
                             "fine_tuned_from": entry.fine_tuned_from, "architecture": entry.architecture,
                             "mlflow_run_id": entry.mlflow_run_id, "registry": asdict(entry)})
