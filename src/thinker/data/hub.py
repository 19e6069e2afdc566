"""A Hugging Face hub dataset as a run's training file: `data.path=hf://org/name` (split `train`) or
`hf://org/name:split` (docs/data.md, "Large files and hub datasets").

The validate stage writes the split into `<run_dir>/data/<data.name>.jsonl` (thinker.data.source), one JSON
object per row, a batch of rows at a time, so the validator, the pytest gate, training and the dataset digest
read a JSONL file as for any local data, and its errors name lines of that file. `datasets` loads the split
(memory-mapped Arrow) into thinker's cache, `$HF_DATASETS_CACHE` when set, else `<models dir>/hub_datasets`
(never the home folder unasked); the hub's own files go where huggingface_hub keeps model downloads too
(`$HF_HUB_CACHE`). With HF_HUB_OFFLINE=1 a dataset already in that cache loads without the network.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from thinker.errors import ThinkerError

HUB_PREFIX = "hf://"
DEFAULT_SPLIT = "train"
_ROWS_PER_BATCH = 1000


def hub_dataset(path: object) -> tuple[str, str] | None:
    """(dataset id, split) of an `hf://org/name[:split]` data.path (also hf://datasets/org/name, the form
    huggingface_hub's file system writes); None for a local path."""
    text = str(path or "")
    if not text.startswith(HUB_PREFIX):
        return None
    rest = text[len(HUB_PREFIX):].strip("/")
    if rest.startswith("datasets/"):
        rest = rest[len("datasets/"):]
    repo_id, _, split = rest.partition(":")
    if not repo_id or repo_id.count("/") > 1:
        raise ThinkerError(f"data.path={text} is not a hub dataset id", "data.path",
                           "write hf://org/name (or hf://org/name:split)")
    return repo_id, split or DEFAULT_SPLIT


def hub_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where `datasets` keeps the Arrow files of hub datasets for thinker."""
    configured = (os.environ if env is None else env).get("HF_DATASETS_CACHE")
    if configured:
        return Path(configured).expanduser()
    from thinker.models.paths import models_dir

    return models_dir() / "hub_datasets"


def offline(env: Mapping[str, str]) -> bool:
    return any(str(env.get(key, "")).lower() in ("1", "true", "yes", "on")
               for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def cached(repo_id: str, env: Mapping[str, str]) -> bool:
    """Whether `datasets` has a prepared copy of `repo_id` in thinker's cache (what it loads offline:
    <cache>/<org>___<name>/<config>/<version>/<hash>/)."""
    folder = hub_cache_dir(env) / repo_id.replace("/", "___")
    return any(p.is_dir() for p in folder.glob("*/*/*"))


def write_hub_dataset(repo_id: str, split: str, target: Path) -> int:
    """Write the split's rows into `target` as JSONL (atomically); return the row count."""
    import datasets

    try:
        dataset = datasets.load_dataset(repo_id, split=split, cache_dir=str(hub_cache_dir()))
    except (FileNotFoundError, ConnectionError, ValueError) as exc:
        raise ThinkerError(
            f"hub dataset {repo_id} (split {split}) cannot be loaded ({type(exc).__name__}: {str(exc)[:200]})",
            f"data.path=hf://{repo_id}",
            "load it once online (HF_HUB_OFFLINE unset) so it is cached" if offline(os.environ)
            else "check the id and split on huggingface.co, and HF_TOKEN for a gated dataset", stage="validate",
        ) from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    rows = 0
    try:
        with open(partial, "w", encoding="utf-8") as out:
            for batch in dataset.iter(batch_size=_ROWS_PER_BATCH):
                columns = list(batch)
                for values in zip(*(batch[c] for c in columns), strict=True):
                    out.write(json.dumps(dict(zip(columns, values, strict=True)), ensure_ascii=False) + "\n")
                    rows += 1
        os.replace(partial, target)
    except TypeError as exc:  # images, audio, dates: not JSON
        partial.unlink(missing_ok=True)
        raise ThinkerError(f"hub dataset {repo_id} has values JSON cannot hold ({exc})", f"data.path=hf://{repo_id}",
                           "use a text dataset, or convert it to JSONL yourself", stage="validate") from exc
    finally:
        partial.unlink(missing_ok=True)
    return rows
