"""SHA256 of files by content, cached by file identity so a multi-gigabyte model is hashed once.

The config fingerprint hashes data files and model weights on every run; this keeps that cheap.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("thinker")

HASH_CACHE_FILE = "file_hashes.json"
# Files at least this big have their hash kept across processes (in HASH_CACHE_FILE); smaller ones are
# cheaper to hash again than to look up, and this keeps ordinary runs from creating models/ just for a cache.
PERSIST_MIN_BYTES = 64 * 1024 * 1024
# A file changed less than this long before it was hashed is not cached: a rewrite within the same
# filesystem timestamp tick, with the same size, would otherwise look unchanged ("racy git").
RACY_SECONDS = 2.0
_MAX_PERSISTED = 4096

_memory: dict[str, tuple[tuple[int, int, int, int], str]] = {}
_lock = threading.Lock()


def file_sha256(path: str | Path) -> str | None:
    """SHA256 of a file's content; None when it is missing or unreadable.

    Cached by (absolute path, size, mtime_ns, ctime_ns) so a multi-gigabyte model is hashed once: in this
    process always, across processes for files of PERSIST_MIN_BYTES or more, in
    ``models_dir()/file_hashes.json`` (written atomically; concurrent writers may drop each other's new
    entries, which only costs a re-hash). ctime cannot be set by tools that copy timestamps (cp -p, rsync -t),
    and a file whose mtime is within RACY_SECONDS of hashing is not cached at all (a rewrite in the same
    timestamp tick with the same size would otherwise look unchanged).
    """
    try:
        absolute = str(Path(path).expanduser().resolve())
        st = os.stat(absolute)
    except OSError:
        return None
    if not os.path.isfile(absolute):
        return None
    key = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    with _lock:
        hit = _memory.get(absolute)
    if hit and hit[0] == key:
        return hit[1]
    persist = st.st_size >= PERSIST_MIN_BYTES
    if persist:
        stored = _load_persisted().get(absolute)
        if stored and tuple(stored.get("key", ())) == key and isinstance(stored.get("sha256"), str):
            with _lock:
                _memory[absolute] = (key, stored["sha256"])
            return stored["sha256"]

    started = time.time_ns()
    digest = _hash_file(absolute)
    if digest is None:
        return None
    if started - st.st_mtime_ns < RACY_SECONDS * 1e9:
        return digest  # too fresh to trust its timestamps: hash it again next time
    with _lock:
        _memory[absolute] = (key, digest)
    if persist:
        _persist(absolute, key, digest)
    return digest


def _hash_file(path: str) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(8 * 1024 * 1024):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def _cache_path() -> Path:
    from thinker.models.paths import models_dir

    return models_dir() / HASH_CACHE_FILE


def _load_persisted() -> dict[str, Any]:
    try:
        data = json.loads(_cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _persist(absolute: str, key: tuple[int, ...], digest: str) -> None:
    from thinker.tracking.atomic import atomic_write_json

    entries = _load_persisted()
    entries[absolute] = {"key": list(key), "sha256": digest}
    if len(entries) > _MAX_PERSISTED:  # forget files that are gone, then the oldest-inserted
        entries = {p: e for p, e in entries.items() if os.path.exists(p)}
        entries = dict(list(entries.items())[-_MAX_PERSISTED:])
    try:
        atomic_write_json(_cache_path(), entries)
    except OSError as error:  # a read-only models folder: the hash is still right, just not remembered
        log.debug("could not write the file hash cache %s: %s", _cache_path(), error)
