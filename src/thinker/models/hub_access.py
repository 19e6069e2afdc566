"""Whether a hub model needs a token this machine does not have: known at config check, not when training
first downloads it (docs/models.md).

A gated repository (Llama's) answers every download without an accepted token with 401. Online, the hub's
model info says whether a repository is gated; offline (HF_HUB_OFFLINE=1, or the hub unreachable), the model
card the local cache holds does: a gated repository's card carries `extra_gated_*` keys in its front matter.
A model whose weights are already in the cache needs nothing more. Nothing here reads or prints the token."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

TOKEN_ENVS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


def has_token(env: Mapping[str, str]) -> bool:
    """A token in the environment, or one `hf auth login` stored (huggingface_hub reads both)."""
    if any(env.get(name) for name in TOKEN_ENVS):
        return True
    from huggingface_hub import constants

    return Path(constants.HF_TOKEN_PATH).is_file()


def offline(env: Mapping[str, str]) -> bool:
    return str(env.get("HF_HUB_OFFLINE", os.environ.get("HF_HUB_OFFLINE", ""))).lower() in ("1", "true", "yes", "on")


def cached_file(repo_id: str, filename: str, revision: str | None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, revision=revision)
    return Path(found) if isinstance(found, str) else None


def weights_cached(repo_id: str, revision: str | None) -> bool:
    return any(cached_file(repo_id, name, revision) is not None for name in WEIGHT_FILES)


def card_says_gated(repo_id: str, revision: str | None) -> bool | None:
    """From the cached model card's front matter: True (extra_gated_* keys), False, None (no card cached)."""
    card = cached_file(repo_id, "README.md", revision)
    if card is None:
        return None
    text = card.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return False
    front = text.split("---", 2)[1] if text.count("---") >= 2 else ""
    return any(line.lstrip().startswith("extra_gated") for line in front.splitlines())


def hub_says_gated(repo_id: str, revision: str | None) -> bool | None:
    """The hub's own answer (model_info(...).gated); None when it cannot be asked."""
    try:
        from huggingface_hub import HfApi

        info = HfApi().model_info(repo_id, revision=revision, timeout=10)
    except Exception:  # noqa: BLE001 - unreachable, unknown or gated-and-hidden: the cache decides
        return None
    return bool(info.gated)


def needs_token(repo_id: str, revision: str | None, env: Mapping[str, str]) -> bool:
    """A gated repository whose weights are not cached here, and no token to download them with."""
    if has_token(env) or weights_cached(repo_id, revision):
        return False
    gated = None if offline(env) else hub_says_gated(repo_id, revision)
    if gated is None:
        gated = card_says_gated(repo_id, revision)
    return bool(gated)
