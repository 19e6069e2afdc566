"""Hugging Face causal LMs (the Qwen and Llama families): transformers already knows the architecture.

Its `from_pretrained` is the one place a causal LM's weights are read (safetensors only; 4 bit for qlora);
the cognate adapter uses it too once its classes are registered.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    def load(cls, folder: str | Path, *, method: str = "full", quant: Mapping[str, Any] | None = None,
             dtype: str = "fp32", **kwargs: Any) -> HFCausalLMAdapter:
        cls.register()
        return cls(cls.from_pretrained(folder, method=method, quant=quant, dtype=dtype, **kwargs))

    @staticmethod
    def from_pretrained(
        path_or_id: str | Path,
        *,
        method: str,
        quant: Mapping[str, Any] | None,
        dtype: str = "fp32",
        revision: str | None = None,
        device_map: Any = None,
        attn_implementation: str | None = "sdpa",
    ) -> Any:
        """AutoModelForCausalLM from safetensors, in 4 bit (bitsandbytes NF4/FP4) when `method` is qlora.

        `dtype` is the dtype of the unquantised weights; `quant` holds the qlora settings (quant_type,
        double_quant, compute_dtype). bitsandbytes >= 0.48 quantises on the CPU too, so qlora works without a GPU.
        """
        from transformers import AutoModelForCausalLM

        from thinker.errors import ThinkerError
        from thinker.models.loading import (
            bnb_4bit_config,
            default_device_map,
            first_line,
            hub_errors,
            hub_token,
            require_safetensors,
            torch_dtype,
        )

        path_or_id = str(path_or_id)
        require_safetensors(path_or_id)
        kwargs: dict[str, Any] = {
            "dtype": torch_dtype(dtype, "trainer.precision"),
            "attn_implementation": attn_implementation,
            "use_safetensors": True,
            "revision": revision,
            "token": hub_token(),
        }
        if str(method) == "qlora":
            if quant is None:
                raise ValueError(
                    "method qlora needs its quantisation settings (quant_type, double_quant, compute_dtype)"
                )
            kwargs["quantization_config"] = bnb_4bit_config(quant)
            # 4-bit weights cannot be moved after loading, so they are placed on their final device now
            device_map = device_map if device_map is not None else default_device_map()
        if device_map is not None:
            kwargs["device_map"] = device_map
        with hub_errors(path_or_id, revision):
            try:
                return AutoModelForCausalLM.from_pretrained(path_or_id, **kwargs)
            except ImportError as error:  # e.g. flash_attention_2 without the flash-attn package
                raise ThinkerError(f"{path_or_id} could not be loaded: {first_line(error)}",
                                   "trainer.optimizations", "install the missing package or remove the optimization",
                                   stage="train") from error
