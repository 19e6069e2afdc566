"""The model families thinker knows, in one table (docs/decisions/0008-local-model-registry.md).

The adapters (thinker.models.adapters), the importer (`thinker models import`) and the builder of builtin
models (thinker.models.builtin) all read FAMILIES, so a new family is its adapter module plus one entry here
(and a conf/model/*.yaml that names it). Code is named by "module:attribute" strings and imported only when
used, so reading the table imports neither torch nor transformers.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

HF_CAUSAL = "thinker.models.adapters.hf_causal:HFCausalLMAdapter"


@dataclass(frozen=True)
class Family:
    name: str  # ModelConfig.family, a registry entry's architecture, a config.json model_type
    adapter: str  # "module:class" of its ModelAdapter
    importable: bool = True  # `thinker models import` accepts weights whose config.json names it
    # the builder: "module:class" of the config built from model.arch (None: not buildable from a config)
    config_class: str | None = None
    # "module:function(model_cfg, tokenizer=None)" giving the config's settings instead of model.arch (a fixed
    # specification); called without a tokenizer first, so a changed specification fails before any work
    config_settings: str | None = None
    # the family's config defaults head_dim to a fixed size; a tiny model wants hidden_size / num_attention_heads
    head_dim_from_width: bool = False
    # (key, "module:attribute"): the family's own code version, part of the builtin folder's hash
    code_version: tuple[str, str] | None = None
    # "module:function(model_cfg) -> str | None": why a model option's `arch` breaks the family's fixed
    # specification (None: it does not); light, the config check calls it (spec_problem)
    fixed_spec: str | None = None


FAMILIES: dict[str, Family] = {family.name: family for family in (
    Family("qwen2", HF_CAUSAL, config_class="transformers:Qwen2Config"),
    Family("qwen3", HF_CAUSAL, config_class="transformers:Qwen3Config", head_dim_from_width=True),
    Family("llama", HF_CAUSAL),
    Family("cognate", "thinker.models.adapters.cognate:CognateAdapter",
           config_class="thinker.models.adapters.cognate_model:CognateConfig",
           config_settings="thinker.models.adapters.cognate_spec:config_settings",
           code_version=("cognate_format", "thinker.models.adapters.cognate_spec:FORMAT_VERSION"),
           fixed_spec="thinker.models.adapters.cognate_spec:spec_violation"),
)}
# any other causal LM transformers itself knows (a hub id, a folder of another model_type) loads the HF way
GENERIC_ADAPTER = HF_CAUSAL


def importable() -> list[str]:
    """The config.json model_types `thinker models import` accepts, sorted."""
    return sorted(name for name, family in FAMILIES.items() if family.importable)


def buildable() -> list[str]:
    """The families a builtin model can be built from its config, sorted."""
    return sorted(name for name, family in FAMILIES.items() if family.config_class)


def spec_problem(model_cfg: Any) -> str | None:
    """Why `model_cfg` (a model option) breaks its family's fixed specification, or None."""
    family = FAMILIES.get(str(model_cfg.family))
    if family is None or family.fixed_spec is None:
        return None
    return resolve(family.fixed_spec)(model_cfg)


def resolve(target: str) -> Any:
    """The attribute a "module:attribute" string names, imported now."""
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)
