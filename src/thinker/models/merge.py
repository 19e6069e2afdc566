"""Merge a trained LoRA adapter into its base model and save a standalone Hugging Face model."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from thinker.errors import ThinkerError
from thinker.tracking.atomic import atomic_directory

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
    """Load the adapter's base model in full precision (never 4 bit: merging needs real weights), merge,
    and write the result atomically with save_pretrained."""
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    adapter_dir, out_dir = find_weights(adapter_dir), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ThinkerError(f"{out_dir} exists and is not empty", "--out", "choose a new folder", stage="record")
    model = AutoPeftModelForCausalLM.from_pretrained(str(adapter_dir))
    merged = model.merge_and_unload()
    with atomic_directory(out_dir) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(tmp)
        meta_src = adapter_dir / "metadata.json"
        meta = json.loads(meta_src.read_text()) if meta_src.exists() else {}
        meta["merged_from_adapter"] = str(adapter_dir.resolve())
        (tmp / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    log.info("merged %s into %s", adapter_dir, out_dir)
    return out_dir
