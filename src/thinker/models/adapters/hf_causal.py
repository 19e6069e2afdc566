"""Hugging Face causal LMs (the Qwen and Llama families): transformers already knows the architecture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from thinker.models.adapters.base import ModelAdapter

# the keys that describe the architecture (the rest of config.json is ids, dtypes and bookkeeping)
ARCH_KEYS = ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
             "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings", "rope_theta",
             "tie_word_embeddings", "rms_norm_eps", "hidden_act")


class HFCausalLMAdapter(ModelAdapter):
    def __init__(self, model: Any):
        super().__init__(model)
        self.family = str(model.config.model_type)

    def forward(self, input_ids: Any, attention_mask: Any = None, labels: Any = None) -> Any:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)

    def config(self) -> dict[str, Any]:
        full = self.model.config.to_dict()
        return {key: full[key] for key in ARCH_KEYS if key in full}

    def save(self, folder: str | Path) -> Path:
        self.model.save_pretrained(folder, safe_serialization=True)
        return Path(folder)

    @classmethod
    def load(cls, folder: str | Path, *, method: str = "full", quant: Any = None, dtype: str = "fp32",
             **kwargs: Any) -> HFCausalLMAdapter:
        from thinker.models.loading import load_causal_lm

        return cls(load_causal_lm(str(folder), method=method, quant=quant, dtype=dtype, **kwargs))
