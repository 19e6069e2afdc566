"""A full disk or quota, from any stage and any writer, said as one line that names where to free space.

Writers fail on a full disk in their own words: Python's `OSError: [Errno 28] No space left on device` (no file
named), torch's checkpoint writer `unexpected pos 630464 vs 630352` (the OSError chained as its context, or
nothing when torch wrote the file itself), SQLite's `database or disk is full` under SQLAlchemy and MLflow. The
pipeline and the entry point fold all of them into one `[thinker] error:` line (docs/errors.md).
Standard library only.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import sqlite3
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from thinker.errors import ThinkerError

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# torch's zip writer reports a short write in its own words; taken for a full disk only when one is nearly full
TORCH_WRITE_FAILURES = ("unexpected pos", "PytorchStreamWriter failed", "file write failed")
NEARLY_FULL_BYTES = 64 * 1024 * 1024
_FULL_WORDS = tuple(os.strerror(code) for code in DISK_FULL_ERRNOS)  # "No space left on device", "Disk quota ..."


class DiskFull(ThinkerError):
    """No space left on device (or quota): the environment, not a bug; the line says where to free space."""


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = getattr(exc, "orig", None) or exc.__cause__ or exc.__context__  # .orig: SQLAlchemy's DBAPI error


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc`, or an exception it wraps or was raised while handling, says the disk or quota is full."""
    for link in _chain(exc):
        if isinstance(link, OSError) and link.errno in DISK_FULL_ERRNOS:
            return True
        if isinstance(link, sqlite3.OperationalError) and "database or disk is full" in str(link):
            return True
        if any(words in str(link) for words in _FULL_WORDS):  # safetensors' SafetensorError: "IoError(Os { ..."
            return True
    return False


def full_file(exc: BaseException) -> Path | None:
    """The file a disk-full OSError in the chain names (tracking.atomic names its target), else None."""
    for link in _chain(exc):
        if isinstance(link, OSError) and link.errno in DISK_FULL_ERRNOS and link.filename:
            return Path(os.fsdecode(link.filename))
    return None


def disk_full_at(path: str | Path, cause: BaseException) -> OSError:
    """An ENOSPC OSError naming `path`, for a writer whose own error names no file."""
    code = next((link.errno for link in _chain(cause) if isinstance(link, OSError)
                 and link.errno in DISK_FULL_ERRNOS), errno.ENOSPC)
    return OSError(code, os.strerror(code), str(path))


def _free_bytes(path: Path) -> int | None:
    for folder in [path, *path.parents]:
        if folder.exists():
            try:
                return shutil.disk_usage(folder).free
            except OSError:
                return None
    return None


def _mount_point(path: Path) -> Path:
    folder = next((p for p in [path, *path.parents] if p.exists()), Path("/"))
    while not os.path.ismount(folder) and folder != folder.parent:
        folder = folder.parent
    return folder


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"


def fullest(paths: Iterable[str | Path]) -> Path:
    """Of `paths`, the one on the filesystem with the least free space now (where the full disk most likely is)."""
    candidates = [Path(p).absolute() for p in paths]
    return min(candidates, key=lambda p: (_free_bytes(p) is None, _free_bytes(p) or 0))


def disk_full_error(exc: BaseException, stage: str, paths: Iterable[str | Path],
                    record_file: str | Path | None = None, what: str | None = None) -> DiskFull | None:
    """One line for a full disk behind `exc`, or None when `exc` is something else. `paths`: where the stage was
    writing, used when no error names the file (the run folder, the working directory's MLflow store). A full
    disk that stopped the run record (`record_file`) from being written is the record stage's, whichever
    stage wrote it."""
    candidates = list(paths)
    named = full_file(exc)
    if named is not None and record_file is not None and named.absolute() == Path(record_file).absolute():
        stage = "record"
    if not is_disk_full(exc):
        torch_failed = any(m in str(link) for link in _chain(exc) for m in TORCH_WRITE_FAILURES)
        if not torch_failed or not candidates:
            return None
        free = _free_bytes(fullest(candidates))
        if free is None or free > NEARLY_FULL_BYTES:
            return None  # a failed write on a disk with room: not this
    return _error(named or fullest(candidates or [Path.cwd()]), stage, named is not None, what)


def _error(where: Path, stage: str, named: bool, what: str | None = None) -> DiskFull:
    free = _free_bytes(where)
    mount = _mount_point(where)
    left = f"{_size(free)} free now" if free is not None else "its free space unknown"
    then = ("then run again with resume=true to continue from the last checkpoint" if stage == "train"
            else "then run again")
    return DiskFull(what or f"no space left on device in stage {stage}",
                    f"writing {where}" if named else f"writing under {where}",
                    f"free space at {mount} ({left}; df -h {mount}), {then}", stage=stage)


_ERRNO_IN_TEXT = re.compile(r"\[Errno (?:%s)\] [^:\n]*(?:: '(?P<file>[^'\n]+)')?" % "|".join(map(str, DISK_FULL_ERRNOS)))  # noqa: UP031


def before_the_run(text: str, argv: list[str]) -> DiskFull | None:
    """The error for a full disk that stopped Hydra before the pipeline ran (writing the run folder's .hydra/
    files or launch.log), read from what Hydra printed; None when `text` says something else."""
    found = _ERRNO_IN_TEXT.search(text)
    if found is None:
        return None
    run_dir = next((a.split("=", 1)[1] for a in argv if a.startswith("hydra.run.dir=")), None)
    where = Path(found["file"] or run_dir or Path.cwd()).absolute()
    return _error(where, "record", found["file"] is not None,
                  "no space left on device before the run started (Hydra writing the run folder; no run record)")


def quiet_log_files_when_full() -> None:
    """Log files (launch.log) on a full disk drop their lines instead of printing `--- Logging error ---` and a
    traceback for each: the run's one error line says where to free space. Other logging errors still show."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and not getattr(handler, "quiet_when_full", False):
            handler.handleError = _unless_disk_full(handler.handleError)  # type: ignore[method-assign]
            handler.quiet_when_full = True  # type: ignore[attr-defined]


def _unless_disk_full(handle_error: Callable[[logging.LogRecord], None]) -> Callable[[logging.LogRecord], None]:
    def handle(record: logging.LogRecord) -> None:
        failure = sys.exc_info()[1]
        if failure is None or not is_disk_full(failure):
            handle_error(record)

    return handle
