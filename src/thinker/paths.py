"""Resolve input paths from the config: absolute as given; relative ones against the working directory,
then against the project folder (the one holding conf/ and launch.py), so `python launch.py` finds the
shipped data from any directory while configs keep short, machine-independent relative paths.

Input files are also checked for what they are before anything opens them (not_a_regular_file): opening a
named pipe blocks until something writes to it, and a device such as /dev/zero never ends.
"""

from __future__ import annotations

import functools
import os
import stat
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


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def not_a_regular_file(path: str | Path) -> str | None:
    """What `path` is when it exists but is not a regular file ("a named pipe (FIFO)"), else None.

    Only stat()s the path, which never blocks; a missing or unreadable file is left to the reader to report.
    """
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode):
        return None
    return next((kind for is_kind, kind in _KINDS if is_kind(mode)), "a special file")


def check_input_file(path: str | Path, key: str, *, where: str | None = None, stage: str = "config") -> None:
    """Raise a one-line ThinkerError naming `key` (a config key or a command's option) when the input file `path`
    exists but is not a regular file."""
    kind = not_a_regular_file(path)
    if kind is not None:
        from thinker.errors import ThinkerError

        raise ThinkerError(f"{key}={path} is {kind}, not a regular file", where or f"config key {key}",
                           f"point {key} at a regular file (a pipe or a device is refused: reading it may never end)",
                           stage=stage)
