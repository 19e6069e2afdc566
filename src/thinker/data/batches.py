"""The order in which training rows become optimizer steps, shared by every backend that batches itself.

A seeded shuffle per epoch; one item is one optimizer step of `micro_batches_per_step` micro-batches (the
local backend's loader), and `rows_of(item, epoch)` names the rows of any step without iterating, which is
how backend=tinker builds the same steps and how a resumed run skips what it has seen.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

from thinker.data.packing import Row, collate


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


