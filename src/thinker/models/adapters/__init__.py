"""Architecture adapters: one small interface (forward / config / save / load) per model family (docs/decisions/0008-local-model-registry.md).

Each family in the table of thinker.models.families (ModelConfig.family, a registry entry's architecture, a
config.json model_type) names its adapter class. Every model load goes through one
(thinker.models.loading.load_causal_lm). Adapters import torch and transformers inside their methods, so
importing this package stays light.
"""

from __future__ import annotations

import json
from pathlib import Path

from thinker.errors import ThinkerError
from thinker.errors.wording import with_article
from thinker.models.adapters.base import ModelAdapter
from thinker.models.families import FAMILIES, GENERIC_ADAPTER, resolve


def get_adapter(family: str) -> type[ModelAdapter]:
    known = FAMILIES.get(str(family))
    if known is None:
        raise ThinkerError(
            f"no architecture adapter for model family {family!r} (known: {sorted(FAMILIES)})",
            "model.family",
            "pick a supported model, or add an adapter in thinker.models.adapters",
        )
    return resolve(known.adapter)


def model_type_of(path_or_id: str | Path) -> str | None:
    """config.json's model_type for a local model folder; None for a hub id or a folder without one."""
    config = Path(path_or_id) / "config.json"
    if not config.is_file():
        return None
    try:
        return json.loads(config.read_text()).get("model_type")
    except (OSError, ValueError):
        return None  # the loader reports an unreadable config with the model's path


def adapter_for(path_or_id: str | Path, family: str | None = None) -> type[ModelAdapter]:
    """The adapter that loads `path_or_id`: the family its config.json names (the weights say what they are,
    docs/decisions/0008-local-model-registry.md), else `family` (a hub id: the model option's family), else the generic one.
    A folder whose weights belong to another adapter than `family` names is refused."""
    model_type = model_type_of(path_or_id)
    if model_type is not None:
        found = resolve(FAMILIES[model_type].adapter if model_type in FAMILIES else GENERIC_ADAPTER)
        if family is not None and str(family) in FAMILIES and get_adapter(str(family)) is not found:
            raise ThinkerError(
                f"{path_or_id} holds {with_article(model_type)} model, not the {family} architecture the config names",
                f"model.family={family}",
                "fix the model option's family (or the registry entry's architecture) or point it at other weights",
                stage="train",
            )
        return found
    if family is not None and str(family) in FAMILIES:
        return get_adapter(str(family))
    return resolve(GENERIC_ADAPTER)


__all__ = ["ModelAdapter", "adapter_for", "get_adapter", "model_type_of"]
