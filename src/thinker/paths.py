"""Resolve input paths from the config: absolute as given; relative ones against the working directory,
then against the project folder (the one holding conf/ and launch.py), so `python launch.py` finds the
shipped data from any directory while configs keep short, machine-independent relative paths.
"""

from __future__ import annotations

import functools
from pathlib import Path


@functools.lru_cache(maxsize=1)
def project_root() -> Path | None:
    here = Path(__file__).resolve()
    for folder in here.parents:
        if (folder / "conf" / "config.yaml").is_file() and (folder / "launch.py").is_file():
            return folder
    return None


def resolve_input(path: str | Path) -> Path:
    """Where a configured input file really is (its cwd-relative form when it exists nowhere)."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    root = project_root()
    if root is not None and (root / p).exists():
        return root / p
    return p
