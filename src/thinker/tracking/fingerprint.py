"""The config fingerprint: same fingerprint <=> same training.

config_fingerprint(cfg) is the SHA256 of fingerprint_inputs(cfg), a canonical dict of exactly what changes
the trained weights (an allow-list; a new config key changes nothing until it is added here):

- model: what the weights start from, by content, never by name or path spelling
    * ``model.source: builtin`` -> arch, family, seed, the tokenizer corpus *content*
      (thinker.models.builtin.corpus_identity) and the builtin recipe's FORMAT_VERSION. Nothing is built.
    * a local folder (registry models too: their source is a folder) -> SHA256 of each weight, config,
      adapter and tokenizer file in it (WEIGHT_FILES), cached by file identity (see file_sha256).
    * a hub id -> the id and the revision resolved to a commit sha through the local Hugging Face cache
      (no network); when the model is not cached, the configured revision (null -> "main"). A model's
      fingerprint therefore changes once, from "main" to the commit, when it is first downloaded.
    * backend=tinker trains model.tinker_name on the service, so that is included as well.
- data: SHA256 of the training file's content (data.path resolved like thinker.paths.resolve_input; for
  ``data.source_format: scifact`` the claims and corpus files), plus the keys that change what is trained on
  (DATA_KEYS). Not the path spelling, not data.name, not data.schema (the schema only validates).
- method (every key), optimizer (every key, scheduler included, lr resolved), the trainer keys in
  TRAINER_KEYS, backend and provider names, seed.
- Not: logger.*, evaluation.*, validation.*, output.*, stage, debug, resume, hydra.*, and the trainer's
  cadence and placement keys (see TRAINER_KEYS).

Any part that cannot be determined (missing data file, missing model folder, a ``???`` value) is None: the
fingerprint is still computed, and differs from the one with that part present.

Imports stay light: no torch, transformers or mlflow (huggingface_hub only for hub ids).
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from thinker.tracking.file_hashes import file_sha256

log = logging.getLogger("thinker")

# Bump when what goes into the fingerprint changes, so old and new fingerprints never compare equal.
FINGERPRINT_VERSION = 2

# Keys resolved_container drops by default: they need a Hydra runtime or only say where outputs go.
IGNORED_KEYS = (
    "output.dir",
    "evaluation.output_path",
    "stage",
    "debug",
    "resume",
    "validation.max_errors_shown",
    "logger.tracking_uri",
    "logger.run_name",
)

# data.* keys that change which examples are trained on and how they are weighted.
DATA_KEYS = (
    "format",  # how prompts/completions are rendered and weighted
    "prompt_field",
    "completion_field",
    "max_examples",
    "validation_split",  # the held-out part is not trained on
    "shuffle",
    "claim_c1_weight",
    "evidence_weight",
    "source_format",  # scifact: the training file is converted from claims_file + corpus_file
    "task",  # a task module of the user's own reads and tokenises the data (only when set)
)

# trainer.* keys that change the trained weights.
TRAINER_KEYS = (
    "max_steps",
    "epochs",
    "batch_size",
    "grad_accum",
    "max_seq_length",
    "precision",
    "train_on_inputs",
    "optimizations",  # minus WEIGHT_NEUTRAL_OPTIMIZATIONS, as a sorted set
    # devices, num_nodes and strategy decide how many replicas each take batch_size examples (ddp: the global
    # batch is batch_size x devices x num_nodes), so they change the optimisation.
    "devices",
    "strategy",
    "num_nodes",  # only when not 1, so single-machine fingerprints stay what they were before the key existed
)
# Left out on purpose:
#   accelerator        where the same computation runs (cpu or gpu); precision is included separately
#   num_workers        data loading parallelism only (where a trainer config has it)
#   log_every_n_steps  logging cadence
#   evaluations        held-out evaluation and checkpoint cadence; the weights trained are the same
#   save_total_limit   how many checkpoints are kept
#   name               the preset's label (cpu, gpu, ...); its values are what counts
# memory and speed only: the same loss and gradients, within float rounding (fused_kernels: the loss computed
# from hidden states in chunks; docs/backends/local.md, "Speed and memory")
WEIGHT_NEUTRAL_OPTIMIZATIONS = frozenset({"gradient_checkpointing", "activation_offloading", "fused_kernels"})

# Files of a model folder that decide what training starts from (top level of the folder).
WEIGHT_SUFFIXES = (".safetensors", ".safetensors.index.json")
WEIGHT_FILES = frozenset({
    "config.json",
    "adapter_config.json",  # a PEFT adapter folder: its settings and its base (base_model_name_or_path)
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.json", "merges.txt", "tokenizer.model", "chat_template.jinja",
})



# ---------------------------------------------------------------- resolved config (MLflow params)


def resolved_container(cfg: DictConfig, drop: tuple[str, ...] = IGNORED_KEYS) -> dict[str, Any]:
    """The config as plain JSON-able data, resolved, with the `drop` keys removed before resolving.

    Dropping first matters: output.dir interpolates Hydra's runtime, which is absent in tests and tools.
    """
    plain = OmegaConf.to_container(cfg, resolve=False)
    for dotted in drop:
        *parents, leaf = dotted.split(".")
        node = plain
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    copy = OmegaConf.create(plain)
    return OmegaConf.to_container(copy, resolve=True, enum_to_str=True)  # type: ignore[return-value]


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


# ---------------------------------------------------------------- the fingerprint


def config_fingerprint(cfg: DictConfig) -> str:
    """SHA256 (hex) of fingerprint_inputs(cfg): equal exactly when the training would be the same."""
    return fingerprint_of(fingerprint_inputs(cfg))


def fingerprint_of(inputs: dict[str, Any]) -> str:
    """The fingerprint of already computed fingerprint_inputs (to record both without hashing files twice)."""
    return hashlib.sha256(canonical_json(inputs).encode()).hexdigest()


def fingerprint_inputs(cfg: DictConfig) -> dict[str, Any]:
    """The canonical, JSON-able dict that config_fingerprint hashes (for the run record and debugging)."""
    backend = _str_or_none(_select(cfg, "backend.name"))
    return {
        "fingerprint_version": FINGERPRINT_VERSION,
        "model": _model_identity(cfg, backend),
        "data": _data_identity(cfg),
        "method": _plain(_select(cfg, "method")),
        "optimizer": _optimizer_identity(cfg),
        "trainer": _trainer_identity(cfg),
        "backend": backend,
        "provider": _provider_identity(cfg),
        "seed": _plain(_select(cfg, "seed")),
        **_objective_identity(cfg),
    }


# ---------------------------------------------------------------- parts


def _optimizer_identity(cfg: DictConfig) -> Any:
    """optimizer.*, less how it is built: `_partial_` never changes the weights, and a shipped option's own
    `_target_` is already said by its name. Both keys came after the fingerprints of earlier runs, which stay
    valid (docs/sweeps.md: a finished run with the same fingerprint is reused); a target of your own counts."""
    out = _plain(_select(cfg, "optimizer"))
    if isinstance(out, dict):
        out.pop("_partial_", None)
        if out.get("_target_") is not None and out.get("_target_") == _shipped_target("optimizer", out.get("name")):
            del out["_target_"]
    return out


@functools.cache
def _shipped_target(group: str, option: Any) -> str | None:
    """The `_target_` conf/<group>/<option>.yaml ships, or None for an option the project does not ship."""
    from thinker.paths import project_root

    root = project_root()
    path = root / "conf" / group / f"{option}.yaml" if root is not None and isinstance(option, str) else None
    if path is None or not path.is_file():
        return None
    target = OmegaConf.load(path).get("_target_")
    return None if target is None else str(target)


def _select(cfg: Any, key: str) -> Any:
    """cfg[key], or None when it is absent, ``???`` or cannot be resolved."""
    try:
        return OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
    except Exception:  # noqa: BLE001 - an interpolation that cannot resolve here (e.g. ${hydra:...})
        return None


def _plain(value: Any) -> Any:
    """JSON-able plain data (enums as their names); None for a node that cannot be resolved."""
    if isinstance(value, DictConfig) or OmegaConf.is_list(value):
        try:
            return OmegaConf.to_container(value, resolve=True, enum_to_str=True, throw_on_missing=False)
        except Exception:  # noqa: BLE001
            return None
    if isinstance(value, enum.Enum):
        return str(value.name)
    return value


def _str_or_none(value: Any) -> str | None:
    value = _plain(value)
    return None if value is None else str(value)


def _objective_identity(cfg: DictConfig) -> dict[str, Any]:
    """{"objective": ...} for an objective other than sft; {} for sft (or no objective group), so every
    supervised run's fingerprint stays what it was before the group existed (docs/sweeps.md, run reuse)."""
    objective = _plain(_select(cfg, "objective"))
    if not isinstance(objective, dict) or objective.get("name", "sft") == "sft":
        return {}
    return {"objective": objective}


