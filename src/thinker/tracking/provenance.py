"""Where a run came from: git commit, dataset digest. Failures here are never fatal (docs/decisions/0004-run-records-and-fingerprint.md)."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path


def git_commit(cwd: str | Path = ".") -> str | None:
    """The HEAD commit, or None outside a repository (or without git)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and len(sha) == 40 else None


def git_dirty(cwd: str | Path = ".") -> bool | None:
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, timeout=10, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.stdout.strip()) if out.returncode == 0 else None


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str | None:
    try:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while block := fh.read(chunk):
                digest.update(block)
        return digest.hexdigest()
    except OSError:
        return None
