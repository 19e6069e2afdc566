"""Builtin models: a causal LM built from `model.arch` (a tiny Qwen, or the Cognate model: docs/decisions/0010-cognate-pretraining-path.md), with a
locally trained tokenizer.

It needs no download. The first run builds it under `models_dir()/builtin/<name>-<hash>` and later runs reuse
that folder. The hash covers everything the weights depend on (arch, seed, tokenizer corpus, FORMAT_VERSION),
so changing any of them builds a new folder instead of silently reusing stale weights.

Concurrent jobs (a Hydra multirun) may build at once: each builds in its own temp dir and renames it onto the
target; the first rename wins and the others discard their copy and use the winner's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from thinker.errors import ThinkerError
from thinker.models.families import FAMILIES, buildable, resolve
from thinker.models.paths import models_dir

log = logging.getLogger("thinker")

# Bump when the build recipe changes (tokenizer settings, config defaults, file layout): it changes the hash.
FORMAT_VERSION = 1
COMPLETE_MARKER = "COMPLETE"
METADATA_FILE = "metadata.json"
DEFAULT_VOCAB_SIZE = 4096


def builtin_dir(model_cfg: Any, seed: int, corpus_files: list[Path]) -> Path:
    """The folder of the builtin model for this config, seed and tokenizer corpus."""
    key = {
        "arch": _plain_arch(model_cfg),
        "family": str(model_cfg.family),
        "seed": int(seed),
        "corpus": corpus_identity(corpus_files),
        "format": FORMAT_VERSION,
    }
    family = FAMILIES.get(str(model_cfg.family))
    code_version = family.code_version if family else None
    if code_version is not None:  # the family's own code version: a change to the architecture rebuilds
        name, target = code_version
        key[name] = resolve(target)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return models_dir() / "builtin" / f"{model_cfg.name}-{digest}"


def corpus_identity(corpus_files: list[Path]) -> str:
    """A hash of the corpus files' contents (not their paths): the same data anywhere gives the same model."""
    digest = hashlib.sha256()
    for path in corpus_files:
        digest.update(hashlib.sha256(Path(path).read_bytes()).digest())
    return digest.hexdigest()


def is_complete(folder: Path) -> bool:
    return (folder / COMPLETE_MARKER).is_file()


def ensure_builtin(model_cfg: Any, seed: int, corpus_files: list[Path]) -> Path:
    """Return the builtin model's folder, building it first if no complete build exists."""
    corpus_files = [Path(p) for p in corpus_files]
    _check_builtin_config(model_cfg, corpus_files)
    target = builtin_dir(model_cfg, seed, corpus_files)
    if is_complete(target):
        return target

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        _build_into(staging, model_cfg, seed, corpus_files, target)
        _publish(staging, target)
    finally:
        # gone after a successful rename; still here if the build failed or another process won the race
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _publish(staging: Path, target: Path) -> None:
    """Atomically move the finished build onto `target`, unless another process already did."""
    try:
        os.rename(staging, target)
    except OSError as error:
        # rename() refuses to replace a non-empty directory: another job got there first
        if is_complete(target):
            log.info("builtin model %s was built by another job meanwhile; using it", target.name)
            return
        if not target.exists():
            raise ThinkerError(
                f"could not move the built model into {target} ({error.strerror})",
                "model.source=builtin",
                "make THINKER_MODELS_DIR (default ./models) a writable folder",
                stage="train",
            ) from None
        raise ThinkerError(
            f"builtin model folder {target} exists but is incomplete (no {COMPLETE_MARKER} marker)",
            "model.source=builtin",
            "delete that folder and run again",
            stage="train",
        ) from None


