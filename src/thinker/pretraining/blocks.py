"""Pretraining text as fixed-length token blocks (every token is a target), and the held-out reasoning prompts.

Pretraining learns from every token, so examples are concatenated (each ended by EOS) and cut into blocks of
`trainer.max_seq_length` tokens, the GPT recipe: no padding, no masking. The held-out split is the same seeded
split every backend uses (thinker.data.examples.split_examples), so the accuracy prompts never trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TokenBlocks:
    blocks: list[list[int]]
    tokens: int  # in the examples (before the remainder that fills no block is dropped)


def to_blocks(tokenizer: Any, texts: list[str], length: int) -> TokenBlocks:
    ids: list[int] = []
    eos = tokenizer.eos_token_id
    for text in texts:
        ids += tokenizer(text, add_special_tokens=False)["input_ids"]
        if eos is not None:
            ids.append(eos)
    blocks = [ids[i:i + length] for i in range(0, len(ids) - length + 1, length)]
    if not blocks and ids:  # less text than one block: one short block still trains
        blocks = [ids]
    return TokenBlocks(blocks, len(ids))


def collate(batch: list[list[int]], pad_id: int) -> dict[str, Any]:
    import torch

    width = max(len(b) for b in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, block in enumerate(batch):
        ids[row, :len(block)] = torch.tensor(block)
        mask[row, :len(block)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
