"""Attention over packed rows that never computes a block across two examples.

A packed row holds several examples back to back, with position_ids restarting at 0 at each one
(thinker.data.packing). transformers' plain `sdpa` keeps the examples apart with a block-diagonal mask over the
whole row, so it still computes every (query, key) pair of the row, cross-example ones included, and with a
mask SDPA cannot skip even the causal upper triangle: a row of 768 tokens holding two examples of 384 costs
four times what the two examples cost alone. This module gives each example its own causal attention:

- `document_sdpa` (registered with transformers as DOCUMENT_SDPA): per example, SDPA with is_causal on that
  example's slice of the row. Any device; what the CPU uses.
- on CUDA, transformers' own `flex_attention` builds a document mask from the same position_ids and skips the
  cross-example blocks in one fused kernel (torch.nn.attention.flex_attention): what a GPU uses when torch has it.

Batches that carry an attention mask (padding, packing off) and decoding with a KV cache go through the plain
sdpa path unchanged, so the implementation is safe to leave on for held-out evaluation too.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("thinker")

DOCUMENT_SDPA = "thinker_document_sdpa"
# architectures whose decoder layers hand position_ids to the attention function (the examples' bounds)
DOCUMENT_MODEL_TYPES = frozenset({"qwen2", "qwen3", "llama", "mistral"})


def document_bounds(position_ids: Any) -> list[list[tuple[int, int]]]:
    """Per row, the (start, end) of each example: a new one starts wherever a position is not its
    predecessor + 1 (transformers' rule in masking_utils.find_packed_sequence_indices)."""
    import torch

    starts = torch.ones_like(position_ids, dtype=torch.bool)
    starts[:, 1:] = position_ids[:, 1:] != position_ids[:, :-1] + 1
    length = position_ids.size(1)
    bounds = []
    for row in starts.cpu().tolist():
        first = [i for i, s in enumerate(row) if s]
        bounds.append(list(zip(first, [*first[1:], length], strict=True)))
    return bounds


def document_sdpa(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
                  scaling: float | None = None, position_ids: Any = None, **kwargs: Any) -> tuple[Any, None]:
    """transformers' attention-function signature: query (batch, heads, length, dim), key/value (batch,
    kv_heads, length, dim); returns (batch, length, heads, dim)."""
    import torch
    import torch.nn.functional as F  # noqa: N812
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    if attention_mask is not None or position_ids is None or query.size(2) != key.size(2) or query.size(2) == 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    if query.size(1) != key.size(1):
        # repeated rather than SDPA's enable_gqa, which sends a CPU to its slow math kernel
        key = repeat_kv(key, query.size(1) // key.size(1))
        value = repeat_kv(value, query.size(1) // value.size(1))
    rows = []
    for b, spans in enumerate(document_bounds(position_ids.expand(query.size(0), -1))):
        parts = [
            F.scaled_dot_product_attention(query[b:b + 1, :, s:e], key[b:b + 1, :, s:e], value[b:b + 1, :, s:e],
                                           dropout_p=dropout, scale=scaling, is_causal=e - s > 1)
            for s, e in spans
        ]
        rows.append(parts[0] if len(parts) == 1 else torch.cat(parts, dim=2))
    out = torch.cat(rows, dim=0) if len(rows) > 1 else rows[0]
    return out.transpose(1, 2).contiguous(), None


def document_mask(*args: Any, **kwargs: Any) -> Any:
    """The mask transformers builds for DOCUMENT_SDPA: none for rows without padding (the examples' bounds come
    from position_ids in document_sdpa), sdpa's own otherwise (padding, a KV cache)."""
    from transformers.masking_utils import sdpa_mask

    if kwargs.get("attention_mask") is None and kwargs.get("q_length") == kwargs.get("kv_length") and not kwargs.get(
            "q_offset") and not kwargs.get("kv_offset"):
        return None
    return sdpa_mask(*args, **kwargs)


def register() -> str:
    """Make DOCUMENT_SDPA a transformers attention implementation (idempotent); returns its name."""
    import torch
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    # its per-example loop reads the bounds as Python ints: compiled layers (trainer.compile) run it eagerly
    AttentionInterface.register(DOCUMENT_SDPA, torch.compiler.disable(document_sdpa))
    AttentionMaskInterface.register(DOCUMENT_SDPA, document_mask)
    return DOCUMENT_SDPA


def flex_attention_available() -> bool:
    try:
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def packed_attention(device: str) -> str:
    """The attention implementation for packed rows on `device`: flex_attention on CUDA where torch has it,
    DOCUMENT_SDPA elsewhere."""
    if device == "cuda" and flex_attention_available():
        return "flex_attention"
    return register()


def use_packed_attention(model: Any, device: str) -> str | None:
    """Switch a transformers model loaded with sdpa to document attention; returns the implementation, or None
    where the model keeps its own (an architecture with its own attention, such as Cognate, or flash-attn,
    which is already varlen over position_ids). A peft model is switched through its base model."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if (config is None or getattr(config, "model_type", None) not in DOCUMENT_MODEL_TYPES
            or getattr(config, "_attn_implementation", None) != "sdpa"):
        return None
    model = base
    name = packed_attention(device)
    model.set_attn_implementation(name)
    log.debug("packed rows: %s attention", name)
    return name
