"""checkpoints.jsonl: the Tinker states a run saved, one JSON line each, appended as they are confirmed.

Resume and recovery read the last `state` line: its step, its `tinker://` path and the counters the loop
needs to carry on (trained tokens). The final `sampler` line names the weights evaluation samples from.
Lines are appended with a flush and fsync, so a crash leaves whole lines only; a torn last line is ignored.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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
        if not self.file.is_file():
            return []
        out = []
        for line in self.file.read_text().splitlines():
            try:
                data: dict[str, Any] = json.loads(line)
                out.append(SavedState(**data))
            except (ValueError, TypeError):
                continue  # a line torn by a crash mid-write
        return out

    def last_state(self) -> SavedState | None:
        states = [e for e in self.entries() if e.kind == "state"]
        return states[-1] if states else None

    def append(self, entry: SavedState) -> None:
        entry = SavedState(**{**asdict(entry), "time": entry.time or round(time.time(), 3)})
        self.file.parent.mkdir(parents=True, exist_ok=True)
        with self.file.open("a") as f:
            f.write(json.dumps(asdict(entry)) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def reset(self) -> None:
        """A fresh (not resumed) run in this folder: earlier states belong to an earlier run."""
        if self.file.exists():
            self.file.replace(self.file.with_suffix(".jsonl.previous"))
