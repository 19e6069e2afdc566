"""The local generator: a trained run's weights/ folder (PEFT adapter + its base, or a full model) as a
`generate(prompts) -> completions` function for the evaluation runner.

torch, transformers and peft are imported when a generator is built, never at module import.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("thinker")


@dataclass(frozen=True)
class Decoding:
    """Greedy by default (reproducible scores); do_sample=True samples at temperature 0.7, top_p 0.9 (docs/evaluation.md)."""

    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 160
    seed: int = 42


def load_model(weights_dir: Path, device: str) -> tuple[Any, Any]:
    """(model, tokenizer) in eval mode. An adapter runs on the base it was trained on: after QLoRA, the
    4-bit base dequantised, so the scores describe the model that was trained."""
    from thinker.models.adapter_weights import is_adapter, load_adapter_model
    from thinker.models.loading import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(str(weights_dir))  # training saved the tokenizer beside the weights
    if is_adapter(weights_dir):
        model = load_adapter_model(weights_dir)
    else:
        model = load_causal_lm(str(weights_dir), method="full", quant=None)
    return model.to(device).eval(), tokenizer


def _max_prompt_tokens(model: Any, max_new_tokens: int) -> int | None:
    limit = getattr(model.config, "max_position_embeddings", None)
    return max(1, int(limit) - max_new_tokens) if limit else None


def local_generator(weights_dir: str | Path, decoding: Decoding = Decoding(), device: str = "cpu"
                    ) -> Callable[[list[str]], list[str]]:
    """Load once, then generate completions for batches of already-rendered prompts."""
    model, tokenizer = load_model(Path(weights_dir), device)
    return model_generator(model, tokenizer, decoding, device)


def model_generator(model: Any, tokenizer: Any, decoding: Decoding, device: Any) -> Callable[[list[str]], list[str]]:
    """Completions from a model in memory (its mode is the caller's): what the local generator and the
    pretraining loop's held-out accuracy both call. Sets the tokenizer's padding to the left."""
    import torch

    tokenizer.padding_side = "left"  # decoder-only: pad on the left so every row continues its own prompt
    # keep the end of a long prompt (the part right before the completion) when it exceeds the context
    tokenizer.truncation_side = "left"
    max_prompt = _max_prompt_tokens(model, decoding.max_new_tokens)
    sampling = {"do_sample": True, "temperature": decoding.temperature, "top_p": decoding.top_p} \
        if decoding.do_sample else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}

    def generate(prompts: list[str]) -> list[str]:
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False,
                          truncation=max_prompt is not None, max_length=max_prompt).to(device)
        if decoding.do_sample:
            torch.manual_seed(decoding.seed)
        with torch.inference_mode():
            out = model.generate(**batch, max_new_tokens=decoding.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id, **sampling)
        new_tokens = out[:, batch["input_ids"].shape[1]:]
        return tokenizer.batch_decode(new_tokens, skip_special_tokens=True)

    return generate
