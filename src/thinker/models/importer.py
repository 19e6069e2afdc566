"""`thinker models import`: copy a Hugging Face model (hub id, hub URL or local folder) into models/ and register it.

Order matters: the license is shown and acknowledged, then disk space and memory needs are checked, and only
then do bytes move. Downloads go through huggingface_hub (snapshot_download and its progress bar), with
HF_TOKEN from the environment and never printed. Only safetensors weights are accepted.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from thinker.errors import ThinkerError
from thinker.errors.wording import with_article
from thinker.models.adapters import get_adapter
from thinker.models.families import importable
from thinker.models.registry import (
    Registry,
    RegistryEntry,
    check_name,
    name_taken_error,
    versioned_name,
)

log = logging.getLogger("thinker")

# what a causal LM needs to load and tokenize; pickle weights are never fetched
ALLOW_PATTERNS = ["*.safetensors", "*.safetensors.index.json", "*.json", "*.txt", "*.model", "*.tiktoken",
                  "*.md", "LICENSE*", "*.py"]
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
DISK_HEADROOM = 1.10  # index files, tokenizer and filesystem slack on top of the weights
HUB_URL = re.compile(r"^(?:https?://)?(?:www\.)?(?:huggingface\.co|hf\.co)/(?P<id>[^/]+/[^/?#]+)"
                     r"(?:/(?:tree|resolve|blob)/(?P<rev>[^/?#]+))?")
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass
class ImportSource:
    model_id: str  # hub id, or the folder's absolute path
    revision: str | None
    folder: Path | None = None  # a local folder (given, or the hub cache's snapshot)
    kind: str = "huggingface"  # huggingface | local
    license: str | None = None
    file_sizes: dict[str, int] = field(default_factory=dict)
    model_type: str | None = None


def parse_source(text: str, revision: str | None) -> ImportSource:
    """A local folder, a hub URL (…/tree/<rev> sets the revision) or a hub id."""
    folder = Path(text).expanduser()
    if folder.is_dir():
        return ImportSource(model_id=str(folder.resolve()), revision=None, folder=folder.resolve(), kind="local")
    match = HUB_URL.match(text.strip())
    if match:
        return ImportSource(model_id=match["id"], revision=revision or match["rev"])
    if text.startswith(("/", "./", "../", "~")) or text.count("/") > 1:
        raise ThinkerError(f"folder {text} does not exist", "thinker models import",
                           "give an existing folder, a hub id (Qwen/Qwen2.5-0.5B-Instruct) or a hub URL",
                           stage="config")
    return ImportSource(model_id=text.strip(), revision=revision)


def default_name(source: ImportSource) -> str:
    base = Path(source.model_id).name if source.kind == "local" else source.model_id.split("/")[-1]
    return re.sub(r"[^a-z0-9._-]+", "-", base.lower()).strip("-._") or "model"


# ---------------------------------------------------------------- what is there (before any download)


def inspect_source(source: ImportSource) -> None:
    """Fill in license, file sizes and model type: from the folder, the hub cache, or the hub's metadata."""
    if source.kind == "huggingface":
        source.folder = cached_snapshot(source)
        if source.folder is None:
            _inspect_hub(source)
            return
    _inspect_folder(source)


