"""Training backends: where a run trains. Each returns the same TrainingReport.

A backend is one module exposing `train(cfg, run_dir, session) -> TrainingReport` (session: the job's
MLflow run, or None). The table below maps a
backend name to that module; a name whose module has not landed yet composes but fails clearly here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from omegaconf import DictConfig

from thinker.errors import NotAvailableYet


@dataclass
class TrainingReport:
    backend: str
    checkpoint_dir: Path | None
    metrics: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # JSON-able details for the run record
    # in-memory results for programmatic callers (trained model, tokenizer); never recorded
    objects: dict[str, Any] = field(default_factory=dict, repr=False)


class TrainingBackend(Protocol):
    def __call__(self, cfg: DictConfig, run_dir: Path, session: Any) -> TrainingReport: ...


# name -> "module:function"; None: composes, but its code comes in a later release
BACKENDS: dict[str, str | None] = {
    "local": "thinker.backends.local.backend:train",
    "tinker": None,
    "provider": None,
}


def get_backend(name: str) -> TrainingBackend:
    target = BACKENDS.get(name)
    if target is None:
        raise NotAvailableYet(
            f"backend={name}", f"the {name} training backend", "use backend=local for now"
        )
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("thinker."):
            raise NotAvailableYet(f"backend={name}", f"the {name} training backend", "use another backend") from exc
        raise
    return getattr(module, attr)
