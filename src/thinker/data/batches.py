"""The order in which training rows become optimizer steps, shared by every backend that batches itself.

A seeded shuffle per epoch; one item is one optimizer step of `micro_batches_per_step` micro-batches (the
local backend's loader), and `rows_of(item, epoch)` names the rows of any step without iterating, which is
how backend=tinker builds the same steps and how a resumed run skips what it has seen.

Data parallel (`num_replicas` > 1, one loader per rank): rank r takes every num_replicas-th row of the
epoch's order from position r, as torch's DistributedSampler does, so the ranks' shards are disjoint and
together cover the epoch, and the rows of global step s (every rank's step s) are exactly the rows a single
process with num_replicas times the batch size trains in its step s. Short shards are padded with rows that
carry no loss (weight 0, every label ignored) so that every rank takes the same number of steps: a rank that
ran out would leave the others waiting in the gradient all-reduce forever.
"""

from __future__ import annotations

import math
import random
from array import array
from collections.abc import Callable, Iterator
from typing import Any

from thinker.data.packing import Row, collate
from thinker.data.tokenize import IGNORE_INDEX
from thinker.errors import ThinkerError


def padding_row(pad_id: int) -> Row:
    """One padding token that nothing is learnt from: it fills a short shard and changes no gradient."""
    return Row(input_ids=[pad_id], labels=[IGNORE_INDEX], weights=[0.0], position_ids=[0], n_examples=0)


def shard_indices(order: list[int], num_replicas: int, rank: int) -> list[int | None]:
    """Rank `rank`'s part of `order`: positions rank, rank + num_replicas, ...; None where the shard is padded
    so that every rank gets ceil(len(order) / num_replicas) entries."""
    if not 0 <= rank < num_replicas:
        raise ValueError(f"rank {rank} is not one of {num_replicas} ranks")
    if num_replicas == 1:
        return list(order)
    per_rank = math.ceil(len(order) / num_replicas)
    padded: list[int | None] = [*order, *([None] * (per_rank * num_replicas - len(order)))]
    return padded[rank::num_replicas]


class ResumableLoader:
    """Yields collated batches of rows in a seeded order that changes every epoch.

    With `micro_batches_per_step` set, each item is a list of that many micro-batches (one optimizer step);
    without it, each item is one collated batch (held-out evaluation). With `num_replicas` > 1 it serves rank
    `rank`'s shard only (module docstring); `served` holds, per epoch, the rows it has yielded (8 bytes a row),
    which is how a run reports which rows each rank trained on.

    The epoch comes from `current_epoch` (the trainer's) when given: Lightning calls set_epoch only on
    samplers, which this loader has none of. Lightning saves/loads state_dict() with checkpoints; after a
    load the first `skip` batches of the saved epoch are skipped, so nothing is seen twice.
    """

    def __init__(self, rows: list[Row], batch_size: int, pad_id: int, packed: bool, seed: int, shuffle: bool,
                 processed_in_epoch: Callable[[], int] | None = None,
                 current_epoch: Callable[[], int] | None = None, micro_batches_per_step: int | None = None,
                 num_replicas: int = 1, rank: int = 0):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not one of {num_replicas} ranks")
        self.rows = rows
        self.micro_batches_per_step = micro_batches_per_step
        self.batch_size = batch_size
        self.pad_id = pad_id
        self.packed = packed
        self.seed = seed
        self.shuffle = shuffle
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        self.served: dict[int, array] = {}
        self._skip_epoch, self._skip = -1, 0
        self._processed_in_epoch = processed_in_epoch
        self._current_epoch = current_epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self, epoch: int) -> list[int]:
        """Every row of epoch `epoch`, in the order all ranks agree on."""
        idx = list(range(len(self.rows)))
        if self.shuffle:
            random.Random(self.seed * 1_000_003 + epoch).shuffle(idx)
        return idx

    def shard(self, epoch: int) -> list[int | None]:
        """This rank's rows of epoch `epoch` (None: a padding row); the whole order on a single process."""
        return shard_indices(self.order(epoch), self.num_replicas, self.rank)

    @property
    def rows_per_rank(self) -> int:
        return math.ceil(len(self.rows) / self.num_replicas)

    @property
    def micro_batches(self) -> int:
        return (self.rows_per_rank + self.batch_size - 1) // self.batch_size

    def __len__(self) -> int:
        group = self.micro_batches_per_step or 1
        return (self.micro_batches + group - 1) // group

    def _indices_of(self, item: int, shard: list[int | None]) -> list[list[int | None]]:
        group = self.micro_batches_per_step or 1
        first, last = item * group, min((item + 1) * group, self.micro_batches)
        return [shard[b * self.batch_size : (b + 1) * self.batch_size] for b in range(first, last)]

    def _row(self, index: int | None) -> Row:
        return padding_row(self.pad_id) if index is None else self.rows[index]

    def rows_of(self, item: int, epoch: int) -> list[list[Row]]:
        """The rows of each micro-batch of item `item` (a step, or one batch) in epoch `epoch`."""
        return [[self._row(i) for i in micro] for micro in self._indices_of(item, self.shard(epoch))]

    def __iter__(self) -> Iterator[Any]:
        if self._current_epoch is not None:
            self.epoch = int(self._current_epoch())
        start = self._skip if self._skip_epoch == self.epoch else 0
        self._skip_epoch, self._skip = -1, 0
        epoch, shard = self.epoch, self.shard(self.epoch)  # shuffled once per pass, not once per step
        for item in range(start, len(self)):
            micro = self._indices_of(item, shard)
            batches = [collate([self._row(i) for i in indices], self.pad_id, self.packed) for indices in micro]
            trained = [i for indices in micro for i in indices if i is not None]
            if trained:
                self.served.setdefault(epoch, array("q")).extend(trained)
            yield batches if self.micro_batches_per_step else batches[0]

    # Lightning's resumable-loader protocol
    def state_dict(self) -> dict[str, int]:
        processed = self._processed_in_epoch() if self._processed_in_epoch else 0
        return {"epoch": self.epoch, "processed": processed, "num_replicas": self.num_replicas}

    def load_state_dict(self, state: dict[str, int]) -> None:
        saved = int(state.get("num_replicas", 1))  # checkpoints from before data parallelism: one process
        if saved != self.num_replicas:
            # the shards (and the step the run stopped at) depend on the number of ranks
            raise ThinkerError(
                f"the checkpoint was written by a run on {saved} process(es) and this run has {self.num_replicas}",
                "resume, trainer.devices / trainer.num_nodes",
                f"resume on {saved} process(es) (the devices and nodes of the interrupted run)", stage="train",
            )
        self._skip_epoch, self._skip = int(state["epoch"]), int(state["processed"])
