"""Write files so that a crash or kill -9 leaves either the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from thinker.errors.disk_full import disk_full_at, is_disk_full


@contextlib.contextmanager
def exclusive_lock(lock_file: str | Path, timeout_s: float | None = None, what: str | None = None) -> Iterator[None]:
    """Hold an inter-process exclusive lock on `lock_file` (an flock: it dies with its process) for the block.

    Waits for it forever, or with `timeout_s` raises a TimeoutError naming `what` (default: the lock file)."""
    from filelock import FileLock, Timeout

    path = Path(lock_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=-1 if timeout_s is None else timeout_s)
    try:
        lock.acquire()
    except Timeout:
        raise TimeoutError(
            f"{what or path} stayed locked for {timeout_s:.0f} s by another process (through {path}; the lock "
            "dies with its process, so one is still running: stop it)"
        ) from None
    try:
        yield
    finally:
        lock.release()


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call `write` on a temporary file beside `path`, fsync it, then rename it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if is_disk_full(exc):  # torch's "unexpected pos", Python's ENOSPC: both without the file's name
            raise disk_full_at(path, exc) from exc
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def atomic_write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


@contextlib.contextmanager
def atomic_directory(target: str | Path, replace_existing: bool = True) -> Iterator[Path]:
    """Yield a temporary folder beside `target`; on success it becomes `target`, on error it vanishes."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            if not replace_existing:
                raise FileExistsError(target)
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(exc):
            raise disk_full_at(target, exc) from exc
        raise


def append_json_line(path: str | Path, data: Any) -> None:
    """Append one JSON line, flushed and fsynced: a crash leaves whole lines, or a torn last one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(data) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_json_lines(path: str | Path) -> list[Any]:
    """The JSON lines of `path` ([] when it does not exist); a line torn by a crash mid-write is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out
