"""The model registry: `models/registry.json`, one entry per imported or fine-tuned model (docs/decisions/0008-local-model-registry.md).

Every change is a read-modify-write under an exclusive lock on `models/registry.lock` and lands with an
atomic rename, so concurrent imports and fine-tuning jobs (a parallel multirun) never lose an entry and a
crash never leaves half a file. A registry that does not parse is reported, never overwritten.

Imports stay light (no torch, transformers or mlflow): launch.py reads the registry before Hydra composes.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from thinker.errors import ThinkerError
from thinker.models.paths import models_dir
from thinker.tracking.atomic import atomic_write_json, exclusive_lock

REGISTRY_FILE = "registry.json"
LOCK_FILE = "registry.lock"
FORMAT_VERSION = 1
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
DURATION_PATTERN = re.compile(r"^\s*(\d+)\s*([dhm])\s*$")
DURATION_UNITS = {"d": "days", "h": "hours", "m": "minutes"}
AUTO_NAME = re.compile(r"-finetuned-\d{8}-\d{6}(-\d+)?$")  # finetunes.default_finetune_name


@dataclass
class RegistryEntry:
    model_name: str  # unique; what `model=<name>` selects
    model_id: str  # the hub id, the imported folder, or the base's name for a fine-tune
    source: str  # huggingface | local | finetune | pretrain (from scratch, method=pretrain) | custom
    architecture: str  # adapter family: qwen2, qwen3, llama, cognate
    local_path: str | None = None  # the weights folder; None for weights that live on a remote service
    license: str | None = None
    created_at: str = ""
    fine_tuned_from: str | None = None  # immediate parent only; `thinker models lineage` walks the chain
    version: int = 1
    mlflow_run_id: str | None = None
    revision: str | None = None
    params: int | None = None
    recommended_lr: float | None = None
    supports_4bit: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    # remote weights (tinker://..., a provider's model id), usable only through the backend that made them
    weights_uri: str | None = None

    @property
    def location(self) -> str:
        """Where the weights are: the local folder, else the remote URI."""
        return self.local_path or self.weights_uri or ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RegistryEntry:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def registry_path(folder: Path | None = None) -> Path:
    return (folder or models_dir()) / REGISTRY_FILE


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def corrupt_error(path: Path, reason: str) -> ThinkerError:
    return ThinkerError(
        f"the model registry {path} is corrupt ({reason})",
        str(path),
        "fix the JSON by hand or move the file away (thinker never overwrites it)",
        stage="record",
    )


def parse_registry(path: Path) -> list[RegistryEntry]:
    """The entries in `path` ([] when it does not exist); a ThinkerError when it does not parse."""
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise corrupt_error(path, f"not valid JSON: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise corrupt_error(path, 'expected an object with a "models" list')
    try:
        entries = [RegistryEntry.from_dict(item) for item in data["models"]]
    except TypeError as error:
        raise corrupt_error(path, f"an entry is incomplete: {error}") from None
    names = [e.model_name for e in entries]
    if len(names) != len(set(names)):
        raise corrupt_error(path, "two entries share a model_name")
    return entries


class Registry:
    """models_dir()/registry.json. Reads need no lock (writes are atomic renames); changes take the lock."""

    def __init__(self, folder: Path | None = None):
        self.folder = Path(folder) if folder is not None else models_dir()
        self.path = registry_path(self.folder)

    # ------------------------------------------------------------ reading

    def entries(self) -> list[RegistryEntry]:
        return parse_registry(self.path)

    def find(self, name: str) -> RegistryEntry | None:
        return next((e for e in self.entries() if e.model_name == name), None)

    def get(self, name: str) -> RegistryEntry:
        entry = self.find(name)
        if entry is None:
            raise ThinkerError(
                f"no model named {name!r} in the registry",
                str(self.path),
                "see `thinker models list` for the registered names",
                stage="record",
            )
        return entry

    def children(self, name: str) -> list[RegistryEntry]:
        return [e for e in self.entries() if e.fine_tuned_from == name]

    def lineage(self, name: str) -> list[RegistryEntry]:
        """`name` and its ancestors, the model itself first. Stops at a parent that is not registered
        (a shipped YAML option such as tiny-qwen is a root) and at a cycle (a hand-edited registry)."""
        by_name = {e.model_name: e for e in self.entries()}
        chain = [self.get(name)]
        seen = {name}
        while (parent := chain[-1].fine_tuned_from) in by_name and parent not in seen:
            seen.add(parent)
            chain.append(by_name[parent])
        return chain

    # ------------------------------------------------------------ changing

    @contextmanager
    def locked(self) -> Iterator[list[RegistryEntry]]:
        """Hold the lock, yield the entries; whatever the block leaves in the list is written back."""
        with exclusive_lock(self.folder / LOCK_FILE):
            entries = parse_registry(self.path)  # corrupt -> error, and nothing is written
            yield entries
            self._write(entries)

    def _write(self, entries: list[RegistryEntry]) -> None:
        atomic_write_json(self.path, {"format_version": FORMAT_VERSION, "models": [asdict(e) for e in entries]})

    def add(self, make: Callable[[list[RegistryEntry]], RegistryEntry]) -> RegistryEntry:
        """Add the entry `make` builds from the current entries (it picks the name while the lock is held,
        so two writers can never pick the same one)."""
        with self.locked() as entries:
            entry = make(entries)
            if any(e.model_name == entry.model_name for e in entries):
                raise name_taken_error(entry.model_name, self.path)
            entry.created_at = entry.created_at or now_iso()
            entries.append(entry)
        return entry

    def prune(self, older_than: timedelta | None = None, *, keep: int | None = None, dry_run: bool = False,
              now: datetime | None = None) -> list[RegistryEntry]:
        """Forget the auto-named fine-tunes (no output.name) that nothing was fine-tuned from and that are older
        than `older_than` and/or beyond the `keep` newest auto-named ones (plan_prune); returns them (with
        dry_run, only returns them). Their weights are never touched: they stay in the run folders. One pass:
        a parent whose last child goes now is a leaf next time. The plan is made under the lock."""
        if dry_run:
            return plan_prune(self.entries(), older_than=older_than, keep=keep, now=now).gone
        with self.locked() as entries:
            gone = plan_prune(entries, older_than=older_than, keep=keep, now=now).gone
            entries[:] = [e for e in entries if e not in gone]
        return gone

    def remove(self, name: str, *, force: bool = False) -> RegistryEntry:
        """Delete the entry, and its folder when that lives inside the models folder (run folders stay)."""
        with self.locked() as entries:
            entry = next((e for e in entries if e.model_name == name), None)
            if entry is None:
                self.get(name)  # raises the "no model named" error
            children = [e.model_name for e in entries if e.fine_tuned_from == name]
            if children and not force:
                raise ThinkerError(
                    f"{name} is the base of {', '.join(children)}",
                    f"thinker models rm {name}",
                    "remove those first, or pass --force (their fine_tuned_from then names a missing model)",
                    stage="record",
                )
            entries.remove(entry)
        folder = Path(entry.local_path) if entry.local_path else None
        if folder is not None and is_inside(folder, self.folder) and folder.is_dir():
            shutil.rmtree(folder)
        return entry


def is_inside(path: Path, folder: Path) -> bool:
    try:
        resolved, root = path.resolve(), folder.resolve()
    except OSError:
        return False
    return resolved != root and resolved.is_relative_to(root)


def name_taken_error(name: str, path: Path) -> ThinkerError:
    return ThinkerError(
        f"a model named {name!r} is already registered",
        str(path),
        "choose another name (--name, or output.name=... for a run) or remove it with `thinker models rm`",
        stage="record",
    )


def check_name(name: str, *, reserved: set[str] | None = None) -> None:
    """A registry name is a Hydra option name: lower case, no slashes or spaces, and no shipped option's."""
    if not NAME_PATTERN.match(name):
        raise ThinkerError(
            f"{name!r} is not a valid model name",
            "model name",
            "use lower-case letters, digits, '.', '_' and '-' (starting with a letter or digit)",
            stage="record",
        )
    if name in (reserved if reserved is not None else shipped_model_options()):
        raise ThinkerError(
            f"{name!r} is a shipped model option (conf/model/{name}.yaml) and would be shadowed",
            "model name",
            "choose another name",
            stage="record",
        )


