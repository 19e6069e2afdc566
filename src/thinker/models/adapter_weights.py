"""A trained LoRA adapter on exactly the base it was trained on: for evaluation, merge, and fine-tuning a
fine-tune.

A QLoRA adapter learned its update against the 4-bit base, not the full-precision one. Its weights folder
records the quantisation (metadata.json `quantization`), so the base is rebuilt with those settings and then
dequantised (transformers' `dequantize()`): a full-precision copy of exactly the weights training saw. On
it, the adapter reproduces the trained model's outputs, and it can be merged into real weights.

Fine-tuning a registered LoRA fine-tune (`model=<fine-tune> method=lora|qlora`) must start from that
fine-tune, so its adapter is merged into its base once and cached under `models/merged/`; training then
treats the merged folder as an ordinary base model and the new adapter is fresh.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from thinker.tracking.atomic import atomic_directory

log = logging.getLogger("thinker")

ADAPTER_CONFIG = "adapter_config.json"
METADATA = "metadata.json"
# what older adapters (saved before `quantization` was recorded) were trained with
DEFAULT_QLORA = {"quant_type": "nf4", "double_quant": True, "compute_dtype": "fp32"}


def is_adapter(folder: str | Path) -> bool:
    return (Path(folder) / ADAPTER_CONFIG).is_file()


def metadata(weights_dir: Path) -> dict[str, Any]:
    path = weights_dir / METADATA
    return json.loads(path.read_text()) if path.is_file() else {}


def base_model_path(weights_dir: Path) -> str:
    """Where the adapter's base model is: metadata.json (written by training), else adapter_config.json."""
    base = metadata(weights_dir).get("base_path")
    if base:
        return str(base)
    return str(json.loads((weights_dir / ADAPTER_CONFIG).read_text())["base_model_name_or_path"])


def trained_quantization(weights_dir: Path) -> dict[str, Any] | None:
    """The 4-bit settings the adapter was trained against; None for an adapter on a full-precision base."""
    meta = metadata(weights_dir)
    if meta.get("method") != "qlora":
        return None
    return {**DEFAULT_QLORA, **(meta.get("quantization") or {})}


def load_base_as_trained(weights_dir: Path) -> Any:
    """The adapter's base in full precision: for QLoRA, the 4-bit base dequantised (exactly its weights)."""
    from thinker.models.loading import load_causal_lm

    quant = trained_quantization(weights_dir)
    base_path = base_model_path(weights_dir)
    if quant is None:
        return load_causal_lm(base_path, method="full", quant=None)
    quantized = load_causal_lm(base_path, method="qlora", quant=quant)
    return quantized.dequantize()  # its dtype note is turned down with the rest of the noise (thinker.console)


def load_adapter_model(weights_dir: str | Path) -> Any:
    """PeftModel: the adapter of `weights_dir` on the base it was trained on."""
    from peft import PeftModel

    weights_dir = Path(weights_dir)
    return PeftModel.from_pretrained(load_base_as_trained(weights_dir), str(weights_dir))


def adapter_digest(weights_dir: Path) -> str:
    """Identity of an adapter and its base: the adapter files' contents plus the base and quantisation."""
    digest = hashlib.sha256()
    for path in sorted(weights_dir.glob("adapter_*")):
        digest.update(path.name.encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    digest.update(json.dumps([base_model_path(weights_dir), trained_quantization(weights_dir)]).encode())
    return digest.hexdigest()[:16]


def training_start_point(model_path: str) -> str:
    """The folder training loads: `model_path` itself, or for a LoRA fine-tune its merged weights."""
    weights_dir = Path(model_path)
    if not is_adapter(weights_dir):
        return model_path
    from thinker.models.paths import models_dir

    target = models_dir() / "merged" / f"{weights_dir.name}-{adapter_digest(weights_dir)}"
    if (target / "config.json").is_file():
        return str(target)
    log.info("merging the parent adapter %s into its base (once; cached in %s)", weights_dir, target)
    try:
        # never replace: a parallel job that finished the same merge first may be loading it right now
        merge_into(weights_dir, target, replace_existing=False)
    except OSError:
        if not (target / "config.json").is_file():  # not a parallel job finishing the same merge first
            raise
    return str(target)


def merge_into(weights_dir: Path, out_dir: Path, replace_existing: bool = True) -> Path:
    """Merge the adapter into its as-trained base and save a standalone model (with the tokenizer) atomically."""
    from transformers import AutoTokenizer

    merged = load_adapter_model(weights_dir).merge_and_unload()
    with atomic_directory(out_dir, replace_existing=replace_existing) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        AutoTokenizer.from_pretrained(str(weights_dir)).save_pretrained(tmp)
        meta = metadata(weights_dir)
        meta["merged_from_adapter"] = str(weights_dir.resolve())
        (tmp / METADATA).write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return out_dir
