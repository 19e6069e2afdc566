"""The cognate transformer itself: pre-norm GPT blocks with causal self-attention (torch's SDPA)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from thinker.models.adapters.cognate import CognateConfig


@dataclass
class CognateOutput:
    logits: torch.Tensor
    loss: torch.Tensor | None = None


class CausalSelfAttention(nn.Module):
    def __init__(self, config: CognateConfig):
        super().__init__()
        self.n_heads = config.n_heads
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.proj = nn.Linear(config.d_model, config.d_model)
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=2)
        q, k, v = (t.view(batch, length, self.n_heads, -1).transpose(1, 2) for t in (q, k, v))
        mask = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
        if padding_mask is not None:  # keys that are padding are never attended to
            mask = mask & padding_mask[:, None, None, :].bool()
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(batch, length, width))


class Block(nn.Module):
    def __init__(self, config: CognateConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.d_model)
        self.attn = CausalSelfAttention(config)
        self.norm2 = nn.LayerNorm(config.d_model)
        self.mlp = nn.Sequential(nn.Linear(config.d_model, config.ff_size), nn.GELU(),
                                 nn.Linear(config.ff_size, config.d_model), nn.Dropout(config.dropout))

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), padding_mask)
        return x + self.mlp(self.norm2(x))


class CognateModel(nn.Module):
    def __init__(self, config: CognateConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.positions = nn.Embedding(config.max_seq_len, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: Any = None, labels: Any = None) -> CognateOutput:
        length = input_ids.shape[1]
        if length > self.config.max_seq_len:
            raise ValueError(f"sequence of {length} tokens is longer than max_seq_len={self.config.max_seq_len}")
        positions = torch.arange(length, device=input_ids.device)
        x = self.embed(input_ids) + self.positions(positions)
        for block in self.blocks:
            x = block(x, attention_mask)
        logits = self.head(self.norm(x))
        loss = None
        if labels is not None:  # next-token loss, Hugging Face style: labels are the inputs, -100 ignored
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1),
                                   ignore_index=-100)
        return CognateOutput(logits=logits, loss=loss)
