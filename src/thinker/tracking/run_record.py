"""The run record (seed 001 §6.7): one JSON file per run, rewritten atomically after every stage.

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
    mlflow_run_id: str | None = None
    # a sweep job that did not train: the MLflow run whose result (metrics, weights) it took (thinker.reuse)
    reused_from: str | None = None
    exit_status: str = "running"
    exit_code: int | None = None
    error: str | None = None  # the one-line error of a failed run
    finished_at: str | None = None
    # earlier invocations in this folder (an interrupted run before resume=true, training before stage=eval)
    history: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> RunRecord:
        data = json.loads(Path(path).read_text())
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