def cached_snapshot(source: ImportSource) -> Path | None:
    """The snapshot already in the hub cache (nothing to download then), else None."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = snapshot_download(source.model_id, revision=source.revision, allow_patterns=ALLOW_PATTERNS,
                                 local_files_only=True)
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError):
        return None
    except OSError:  # anything else is not a cache hit either; the online path reports the real problem
        return None
    return Path(path)


def _inspect_folder(source: ImportSource) -> None:
    folder = source.folder
    assert folder is not None
    files = [p for p in folder.iterdir() if p.is_file()]
    source.file_sizes = {p.name: p.stat().st_size for p in files}
    refuse_pickle_only(list(source.file_sizes), source)
    config = folder / "config.json"
    if config.is_file():
        source.model_type = json.loads(config.read_text()).get("model_type")
    readme = folder / "README.md"
    source.license = source.license or (card_license(readme.read_text(errors="replace")) if readme.is_file() else None)


def _inspect_hub(source: ImportSource) -> None:
    from huggingface_hub import HfApi

    from thinker.models.loading import hub_errors, hub_token

    with restaged(), hub_errors(source.model_id, source.revision):
        info = HfApi().model_info(source.model_id, revision=source.revision, files_metadata=True,
                                  token=hub_token())
    siblings = info.siblings or []
    source.file_sizes = {s.rfilename: int(s.size or 0) for s in siblings if _allowed(s.rfilename)}
    refuse_pickle_only([s.rfilename for s in siblings], source)
    card = info.card_data.to_dict() if info.card_data is not None else {}
    source.license = card.get("license_name") or card.get("license")
    source.model_type = (info.config or {}).get("model_type")


def _allowed(name: str) -> bool:
    from fnmatch import fnmatch

    return any(fnmatch(Path(name).name, pattern) for pattern in ALLOW_PATTERNS)


def refuse_pickle_only(names: list[str], source: ImportSource) -> None:
    if any(n.endswith(".safetensors") for n in names):
        return
    pickles = sorted(n for n in names if n.endswith(PICKLE_SUFFIXES))
    what = (f"{source.model_id} has only pickle weights ({', '.join(pickles)}); thinker imports safetensors only"
            if pickles else f"{source.model_id} has no model weights (no *.safetensors file)")
    raise ThinkerError(what, "thinker models import",
                       "convert it with save_pretrained(..., safe_serialization=True) and import that folder",
                       stage="record")


def card_license(readme: str) -> str | None:
    """The `license:` of a model card's YAML front matter."""
    match = re.match(r"^---\s*\n(.*?)\n---", readme, re.DOTALL)
    if not match:
        return None
    found = re.search(r"^license(?:_name)?:\s*(\S.*)$", match[1], re.MULTILINE)
    return found[1].strip().strip("'\"") if found else None


def check_architecture(source: ImportSource) -> str:
    # the config.json model_types with an adapter family: thinker.models.families, one table for all families
    family = source.model_type or ""
    if family not in importable():
        raise ThinkerError(
            f"{source.model_id} is {with_article(source.model_type or 'model without config.json model_type')}; "
            f"thinker has adapters for {importable()}",
            "thinker models import",
            "import a Qwen or Llama causal LM (or add an adapter in thinker.models.adapters)",
            stage="record",
        )
    return family


# ---------------------------------------------------------------- license, disk, memory


def acknowledge_license(source: ImportSource, accept: bool, ask: Callable[[str], str] = input) -> None:
    license_name = source.license or "unknown (not declared by the model card)"
    print(f"[thinker] {source.model_id} license: {license_name}")
    if accept:
        print("[thinker] license accepted with --accept-license")
        return
    if not sys.stdin.isatty():
        raise ThinkerError(
            f"the license of {source.model_id} ({license_name}) must be acknowledged",
            "thinker models import",
            "read it, then pass --accept-license (stdin is not a terminal, so there is no prompt)",
            stage="config",
        )
    answer = ask("[thinker] do you accept this license? [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise ThinkerError(f"license of {source.model_id} not accepted", "thinker models import",
                           "nothing was downloaded; rerun and answer y to import it", stage="config")


def check_resources(source: ImportSource, target_dir: Path) -> int:
    """Refuse when the disk cannot hold the weights; print the memory they need. Returns bytes needed."""
    weights = sum(size for name, size in source.file_sizes.items() if name.endswith(".safetensors"))
    needed = int(sum(source.file_sizes.values()) * DISK_HEADROOM)
    target_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(target_dir).free
    print(f"[thinker] {source.model_id}: {gib(needed)} on disk; loading needs about {gib(weights)} of memory "
          f"in its saved dtype, full fine-tuning about {gib(weights * 4)} (LoRA less, QLoRA about a quarter)")
    if needed > free:
        raise ThinkerError(
            f"not enough disk space for {source.model_id}: needs {gib(needed)}, {gib(free)} free",
            str(target_dir),
            "free some space or point THINKER_MODELS_DIR at a larger disk",
            stage="record",
        )
    ram = physical_memory()
    if ram and weights > ram:
        log.warning("%s needs about %s to load but this machine has %s of memory", source.model_id,
                    gib(weights), gib(ram))
    return needed


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def gib(size: float) -> str:
    return f"{size / 2**30:.2f} GiB"


def estimate_params(folder: Path, weight_bytes: int) -> int | None:
    config = folder / "config.json"
    dtype = json.loads(config.read_text()).get("torch_dtype") if config.is_file() else None
    per_param = DTYPE_BYTES.get(str(dtype), 4)
    return weight_bytes // per_param if weight_bytes else None


