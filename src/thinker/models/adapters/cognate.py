"""The project's own transformer family, `cognate`: a small GPT-style decoder, built from its config alone.

Its architecture parameters live in CognateConfig (saved as config.json with model_type "cognate"), so the
pretraining issue can build it from a model option's `arch` and fine-tuning can reload it from a folder.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from thinker.models.adapters.base import ModelAdapter

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


@dataclass
class CognateConfig:
    vocab_size: int = 8192
    d_model: int = 512
    n_layers: int = 8
    n_heads: int = 8
    max_seq_len: int = 512
    d_ff: int | None = None  # None: 4 * d_model, as in GPT-2
    dropout: float = 0.0
    model_type: str = "cognate"

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")

    @property
    def ff_size(self) -> int:
        return self.d_ff or 4 * self.d_model

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CognateConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class CognateAdapter(ModelAdapter):
    family = "cognate"

    @classmethod
    def build(cls, config: CognateConfig | dict[str, Any], seed: int | None = None) -> CognateAdapter:
        import torch

        from thinker.models.adapters.cognate_model import CognateModel

        if isinstance(config, dict):
            config = CognateConfig.from_dict(config)
        if seed is not None:
            torch.manual_seed(seed)
        return cls(CognateModel(config))

    def forward(self, input_ids: Any, attention_mask: Any = None, labels: Any = None) -> Any:
        return self.model(input_ids, attention_mask=attention_mask, labels=labels)

    def config(self) -> dict[str, Any]:
        return asdict(self.model.config)

    def save(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_FILE).write_text(json.dumps(self.config(), indent=2) + "\n")
        state = {k: v.detach().contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
        return folder

    @classmethod
    def load(cls, folder: str | Path, **kwargs: Any) -> CognateAdapter:
        from safetensors.torch import load_file

        folder = Path(folder)
        adapter = cls.build(json.loads((folder / CONFIG_FILE).read_text()))
        adapter.model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
        return adapter
