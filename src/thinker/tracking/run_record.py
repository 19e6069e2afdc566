"""The run record (docs/decisions/0004-run-records-and-fingerprint.md): one JSON file per run, rewritten atomically after every stage.

It holds what a reviewer needs to reproduce the run: when, which config (path, overrides, fingerprint),
which code (git commit), which data (SHA256), which backend, what each stage did, and how it ended.
Everything passes through the secrets mask before it touches disk.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from thinker.tracking.atomic import atomic_write_json
from thinker.tracking.secrets import mask

RECORD_NAME = "run_record.json"


class UnreadableRecord(ValueError):
    """A run record that is not JSON, or JSON of another shape than RunRecord writes."""


# the JSON shape of each field RunRecord writes (any other field: a string or null), and of the items of its list
# or object fields: a record of another shape would fail later, far from the file, as an AttributeError
_TEXT = ((str, type(None)), "a string or null")
_FIELD_SHAPES: dict[str, tuple[tuple[type, ...], str]] = {
    "overrides": ((list,), "an array"), "stages": ((dict,), "an object"), "metrics": ((dict,), "an object"),
    "history": ((list,), "an array"), "git_dirty": ((bool, type(None)), "a boolean or null"),
    "exit_code": ((int, type(None)), "an integer or null"), "cost": ((dict,), "an object"),
}
_ITEM_SHAPES: dict[str, tuple[tuple[type, ...], str]] = {
    "overrides": ((str,), "strings"), "stages": ((dict,), "objects"), "history": ((dict,), "objects"),
    "metrics": ((int, float, type(None)), "numbers"),
}


def _shape_problem(data: Any) -> str | None:
    """What makes `data` something other than a run record's fields; None when it has their shape."""
    from thinker.validation.schema_language import _json_type

    if not isinstance(data, dict):
        return f"it holds a JSON {_json_type(data)}, not an object"
    for name in (f.name for f in fields(RunRecord) if f.name != "path" and f.name in data):
        value = data[name]
        types, wanted = _FIELD_SHAPES.get(name, _TEXT)
        if not isinstance(value, types):
            return f"its {name!r} is a JSON {_json_type(value)}, not {wanted}"
        if name in _ITEM_SHAPES:
            item_types, items_wanted = _ITEM_SHAPES[name]
            items = value.values() if isinstance(value, dict) else value
            bad = [item for item in items if not isinstance(item, item_types)]
            if bad:
                return f"its {name!r} holds a JSON {_json_type(bad[0])}, where it holds {items_wanted}"
    return None


def read_record(path: str | Path) -> dict[str, Any]:
    """The fields of the run record at `path`: the one reader of run_record.json files (a run folder's, a
    sweep job's, an MLflow artifact's). OSError when it cannot be read; UnreadableRecord when it is not JSON
    or not of the shape RunRecord writes, so no reader meets a list where it expects an object."""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise UnreadableRecord(f"it is not valid JSON ({type(exc).__name__}: {str(exc)[:120]})") from None
    problem = _shape_problem(data)
    if problem is not None:
        raise UnreadableRecord(problem)
    return data


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class RunRecord:
    path: Path
    timestamp: str = field(default_factory=utc_now)
    config_path: str | None = None
    overrides: list[str] = field(default_factory=list)
    config_fingerprint: str | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None
    dataset_path: str | None = None
    dataset_sha256: str | None = None
    backend: str | None = None
    stage: str | None = None
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    # the estimate before the run and what it took after (thinker.estimate, docs/costs.md)
    cost: dict[str, Any] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    # a sweep job that did not train: the MLflow run whose result (metrics, weights) it took (thinker.run.reuse)
    reused_from: str | None = None
    exit_status: str = "running"
    exit_code: int | None = None
    error: str | None = None  # the one-line error of a failed run
    finished_at: str | None = None
    # earlier invocations in this folder (an interrupted run before resume=true, training before stage=eval)
    history: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> RunRecord:
        data = read_record(path)
        known = {f.name for f in fields(cls)} - {"path"}
        return cls(path=Path(path), **{k: v for k, v in data.items() if k in known})

    def continue_with(self, stage: str, overrides: list[str]) -> None:
        """Start a new invocation in the same folder: the last one moves to `history`, stages and metrics stay."""
        self.history.append({"timestamp": self.timestamp, "stage": self.stage, "overrides": self.overrides,
                             "exit_status": self.exit_status, "exit_code": self.exit_code,
                             "error": self.error, "finished_at": self.finished_at})
        self.timestamp, self.stage, self.overrides = utc_now(), stage, overrides
        self.exit_status, self.exit_code, self.error, self.finished_at = "running", None, None, None

    def stage_update(self, name: str, status: str, **details: Any) -> None:
        entry = self.stages.setdefault(name, {})
        entry.update(details)
        entry["status"] = status
        entry["updated_at"] = utc_now()
        self.write()

    def finish(self, exit_status: str, exit_code: int, error: str | None = None) -> None:
        self.exit_status = exit_status
        self.exit_code = exit_code
        self.error = error
        self.finished_at = utc_now()
        self.write()

    def as_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "path"}
        return mask(data)

    def write(self) -> Path:
        return atomic_write_json(self.path, self.as_dict())