# ---------------------------------------------------------------- fetching


def fetch_into(source: ImportSource, staging: Path) -> None:
    """Put the model's files into `staging`: copied from a folder or cache, else downloaded from the hub."""
    if source.folder is not None:
        for path in source.folder.iterdir():
            if path.is_file() and _allowed(path.name):
                shutil.copy2(path, staging / path.name)  # follows the hub cache's symlinks
        return
    from huggingface_hub import snapshot_download

    from thinker.models.loading import hub_errors, hub_token

    with restaged(), hub_errors(source.model_id, source.revision):
        snapshot_download(source.model_id, revision=source.revision, local_dir=staging,
                          allow_patterns=ALLOW_PATTERNS, token=hub_token())
    shutil.rmtree(staging / ".cache", ignore_errors=True)  # huggingface_hub's download bookkeeping


class restaged:
    """Loader errors say stage "train"; during an import they belong to the registry command."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, tb) -> bool:
        if isinstance(error, ThinkerError) and error.stage == "train":
            raise ThinkerError(error.what, error.where.replace("model.source=", "import "), error.fix,
                               stage="record") from error
        return False


# ---------------------------------------------------------------- the command


def import_model(text: str, *, name: str | None = None, revision: str | None = None,
                 accept_license: bool = False, registry: Registry | None = None,
                 ask: Callable[[str], str] = input) -> RegistryEntry:
    registry = registry or Registry()
    source = parse_source(text, revision)
    if name is not None:
        check_name(name)
        if registry.find(name) is not None:
            raise name_taken_error(name, registry.path)
    else:
        check_name(default_name(source))  # a folder named like a shipped option needs --name
    registry.entries()  # a corrupt registry stops the import before anything is downloaded

    inspect_source(source)
    family = check_architecture(source) if source.model_type else None
    acknowledge_license(source, accept_license, ask)
    check_resources(source, registry.folder)

    staging = Path(tempfile.mkdtemp(prefix=".import-", dir=registry.folder))
    try:
        fetch_into(source, staging)
        if family is None:  # the hub gave no config up front: decide from the downloaded one
            _inspect_config_only(source, staging)
            family = check_architecture(source)
        from thinker.models.loading import require_safetensors

        with restaged():
            require_safetensors(str(staging))
        weight_bytes = sum(p.stat().st_size for p in staging.glob("*.safetensors"))
        params = estimate_params(staging, weight_bytes)

        def make(entries: list[RegistryEntry]) -> RegistryEntry:
            chosen, version = (name, 1 + sum(e.model_id == source.model_id for e in entries)) if name else \
                versioned_name(default_name(source), source.model_id, entries)
            target = registry.folder / chosen
            winner = next((e for e in entries if e.model_name == chosen), None)
            if winner is not None:  # registered since the name was checked: an import that ran at the same time
                raise ThinkerError(f"a model named {chosen!r} was registered by another import while this one was "
                                   f"copying (it is in the registry, at {winner.local_path})", str(registry.path),
                                   f"use it as model={chosen}, or import under another --name", stage="record")
            if target.exists():
                raise ThinkerError(f"{target} exists but is not registered", str(target),
                                   "move it away or import under another --name", stage="record")
            os.rename(staging, target)  # under the registry lock: the name and the folder stay in step
            return RegistryEntry(
                model_name=chosen, model_id=source.model_id, source=source.kind, architecture=family,
                local_path=str(target.resolve()), license=source.license, version=version,
                revision=source.revision, params=params, supports_4bit=get_adapter(family).supports_4bit,
            )

        entry = registry.add(make)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone after the rename; left over only on failure
    write_metadata(Path(entry.local_path), entry)
    return entry


def _inspect_config_only(source: ImportSource, folder: Path) -> None:
    config = folder / "config.json"
    if config.is_file():
        source.model_type = json.loads(config.read_text()).get("model_type")


def write_metadata(folder: Path, entry: RegistryEntry) -> None:
    """metadata.json beside the weights (docs/decisions/0008-local-model-registry.md), so a folder says what it is without the registry."""
    from dataclasses import asdict

    from thinker.tracking.atomic import atomic_write_json

    path = folder / "metadata.json"
    existing = json.loads(path.read_text()) if path.is_file() else {}
    atomic_write_json(path, {**existing, "registry": asdict(entry)})
