"""checkpoints.jsonl: the Tinker states a run saved, one JSON line each, appended as they are confirmed.

Resume and recovery read the last `state` line: its step, its `tinker://` path and the counters the loop
needs to carry on (trained tokens). The final `sampler` line names the weights evaluation samples from.
Lines are appended with a flush and fsync, so a crash leaves whole lines only; a torn last line is ignored.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from thinker.tracking.atomic import append_json_line, read_json_lines

LEDGER = "checkpoints.jsonl"


@dataclass(frozen=True)
class SavedState:
    step: int  # optimizer steps taken when it was saved
    path: str  # tinker://.../weights/<name> (weights + optimizer state)
    trained_tokens: int = 0
    kind: str = "state"  # state | sampler
    time: float = 0.0


class CheckpointLedger:
    def __init__(self, run_dir: Path):
        self.file = run_dir / LEDGER

    def entries(self) -> list[SavedState]:
        out = []
        for data in read_json_lines(self.file):
            try:
                out.append(SavedState(**data))
            except TypeError:
                continue  # not a state line
        return out

    def last_state(self) -> SavedState | None:
        states = [e for e in self.entries() if e.kind == "state"]
        return states[-1] if states else None

    def append(self, entry: SavedState) -> None:
        entry = SavedState(**{**asdict(entry), "time": entry.time or round(time.time(), 3)})
        append_json_line(self.file, asdict(entry))

    def reset(self) -> None:
        """A fresh (not resumed) run in this folder: earlier states belong to an earlier run."""
        if self.file.exists():
            self.file.replace(self.file.with_suffix(".jsonl.previous"))
