"""The command line that continues an interrupted run, as its interruption message prints it.

The overrides are the run's own, from its run record (what Hydra's .hydra/overrides.yaml holds too), with
secrets masked (thinker.tracking.secrets.mask_text), any earlier hydra.run.dir= / resume= dropped, then
hydra.run.dir=<the run folder> resume=true appended; every word is quoted for a POSIX shell (shlex), so the
line can be pasted as it is (after putting back a masked secret).
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from thinker.tracking.run_record import RECORD_NAME, RunRecord
from thinker.tracking.secrets import mask_text

REPLACED = ("hydra.run.dir", "resume")


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def launcher() -> str:
    """launch.py as this process was started (`thinker run` starts it too), relative to the working folder
    when it lies below it."""
    started = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("launch.py")
    if started.name != "launch.py":  # a tool or a test calling the pipeline directly
        return "launch.py"
    relative = os.path.relpath(started.resolve(), Path.cwd())
    return relative if not relative.startswith("..") else str(started.resolve())


def run_overrides(run_dir: Path) -> list[str] | None:
    """The overrides recorded for the run in `run_dir`; None without a readable record."""
    try:
        return list(RunRecord.load(Path(run_dir) / RECORD_NAME).overrides)
    except (OSError, ValueError, TypeError):
        return None


def resume_command(run_dir: Path) -> str:
    """`python launch.py <the run's overrides> hydra.run.dir=<run_dir> resume=true`, quoted and masked."""
    overrides = run_overrides(run_dir)
    if overrides is None:
        return f"python launch.py <same overrides> hydra.run.dir={shlex.quote(str(run_dir))} resume=true"
    kept = [mask_text(o) for o in overrides if _override_key(o) not in REPLACED]
    return shlex.join(["python", launcher(), *kept, f"hydra.run.dir={run_dir}", "resume=true"])
