"""Merge a trained LoRA adapter into its base model and save a standalone Hugging Face model."""

from __future__ import annotations

import logging
from pathlib import Path

from thinker.errors import ThinkerError

log = logging.getLogger("thinker")


def find_weights(path: str | Path) -> Path:
    """Accept a run folder (…/weights inside it) or the weights folder itself."""
    p = Path(path)
    for candidate in (p / "weights", p):
        if (candidate / "adapter_config.json").is_file():
            return candidate
    raise ThinkerError(
        f"no LoRA adapter found in {p}",
        "models merge",
        "pass a run folder produced by a lora/qlora run (it holds weights/adapter_config.json)",
        stage="record",
    )


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """Merge the adapter into the base it was trained on (a QLoRA adapter: the dequantised 4-bit base, never
    the original full-precision weights it never saw) and write a standalone model atomically."""
    from thinker.models.adapter_weights import merge_into

    adapter_dir, out_dir = find_weights(adapter_dir), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ThinkerError(f"{out_dir} exists and is not empty", "--out", "choose a new folder", stage="record")
    merge_into(adapter_dir, out_dir)
    log.info("merged %s into %s", adapter_dir, out_dir)
    return out_dir
