"""Helpers shared by the training benchmarks: compose the real config tree, keep the console readable."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def compose(overrides: list[str]) -> Any:
    """The config `python launch.py <overrides>` would run with (as tests/conftest.py composes it)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import thinker.config.schema  # noqa: F401  (registers the structured configs the tree refers to)

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def quiet() -> None:
    """Silence progress bars and info chatter; a benchmark prints only its own table."""
    os.environ.setdefault("TQDM_DISABLE", "1")  # tqdm >= 4.66 reads it: covers shard-writing bars too
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")
    for name in ("thinker", "lightning", "lightning.pytorch", "lightning.fabric", "transformers", "peft"):
        logging.getLogger(name).setLevel(logging.ERROR)
