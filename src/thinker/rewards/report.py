"""What a reinforcement-learning run reports beside its per-step metrics, the same on every backend: a table of
prompts, completions and rewards every `objective.table_every` steps (an MLflow table artifact under
rl_samples/), and the mean reward at the start and at the end of the run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SAMPLES_DIR = "rl_samples"
WINDOW = 5  # steps averaged for reward_start and reward_end


def table_due(step: int, every: int) -> bool:
    """The first step and every `every`-th one (never with every = 0)."""
    return every > 0 and (step == 1 or step % every == 0)


def write_table(run_dir: Path, session: Any, step: int, rows: list[dict[str, Any]]) -> Path:
    """The rows as MLflow's table JSON (columns / data) in run_dir/rl_samples/step_NNNNNN.json, logged to the
    run's MLflow session when there is one."""
    folder = run_dir / SAMPLES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    columns = list(rows[0]) if rows else []
    path = folder / f"step_{step:06d}.json"
    path.write_text(json.dumps({"columns": columns, "data": [[r[c] for c in columns] for r in rows]},
                               ensure_ascii=False) + "\n", encoding="utf-8")
    if session is not None and hasattr(session, "log_artifact"):
        session.log_artifact(path, SAMPLES_DIR)
    return path


def reward_window(history: list[dict[str, float]]) -> dict[str, float]:
    """reward_start / reward_end: the mean reward of the first and of the last WINDOW steps."""
    if not history:
        return {}
    first, last = history[:WINDOW], history[-WINDOW:]
    return {"reward_start": sum(h["reward/mean"] for h in first) / len(first),
            "reward_end": sum(h["reward/mean"] for h in last) / len(last)}
