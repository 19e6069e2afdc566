"""The interface every architecture adapter implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any


class ModelAdapter(ABC):
    """Wraps one model of a family. Architecture parameters come from the model's own config (seed 002,
    decision 6); shared hyperparameters (lr, batch size, steps) stay in the training config."""

    family: str = ""

    def __init__(self, model: Any):
        self.model = model

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
    def load(cls, folder: str | Path, **kwargs: Any) -> ModelAdapter:
        """Rebuild the model from a folder written by save()."""
