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


# ---------------------------------------------------------------- model shapes with random weights (no hub)

# Qwen2.5's published configs (config.json of Qwen/Qwen2.5-{0.5B,1.5B,7B}); "tiny" is the builtin tiny-qwen
SHAPES: dict[str, dict[str, Any]] = {
    "0.5b": {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
             "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True},
    "1.5b": {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
             "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True},
    "7b": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
           "num_key_value_heads": 4, "vocab_size": 152064, "tie_word_embeddings": False},
}
QWEN25_COMMON = {"max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
                 "hidden_act": "silu", "use_sliding_window": False}


def save_random_qwen2(shape: str, folder: Path, tokenizer_from: str | None = None, device: str = "cpu") -> int:
    """A random-initialised Qwen2 of `shape` saved to `folder` in bf16 safetensors (built on `device`: a 7B
    initialises in seconds on a GPU); with the tokenizer of `tokenizer_from` (the builtin tiny-qwen's: its ids
    are valid in any of these vocabularies). Returns the parameter count."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config

    torch.manual_seed(0)
    config = Qwen2Config(**QWEN25_COMMON, **SHAPES[shape])
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(folder, safe_serialization=True)
    if tokenizer_from is not None:
        AutoTokenizer.from_pretrained(tokenizer_from).save_pretrained(folder)
    count = sum(p.numel() for p in model.parameters())
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return count


def cuda_peak_bytes(reset: bool = False) -> int:
    """torch.cuda.max_memory_allocated since the last reset (0 without CUDA); `reset` starts a new phase."""
    import torch

    if not torch.cuda.is_available():
        return 0
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    if reset:
        torch.cuda.reset_peak_memory_stats()
    return int(peak)


def run_sides_in_children(script: str, argv: list[str], sides: tuple[str, ...]) -> list[dict[str, Any]] | None:
    """Each side of a comparison in a fresh process (`script ... --side NAME`), as bench/dpo.py and
    bench/grpo.py run theirs: the child prints one `RESULT {json}` line. None (after printing the child's
    output) when a side gave no result."""
    import json
    import os
    import subprocess
    import sys

    rows = []
    for side in sides:
        out = subprocess.run([sys.executable, script, *argv, "--side", side], cwd=ROOT,
                             capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            print(out.stdout[-2000:], out.stderr[-4000:], sep="\n")
            return None
        rows.append(json.loads(line[len("RESULT "):]))
    return rows