def _provider_identity(cfg: DictConfig) -> Any:
    """The provider's name; for a hosted provider also the model it fine-tunes and its custom parameters (the
    same run at another base model or with other options is another training). provider=none stays a name,
    so other backends' fingerprints do not change."""
    name = _str_or_none(_select(cfg, "provider.name"))
    if name in (None, "none") or not _select(cfg, "backend.uses_provider"):
        return name
    identity = {"name": name, "base_model": _str_or_none(_select(cfg, "provider.base_model")),
                "options": _plain(_select(cfg, "provider.options"))}
    metadata = _plain(_select(cfg, "provider.metadata"))
    if metadata:  # parameters passed to the provider as they are; only when set (fingerprints without stay)
        identity["metadata"] = metadata
    return identity


def _trainer_identity(cfg: DictConfig) -> dict[str, Any]:
    out = {key: _plain(_select(cfg, f"trainer.{key}")) for key in TRAINER_KEYS}
    if out.get("num_nodes") in (1, None):
        del out["num_nodes"]
    if isinstance(out.get("optimizations"), list):
        out["optimizations"] = sorted({str(o) for o in out["optimizations"]} - WEIGHT_NEUTRAL_OPTIMIZATIONS)
    return out


def _data_identity(cfg: DictConfig) -> dict[str, Any]:
    from thinker.paths import resolve_input

    out: dict[str, Any] = {key: _plain(_select(cfg, f"data.{key}")) for key in DATA_KEYS}
    if out.get("task") is None:  # unset: the fingerprints from before the key existed stay what they were
        del out["task"]
    if out.get("source_format"):
        for key in ("claims_file", "corpus_file"):
            configured = _select(cfg, f"data.{key}")
            out[f"{key}_sha256"] = file_sha256(resolve_input(str(configured))) if configured else None
    else:
        configured = _select(cfg, "data.path")
        if str(configured).startswith("hf://"):  # a hub dataset (thinker.data.hub): its id and split name it
            out["hub"] = str(configured)
        out["sha256"] = file_sha256(resolve_input(str(configured))) if configured else None
    return out


