"""The end of a sweep (-m): one summary line from the jobs' run records, and the process's exit code.

A failed job never stops a sweep: the pipeline records it (run record, MLflow run FAILED) and returns to the
launcher, which starts the next job. This Hydra callback runs in the launching process once every job has
ended, whatever launcher ran them (the joblib launcher's jobs live in other processes, so the run records
on disk are the source of truth). guarded_main turns a sweep with failures into a non-zero exit code.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from thinker.errors import ERROR_PREFIX, ExitCode
from thinker.tracking.run_record import RECORD_NAME


@dataclass
class SweepOutcome:
    total: int = 0
    failed: list[tuple[int, str, int]] = field(default_factory=list)  # (job number, error, exit code)

    @property
    def exit_code(self) -> int:
        return self.failed[0][2] if self.failed else int(ExitCode.OK)

    def line(self) -> str:
        text = f"sweep: {self.total - len(self.failed)} of {self.total} jobs succeeded"
        if self.failed:
            text += "; failed: " + "; ".join(f"#{num} {error}" for num, error, _code in self.failed)
        return text


_last: SweepOutcome | None = None
_sweep_dir: Path | None = None  # set when a multirun starts, in the launching process


def summarize(sweep_dir: Path) -> SweepOutcome:
    """Read every job's run record under `sweep_dir` (job folders are named by job number)."""
    outcome = SweepOutcome()
    jobs = sorted((p for p in Path(sweep_dir).iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    for job in jobs:
        path = job / RECORD_NAME
        if not path.is_file():
            continue  # a folder without a record never started a thinker job
        outcome.total += 1
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            outcome.failed.append((int(job.name), f"its run record {path} is unreadable", int(ExitCode.RECORD)))
            continue
        if record.get("exit_status") == "succeeded":
            continue
        error = record.get("error") or f"ended as {record.get('exit_status')} without an error line (killed?)"
        code = record.get("exit_code") or 1
        outcome.failed.append((int(job.name), str(error).removeprefix(ERROR_PREFIX), int(code)))
    return outcome


def last_outcome() -> SweepOutcome | None:
    return _last


def report() -> SweepOutcome | None:
    """Summarise the sweep this process launched (once) and print its line; None outside a sweep."""
    global _last
    if _last is None and _sweep_dir is not None and _sweep_dir.is_dir():
        _last = summarize(_sweep_dir)
        stream = sys.stderr if _last.failed else sys.stdout
        print(_last.line(), file=stream, flush=True)
    return _last


class SweepSummary(Callback):
    """Prints `sweep: N of M jobs succeeded; failed: #i <error>` when a multirun ends. If the sweeper itself
    gives up (Optuna raises when no trial completed), guarded_main calls report() instead."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        global _sweep_dir, _last
        _sweep_dir, _last = Path(str(config.hydra.sweep.dir)), None
        from thinker.tracking.secrets import install_log_masking

        install_log_masking()  # the launcher logs each job's overrides, a tracking URI's password included

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        report()
