"""The interface every architecture adapter implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any


class ModelAdapter(ABC):
    """Wraps one model of a family. Architecture parameters come from the model's own config
    (docs/decisions/0008-local-model-registry.md); shared hyperparameters (lr, batch size, steps) stay in the training config.

    Every model the project trains, evaluates, merges or serves is loaded through `load` of its family's
    adapter (thinker.models.loading.load_causal_lm picks it), so a family's particulars live here only.
    """

    family: str = ""
    # bitsandbytes can load the family in 4 bit (method=qlora)
    supports_4bit: bool = True

    def __init__(self, model: Any):
        self.model = model

    @classmethod
    def register(cls) -> None:
        """Make the family known to transformers' Auto classes (nothing to do for the ones it ships)."""
        return None

    @abstractmethod
    def forward(self, input_ids: Any, attention_mask: Any = None, labels: Any = None) -> Any:
        """Logits (and the loss when `labels` is given), as an object with `.logits` and `.loss`."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """The architecture parameters, as plain JSON-able values."""

    @abstractmethod
    def save(self, folder: str | Path) -> Path:
        """Write config.json and safetensors weights into `folder`."""

    @classmethod
    @abstractmethod
    def load(cls, folder: str | Path, *, method: str = "full", quant: Any = None, dtype: str = "fp32",
             **kwargs: Any) -> ModelAdapter:
        """Load the model from a folder written by save() (or a hub id), for training with `method`
        (qlora: in 4 bit with the `quant` settings) with unquantised weights in `dtype`."""