def _model_identity(cfg: DictConfig, backend: str | None) -> dict[str, Any] | None:
    from thinker.models.loading import _looks_like_path as looks_like_path  # one rule for "is this a folder"

    source = _str_or_none(_select(cfg, "model.source"))
    if source is None:
        return None
    family = _str_or_none(_select(cfg, "model.family"))
    if source == "builtin":
        out = _builtin_identity(cfg, family)
    else:
        folder = Path(source).expanduser()  # as thinker.models.loading.resolve_model_path reads it
        if folder.is_dir():
            out = {"kind": "folder", "family": family, "files": folder_weights_sha256(folder)}
        elif looks_like_path(source):
            out = {"kind": "folder", "family": family, "files": None}  # missing: the run will say so
        else:
            revision = _str_or_none(_select(cfg, "model.revision"))
            out = {"kind": "hub", "family": family, "id": source, "revision": hub_commit(source, revision)}
    if backend == "tinker":
        out["tinker_name"] = _str_or_none(_select(cfg, "model.tinker_name"))
    return out


def _builtin_identity(cfg: DictConfig, family: str | None) -> dict[str, Any]:
    from thinker.models.builtin import FORMAT_VERSION, corpus_identity
    from thinker.paths import resolve_input

    corpus_files = [resolve_input(str(p)) for p in (_plain(_select(cfg, "model.tokenizer_corpus")) or [])]
    try:
        corpus = corpus_identity(corpus_files) if corpus_files else None
    except OSError:  # a corpus file is missing or unreadable
        corpus = None
    return {
        "kind": "builtin",
        "family": family,
        "arch": _plain(_select(cfg, "model.arch")),
        "seed": _plain(_select(cfg, "seed")),  # the builtin model's weights are initialised with it
        "corpus": corpus,
        "format_version": FORMAT_VERSION,
    }


# ---------------------------------------------------------------- model folders and hub ids


def folder_weights_sha256(folder: Path) -> dict[str, str | None] | None:
    """{file name: sha256} for the files of `folder` that decide the starting weights; None without weights."""
    try:
        names = sorted(p.name for p in Path(folder).iterdir() if p.is_file())
    except OSError:
        return None
    chosen = [n for n in names if n in WEIGHT_FILES or n.endswith(WEIGHT_SUFFIXES)]
    if not any(n.endswith(".safetensors") for n in chosen):
        return None  # no weights: loading will fail and say why
    return {name: file_sha256(Path(folder) / name) for name in chosen}


def hub_commit(repo_id: str, revision: str | None) -> str:
    """The commit sha `revision` points at in the local Hugging Face cache, else the revision itself."""
    wanted = revision or "main"
    if len(wanted) == 40 and all(c in "0123456789abcdef" for c in wanted):
        return wanted
    try:
        from huggingface_hub import constants
        from huggingface_hub.file_download import repo_folder_name

        ref = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model") / "refs" / wanted
        commit = ref.read_text().strip() if ref.is_file() else ""
    except Exception:  # noqa: BLE001 - no cache, no huggingface_hub, an odd revision name: use the name
        commit = ""
    return commit or wanted
