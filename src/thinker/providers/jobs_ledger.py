"""The hosted jobs this project started: one JSON line per event (created, reattached, status), in
`outputs/provider_jobs.jsonl` (THINKER_JOBS_FILE overrides). `thinker jobs list|status|cancel` read it, and a
re-launch of the same config finds its job here even when the provider offers no way to search for it.

Lines are appended and fsynced under the inter-process lock, so parallel sweep jobs never interleave; a torn
last line (a killed launcher) is skipped. No secret is ever written: provider, job id, fingerprint, run folder,
base model, state.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ENV = "THINKER_JOBS_FILE"
DEFAULT = Path("outputs") / "provider_jobs.jsonl"


def ledger_path() -> Path:
    return Path(os.environ.get(ENV) or DEFAULT)


@dataclass
class JobEntry:
    provider: str
    job_id: str
    fingerprint: str
    run_dir: str
    base_model: str | None
    state: str
    model_id: str | None = None
    updated_at: float = 0.0
    # the run's estimate (thinker.estimate) and when the job was made: kept by later lines that omit them
    estimated_usd: float | None = None
    estimated_seconds: float | None = None
    created_at: float | None = None


def append(entry: JobEntry, path: Path | None = None) -> None:
    from thinker.tracking.atomic import append_json_line, exclusive_lock

    path = path or ledger_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    entry.updated_at = entry.updated_at or time.time()
    with exclusive_lock(path.with_name(path.name + ".lock")):
        append_json_line(path, asdict(entry))


def jobs(path: Path | None = None) -> list[JobEntry]:
    """Every job, its latest line winning, oldest first (a torn last line from a killed launcher is skipped)."""
    from thinker.tracking.atomic import read_json_lines

    latest: dict[tuple[str, str], JobEntry] = {}
    for data in read_json_lines(path or ledger_path()):
        try:
            entry = JobEntry(**{k: data[k] for k in JobEntry.__dataclass_fields__ if k in data})
        except TypeError:
            continue
        key = (entry.provider, entry.job_id)
        first = latest.pop(key, None)
        for kept in ("model_id", "estimated_usd", "estimated_seconds", "created_at"):
            if first is not None and getattr(entry, kept) is None:
                setattr(entry, kept, getattr(first, kept))
        latest[key] = entry
    return list(latest.values())


def find(provider: str, fingerprint: str, path: Path | None = None) -> JobEntry | None:
    """The newest job of this config at this provider that did not fail or get cancelled."""
    for entry in reversed(jobs(path)):
        if entry.provider == provider and entry.fingerprint == fingerprint and entry.state not in ("failed",
                                                                                                 "cancelled"):
            return entry
    return None


def lookup(job_id: str, path: Path | None = None) -> JobEntry | None:
    matches = [e for e in jobs(path) if e.job_id == job_id]
    return matches[-1] if matches else None
