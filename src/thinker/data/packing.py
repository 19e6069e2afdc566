"""Pack short examples into full rows, and collate rows into padded batches.

A packed row holds several examples back to back; position_ids restart at 0 at each example, which is how
transformers (sdpa / flash attention) recognises packed sequences and keeps attention from crossing
example boundaries. Padding appended to a row is its own segment (positions from 0, no loss).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from thinker.data.tokenize import IGNORE_INDEX, TokenizedExample


@dataclass
class Row:
    input_ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    position_ids: list[int] = field(default_factory=list)
    n_examples: int = 0

    def add(self, ex: TokenizedExample) -> None:
        self.input_ids += ex.input_ids
        self.labels += ex.labels
        self.weights += ex.weights
        self.position_ids += list(range(len(ex)))
        self.n_examples += 1

    def __len__(self) -> int:
        return len(self.input_ids)


def single_rows(examples: list[TokenizedExample]) -> list[Row]:
    rows = []
    for ex in examples:
        row = Row()
        row.add(ex)
        rows.append(row)
    return rows


def pack_rows(examples: list[TokenizedExample], max_length: int) -> list[Row]:
    """First-fit decreasing: longest examples first, each into the first row with room.

    Deterministic for a given input order (ties keep their order), so seeded runs reproduce.
    """
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i]))
    rows: list[Row] = []
    for i in order:
        ex = examples[i]
        target = next((r for r in rows if len(r) + len(ex) <= max_length), None)
        if target is None:
            target = Row()
            rows.append(target)
        target.add(ex)
    return rows


def collate(rows: list[Row], pad_id: int, packed: bool) -> dict:
    """Pad rows to the longest in the batch. Packed batches carry position_ids and no attention mask."""
    import torch

    width = max(len(r) for r in rows)
    ids, labels, weights, positions, mask = [], [], [], [], []
    for r in rows:
        pad = width - len(r)
        ids.append(r.input_ids + [pad_id] * pad)
        labels.append(r.labels + [IGNORE_INDEX] * pad)
        weights.append(r.weights + [0.0] * pad)
        positions.append(r.position_ids + list(range(pad)))
        mask.append([1] * len(r) + [0] * pad)
    batch = {
        "input_ids": torch.tensor(ids, dtype=torch.long),
        "labels": torch.tensor(labels, dtype=torch.long),
        "weights": torch.tensor(weights, dtype=torch.float32),
    }
    if packed:
        batch["position_ids"] = torch.tensor(positions, dtype=torch.long)
    else:
        batch["attention_mask"] = torch.tensor(mask, dtype=torch.long)
    return batch
