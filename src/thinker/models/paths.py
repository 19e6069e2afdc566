"""Where thinker keeps model weights it builds or imports."""

from __future__ import annotations

import os
from pathlib import Path

MODELS_DIR_ENV = "THINKER_MODELS_DIR"


def models_dir() -> Path:
    """`$THINKER_MODELS_DIR`, else `./models` in the current working directory."""
    configured = os.environ.get(MODELS_DIR_ENV)
    return Path(configured).expanduser() if configured else Path.cwd() / "models"