def shipped_model_options() -> set[str]:
    """The names of conf/model/*.yaml: registry entries must never shadow them."""
    from thinker.paths import project_root

    root = project_root()
    return {p.stem for p in (root / "conf" / "model").glob("*.yaml")} if root else set()


def versioned_name(base: str, model_id: str, entries: list[RegistryEntry]) -> tuple[str, int]:
    """`base` for the first import of `model_id`, then `base-v2`, `base-v3`, ... (docs/models.md)."""
    taken = {e.model_name for e in entries}
    version = 1 + sum(1 for e in entries if e.model_id == model_id and e.source != "finetune")
    name = base if version == 1 else f"{base}-v{version}"
    while name in taken:
        version += 1
        name = f"{base}-v{version}"
    return name, version


# ---------------------------------------------------------------- ages, sizes, pruning


def created(entry: RegistryEntry) -> datetime | None:
    """The entry's created_at as an aware datetime; None when missing or unreadable (a hand-edited entry)."""
    try:
        stamp = datetime.fromisoformat(entry.created_at)
    except (TypeError, ValueError):
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def age_of(entry: RegistryEntry, now: datetime | None = None) -> timedelta | None:
    stamp = created(entry)
    return None if stamp is None else (now or datetime.now(UTC)) - stamp


def format_age(age: timedelta | None) -> str:
    """`3d`, `5h`, `12m`, `now` (under a minute); `-` when unknown."""
    if age is None:
        return "-"
    seconds = max(0, int(age.total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return "now"


def parse_duration(text: str) -> timedelta:
    """`7d`, `12h`, `30m` -> a timedelta; a ValueError otherwise."""
    match = DURATION_PATTERN.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a duration: use a whole number and d, h or m (7d, 12h, 30m)")
    return timedelta(**{DURATION_UNITS[match.group(2)]: int(match.group(1))})


def format_params(params: Any) -> str:
    """An approximate size: 2.4M, 494M, 1.54B; `-` when unknown."""
    try:
        count = float(params)
    except (TypeError, ValueError):
        return "-"
    for suffix, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= size:
            return f"{count / size:.3g}{suffix}"
    return f"{count:.0f}"


def is_named(entry: RegistryEntry) -> bool:
    """Whether output.name named the fine-tune (extra.named); entries from before that was recorded count as
    named unless their name is the automatic `{base}-finetuned-{timestamp}`."""
    if "named" in entry.extra:
        return bool(entry.extra["named"])
    return not AUTO_NAME.search(entry.model_name)


def is_auto_named(entry: RegistryEntry) -> bool:
    """A fine-tune (or from-scratch model) named by the run, not by output.name: the entries every run adds."""
    return entry.source in ("finetune", "pretrain") and not is_named(entry)


def newest_first(entries: list[RegistryEntry]) -> list[RegistryEntry]:
    """By created_at, newest first; entries without a readable one last (in registry order)."""
    oldest = datetime.min.replace(tzinfo=UTC)
    return sorted(entries, key=lambda e: created(e) or oldest, reverse=True)


@dataclass
class PrunePlan:
    gone: list[RegistryEntry]  # what prune forgets
    bases: list[RegistryEntry]  # would go, but another registered model was fine-tuned from it: kept


def plan_prune(entries: list[RegistryEntry], *, older_than: timedelta | None = None, keep: int | None = None,
               now: datetime | None = None) -> PrunePlan:
    """Which auto-named fine-tunes (source finetune, not named) prune forgets: those older than `older_than`
    and beyond the `keep` newest auto-named fine-tunes (either alone when only one is given). Named models,
    imports and from-scratch models never go; nor does a fine-tune another entry was fine-tuned from (it is
    in `bases`, so the command can say so: lineage stays whole)."""
    if older_than is None and keep is None:
        raise ValueError("prune needs older_than or keep")
    auto = newest_first([e for e in entries if e.source == "finetune" and not is_named(e)])
    candidates = auto[keep:] if keep is not None else auto
    if older_than is not None:
        candidates = [e for e in candidates if (age := age_of(e, now)) is not None and age > older_than]
    parents = {e.fine_tuned_from for e in entries}
    return PrunePlan(gone=[e for e in candidates if e.model_name not in parents],
                     bases=[e for e in candidates if e.model_name in parents])


def shipped_model_details() -> list[dict[str, Any]]:
    """name, source (builtin or a hub id), family and params of each conf/model/*.yaml, sorted by name."""
    import yaml

    from thinker.paths import project_root

    root = project_root()
    details = []
    for path in sorted((root / "conf" / "model").glob("*.yaml")) if root else []:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        details.append({"name": str(data.get("name", path.stem)), "source": str(data.get("source", "-")),
                        "family": str(data.get("family", "-")), "params": data.get("params")})
    return details
