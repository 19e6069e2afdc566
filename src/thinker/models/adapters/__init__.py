"""Architecture adapters: one small interface (forward / config / save / load) per model family (seed 002, decision 2).

The table maps a family name (ModelConfig.family, a registry entry's architecture) to its adapter class.
Adapters import torch and transformers inside their methods, so importing this package stays light.
"""

from __future__ import annotations

import importlib

from thinker.errors import ThinkerError
from thinker.models.adapters.base import ModelAdapter

# family -> "module:class"
ADAPTERS: dict[str, str] = {
    "qwen2": "thinker.models.adapters.hf_causal:HFCausalLMAdapter",
    "qwen3": "thinker.models.adapters.hf_causal:HFCausalLMAdapter",
    "llama": "thinker.models.adapters.hf_causal:HFCausalLMAdapter",
    "cognate": "thinker.models.adapters.cognate:CognateAdapter",
}


def get_adapter(family: str) -> type[ModelAdapter]:
    target = ADAPTERS.get(str(family))
    if target is None:
        raise ThinkerError(
            f"no architecture adapter for model family {family!r} (known: {sorted(ADAPTERS)})",
            "model.family",
            "pick a supported model, or add an adapter in thinker.models.adapters",
        )
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


__all__ = ["ADAPTERS", "ModelAdapter", "get_adapter"]
