"""The model's tokenizer without transformers: the snapshot of it that loading it last time kept
(thinker.models.tokenizer_snapshot), run by the `tokenizers` library, which is what transformers' fast
tokenizers run underneath. So the config check counts a run's tokens exactly without importing transformers
(tests/test_estimate.py checks the count against a run's trained tokens).

It offers what thinker.data.tokenize asks of a tokenizer: calling it on a text (input_ids, offset_mapping)
and eos_token_id. A data task that needs more (a chat template) gets an AttributeError, and its estimate waits
for the real tokenizer (`thinker estimate`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

TOKENIZER_FILE = "tokenizer.json"


class LightTokenizer:
    def __init__(self, snapshot: dict[str, Any]):
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_str(json.dumps(snapshot["tokenizer"]))
        self.eos_token_id = snapshot.get("eos_token_id")
        self.pad_token_id = snapshot.get("pad_token_id")

    def __call__(self, text: str, add_special_tokens: bool = True, return_offsets_mapping: bool = False) -> dict:
        encoding = self._tokenizer.encode(text, add_special_tokens=add_special_tokens)
        out: dict[str, Any] = {"input_ids": list(encoding.ids)}
        if return_offsets_mapping:
            out["offset_mapping"] = [tuple(o) for o in encoding.offsets]
        return out


def tokenizer_folder(cfg: DictConfig) -> tuple[Path | None, str]:
    """Where the tokenizer the run trains with is on this machine, without building or downloading anything;
    (None, why) when it is not here yet."""
    from thinker.paths import resolve_input

    model = cfg.model
    backend = str(cfg.backend.name)
    source = str(model.source)
    hub_id = str(model.tinker_name) if backend == "tinker" and model.tinker_name else None
    if hub_id is None and source == "builtin":
        from thinker.models.builtin import builtin_dir, is_complete

        folder = builtin_dir(model, int(cfg.seed), [resolve_input(p) for p in model.tokenizer_corpus])
        if is_complete(folder):
            return folder, "built"
        return None, f"the builtin model {model.name} is built by its first run"
    if hub_id is None:
        folder = Path(source).expanduser()
        if folder.is_dir():
            return (folder, "folder") if (folder / TOKENIZER_FILE).is_file() else (None, f"{folder} has no {TOKENIZER_FILE}")
        if "://" in source:
            return None, f"model.source={source} is remote"
        hub_id = source
    from huggingface_hub import try_to_load_from_cache

    revision = None if hub_id != source else (str(model.revision) if model.revision else None)
    cached = try_to_load_from_cache(hub_id, TOKENIZER_FILE, revision=revision)
    if isinstance(cached, str):
        return Path(cached).parent, "hub cache"
    return None, f"{hub_id}'s tokenizer is not in the Hugging Face cache yet"


def light_tokenizer(cfg: DictConfig) -> tuple[LightTokenizer | None, str]:
    from thinker.models.tokenizer_snapshot import load_snapshot

    folder, why = tokenizer_folder(cfg)
    if folder is None:
        return None, why
    snapshot = load_snapshot(folder)
    if snapshot is None:
        return None, f"the tokenizer in {folder} has not been loaded on this machine yet"
    return LightTokenizer(snapshot), why
