"""LightningDataModule for prompt/completion data: tokenise once, pack, and serve resumable batches.

One train batch is one optimizer step: a list of `grad_accum` collated micro-batches (the last step of an
epoch may have fewer). The train loader is resumable: Lightning stores its state_dict in each checkpoint,
so a resumed run sees exactly the steps an uninterrupted run would have seen next (same seed, same order,
same packing). The data is tokenised in memory up front, so loader worker processes would add nothing.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl

from thinker.data.examples import Example
from thinker.data.packing import Row, collate, pack_rows, single_rows
from thinker.data.tokenize import LossWeights, TokenizedExample, tokenize_example

log = logging.getLogger("thinker")


@dataclass
class TokenStats:
    examples: int
    truncated: int
    tokens: int
    trained_tokens: int
    rows: int


def tokenize_all(tokenizer: Any, examples: list[Example], max_length: int, weights: LossWeights,
                 train_on_inputs: bool) -> list[TokenizedExample]:
    return [
        tokenize_example(tokenizer, ex.prompt, ex.completion, max_length=max_length, weights=weights,
                         train_on_inputs=train_on_inputs)
        for ex in examples
    ]


def make_rows(tokenized: list[TokenizedExample], max_length: int, packed: bool) -> list[Row]:
    return pack_rows(tokenized, max_length) if packed else single_rows(tokenized)


def stats(tokenized: list[TokenizedExample], rows: list[Row]) -> TokenStats:
    return TokenStats(
        examples=len(tokenized),
        truncated=sum(t.truncated for t in tokenized),
        tokens=sum(len(t) for t in tokenized),
        trained_tokens=sum(t.trained_tokens for t in tokenized),
        rows=len(rows),
    )


class ResumableLoader:
    """Yields collated batches of rows in a seeded order that changes every epoch.

    With `micro_batches_per_step` set, each item is a list of that many micro-batches (one optimizer step);
    without it, each item is one collated batch (held-out evaluation).

    The epoch comes from `current_epoch` (the trainer's) when given: Lightning calls set_epoch only on
    samplers, which this loader has none of. Lightning saves/loads state_dict() with checkpoints; after a
    load the first `skip` batches of the saved epoch are skipped, so nothing is seen twice.
    """

    def __init__(self, rows: list[Row], batch_size: int, pad_id: int, packed: bool, seed: int, shuffle: bool,
                 processed_in_epoch: Callable[[], int] | None = None,
                 current_epoch: Callable[[], int] | None = None, micro_batches_per_step: int | None = None):
        self.rows = rows
        self.micro_batches_per_step = micro_batches_per_step
        self.batch_size = batch_size
        self.pad_id = pad_id
        self.packed = packed
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self._skip_epoch, self._skip = -1, 0
        self._processed_in_epoch = processed_in_epoch
        self._current_epoch = current_epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self, epoch: int) -> list[int]:
        idx = list(range(len(self.rows)))
        if self.shuffle:
            random.Random(self.seed * 1_000_003 + epoch).shuffle(idx)
        return idx

    @property
    def micro_batches(self) -> int:
        return (len(self.rows) + self.batch_size - 1) // self.batch_size

    def __len__(self) -> int:
        group = self.micro_batches_per_step or 1
        return (self.micro_batches + group - 1) // group

    def rows_of(self, item: int, epoch: int) -> list[list[Row]]:
        """The rows of each micro-batch of item `item` (a step, or one batch) in epoch `epoch`."""
        idx = self.order(epoch)
        group = self.micro_batches_per_step or 1
        first, last = item * group, min((item + 1) * group, self.micro_batches)
        return [[self.rows[i] for i in idx[b * self.batch_size : (b + 1) * self.batch_size]]
                for b in range(first, last)]

    def __iter__(self) -> Iterator[Any]:
        if self._current_epoch is not None:
            self.epoch = int(self._current_epoch())
        start = self._skip if self._skip_epoch == self.epoch else 0
        self._skip_epoch, self._skip = -1, 0
        for item in range(start, len(self)):
            batches = [collate(rows, self.pad_id, self.packed) for rows in self.rows_of(item, self.epoch)]
            yield batches if self.micro_batches_per_step else batches[0]

    # Lightning's resumable-loader protocol
    def state_dict(self) -> dict[str, int]:
        processed = self._processed_in_epoch() if self._processed_in_epoch else 0
        return {"epoch": self.epoch, "processed": processed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._skip_epoch, self._skip = int(state["epoch"]), int(state["processed"])


class FineTuneDataModule(pl.LightningDataModule):
    def __init__(self, train_rows: list[Row], val_rows: list[Row], batch_size: int, pad_id: int, packed: bool,
                 seed: int, shuffle: bool = True, grad_accum: int = 1):
        super().__init__()
        self.train_rows, self.val_rows = train_rows, val_rows
        self.grad_accum = grad_accum
        self.batch_size, self.pad_id, self.packed = batch_size, pad_id, packed
        self.seed, self.shuffle = seed, shuffle

    def _processed_in_epoch(self) -> int:
        return int(self.trainer.fit_loop.epoch_loop.batch_progress.current.processed)

    def train_dataloader(self) -> ResumableLoader:
        return ResumableLoader(self.train_rows, self.batch_size, self.pad_id, self.packed, self.seed,
                               self.shuffle, self._processed_in_epoch, lambda: self.trainer.current_epoch,
                               micro_batches_per_step=self.grad_accum)

    def val_dataloader(self) -> ResumableLoader | list:
        if not self.val_rows:
            return []
        return ResumableLoader(self.val_rows, self.batch_size, self.pad_id, self.packed, self.seed, shuffle=False)
