"""The tokenizer transformers actually runs, kept as a `tokenizers` JSON so that a later config check can count
a run's tokens exactly without importing transformers (thinker.estimate).

transformers may rebuild parts of a saved tokenizer when it loads it (its Qwen2 tokenizer class brings its own
pre-tokenizer), so a folder's tokenizer.json alone does not always tokenise as training does. load_tokenizer
therefore snapshots the loaded tokenizer's backend, with its eos and pad ids, under
`<models dir>/.tokenizers/<key>.json`; the key hashes the folder's tokenizer files and config.json and the
transformers version, so any change to them, or to the library, makes a new snapshot.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import Any

from thinker.models.paths import models_dir

SNAPSHOT_DIR = ".tokenizers"
KEY_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json")


def snapshot_key(folder: Path) -> str | None:
    """A hash of what decides the loaded tokenizer; None when the folder has no tokenizer.json."""
    if not (folder / "tokenizer.json").is_file():
        return None
    digest = hashlib.sha256()
    for name in KEY_FILES:
        path = folder / name
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b"-") + b"\0")
    try:
        digest.update(metadata.version("transformers").encode())
    except metadata.PackageNotFoundError:
        pass
    return digest.hexdigest()[:24]


def snapshot_path(folder: Path) -> Path | None:
    key = snapshot_key(folder)
    return None if key is None else models_dir() / SNAPSHOT_DIR / f"{key}.json"


def save_snapshot(tokenizer: Any, folder: Path) -> None:
    """Keep `tokenizer` (a transformers fast tokenizer loaded from `folder`) for later counting; best effort."""
    from thinker.tracking.atomic import atomic_write_text

    path = snapshot_path(folder)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if path is None or path.exists() or backend is None:
        return
    data = {"tokenizer": json.loads(backend.to_str()), "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(data))
    except OSError:
        pass  # a read-only models folder only means the next estimate loads the tokenizer again


def load_snapshot(folder: Path) -> dict[str, Any] | None:
    path = snapshot_path(folder)
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None