def _build_into(folder: Path, model_cfg: Any, seed: int, corpus_files: list[Path], target: Path) -> None:
    """Train the tokenizer, initialise the model from `arch` with `seed`, and save both into `folder`."""
    import torch
    from transformers import AutoModelForCausalLM

    from thinker.models.adapters import get_adapter
    from thinker.models.tokenizer import train_tokenizer

    arch = _plain_arch(model_cfg)
    tokenizer = train_tokenizer(_corpus_texts(corpus_files), int(arch.get("vocab_size", DEFAULT_VOCAB_SIZE)))
    get_adapter(str(model_cfg.family)).register()  # from_config must know the family's config class
    config = _model_config(model_cfg, arch, tokenizer)

    torch.manual_seed(seed)  # the only randomness: the weight initialisation
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    parameters = sum(p.numel() for p in model.parameters())
    log.info("building builtin model %s (%s parameters) into %s", model_cfg.name, f"{parameters:,}", target)

    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    metadata = {
        "name": str(model_cfg.name),
        "family": str(model_cfg.family),
        "source": "builtin",
        "arch": arch,
        "vocab_size": config.vocab_size,
        "seed": int(seed),
        "parameters": parameters,
        "format_version": FORMAT_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    (folder / COMPLETE_MARKER).write_text("")  # written last: its presence means every file above is there


def _model_config(model_cfg: Any, arch: dict[str, Any], tokenizer: Any) -> Any:
    family = FAMILIES[str(model_cfg.family)]
    config_class = resolve(family.config_class)
    if family.config_settings is not None:
        # a fixed specification (cognate: a fixed vocab_size, so the parameter count does not depend on the
        # corpus); the tokenizer fits in it
        return config_class(**resolve(family.config_settings)(model_cfg, tokenizer))
    settings = {
        **arch,
        # the embedding matrix must cover every token id the tokenizer can produce, and no more
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": tokenizer.bos_token_id,
    }
    if family.head_dim_from_width and "head_dim" not in arch:
        # Qwen3Config defaults head_dim to 128 whatever the width; a tiny model wants hidden/heads
        settings["head_dim"] = settings["hidden_size"] // settings["num_attention_heads"]
    return config_class(**settings)


def _corpus_texts(corpus_files: list[Path]) -> Iterator[str]:
    """The text of each JSONL record: prompt and completion, the way the model will see them; a record with
    other fields (GSM8K's question/answer, HotpotQA's question, answer and context) gives all its strings."""
    for path in corpus_files:
        with open(path, encoding="utf-8") as lines:
            for line in lines:
                if line.strip():
                    record = json.loads(line)
                    if "prompt" in record or "completion" in record:
                        yield f"{record.get('prompt', '')}\n{record.get('completion', '')}"
                    else:
                        yield "\n".join(_strings(record))


def _strings(value: Any) -> Iterator[str]:
    """Every string inside a JSON value, in document order."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _plain_arch(model_cfg: Any) -> dict[str, Any]:
    """`arch` as plain JSON-able Python (it may arrive as an OmegaConf DictConfig)."""
    from omegaconf import DictConfig, OmegaConf

    arch = model_cfg.arch
    if isinstance(arch, DictConfig):
        return OmegaConf.to_container(arch, resolve=True)
    return json.loads(json.dumps(dict(arch or {})))


def _check_builtin_config(model_cfg: Any, corpus_files: list[Path]) -> None:
    family = str(model_cfg.family)
    if family not in buildable():
        raise ThinkerError(
            f"model family {family!r} cannot be built from its config (builtin supports {buildable()})",
            f"model={model_cfg.name} (model.family)",
            "pick model=tiny-qwen or set model.source to a hub id or a local folder",
            stage="train",
        )
    settings = FAMILIES[family].config_settings
    if settings is not None:
        resolve(settings)(model_cfg)  # a changed fixed specification stops here, before the tokenizer is trained
    if not corpus_files:
        raise ThinkerError(
            "no corpus to train the builtin model's tokenizer on",
            f"model={model_cfg.name}",
            "pass the JSONL training data (e.g. data/sample/claims.jsonl)",
            stage="train",
        )
    for path in corpus_files:
        if not path.is_file():
            raise ThinkerError(
                f"tokenizer corpus {path} does not exist",
                f"model={model_cfg.name}",
                "point data.path at an existing JSONL file",
                stage="train",
            )
