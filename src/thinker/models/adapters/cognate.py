"""The project's own model family, `cognate` (docs/decisions/0010-cognate-pretraining-path.md): a decoder-only transformer with adaptive computation
time (ACT) and a long-term memory (LTM), registered with transformers so it loads, trains with peft, generates,
merges and registers exactly like a Qwen model.

This module stays light (no torch, no transformers). The specification (sizes, budgets, config settings) is
thinker.models.adapters.cognate_spec, which the registry, the config check and the model read; the model itself
is thinker.models.adapters.cognate_model, imported when a model is built or loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from thinker.errors import ThinkerError
from thinker.models.adapters.cognate_spec import ARCH_KEYS, config_settings
from thinker.models.adapters.hf_causal import HFCausalLMAdapter


class CognateAdapter(HFCausalLMAdapter):
    """A Cognate model is a transformers PreTrainedModel (CognateForCausalLM): saving, loading, peft and
    generate() are the Hugging Face ones. What is particular to the family: it must be registered with the Auto
    classes first, it has no 4-bit path and brings its own attention."""

    family = "cognate"
    supports_4bit = False

    def __init__(self, model: Any):
        super().__init__(model)
        self.family = "cognate"

    @classmethod
    def register(cls) -> None:
        from thinker.models.adapters.cognate_model import register

        register()

    @classmethod
    def build(cls, config: Any, seed: int | None = None, tokenizer: Any = None) -> CognateAdapter:
        """A freshly initialised model from a CognateConfig, a dict of its keys, or a model option (cfg.model)."""
        import torch

        from thinker.models.adapters.cognate_model import CognateConfig, CognateForCausalLM

        if not isinstance(config, CognateConfig):
            settings = config_settings(config, tokenizer) if hasattr(config, "name") else dict(config)
            config = CognateConfig(**settings)
        if seed is not None:
            torch.manual_seed(seed)
        return cls(CognateForCausalLM(config))

    def config(self) -> dict[str, Any]:
        full = self.model.config.to_dict()
        return {key: full[key] for key in (*ARCH_KEYS, "model_type", "param_budget") if key in full}

    @classmethod
    def load(cls, folder: str | Path, *, method: str = "full", quant: Any = None, dtype: str = "fp32",
             attn_implementation: str | None = "sdpa", **kwargs: Any) -> CognateAdapter:
        if str(method) == "qlora":
            raise ThinkerError("method=qlora needs 4-bit loading, which the cognate architecture does not have",
                               f"model.source={folder}", "use method=lora", stage="train")
        if attn_implementation not in (None, "sdpa", "eager"):
            raise ThinkerError(f"the cognate architecture has its own attention, not {attn_implementation}",
                               "trainer.optimizations", "remove flash_attention for this model", stage="train")
        cls.register()
        adapter = cls(cls.from_pretrained(folder, method=method, quant=None, dtype=dtype, attn_implementation="sdpa",
                                          **kwargs))
        # folders saved before the Cognate KV cache existed say use_cache=false; the cache is exact, so use it
        adapter.model.generation_config.use_cache = True
        return adapter
