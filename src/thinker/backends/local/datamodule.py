"""LightningDataModule for prompt/completion data: tokenise once, pack, and serve resumable batches.

One train batch is one optimizer step: a list of `grad_accum` collated micro-batches (the last step of an
epoch may have fewer). The train loader (thinker.data.batches.ResumableLoader) is resumable: Lightning stores
its state_dict in each checkpoint, so a resumed run sees exactly the steps an uninterrupted run would have seen
next. The data is tokenised in memory up front (thinker.data.prepare), so loader worker processes would add
nothing. Lightning injects a DistributedSampler only into torch DataLoaders, so under DDP / FSDP each loader is
told its rank and serves that rank's shard itself (held-out rows too: the module sums the ranks' losses).
"""

from __future__ import annotations

import lightning.pytorch as pl

from thinker.data.batches import ResumableLoader
from thinker.data.packing import Row
from thinker.data.prepare import TokenStats, make_rows, stats, tokenize_all

__all__ = ["FineTuneDataModule", "ResumableLoader", "TokenStats", "make_rows", "stats", "tokenize_all"]


class FineTuneDataModule(pl.LightningDataModule):
    def __init__(self, train_rows: list[Row], val_rows: list[Row], batch_size: int, pad_id: int, packed: bool,
                 seed: int, shuffle: bool = True, grad_accum: int = 1):
        super().__init__()
        self.train_rows, self.val_rows = train_rows, val_rows
        self.grad_accum = grad_accum
        self.batch_size, self.pad_id, self.packed = batch_size, pad_id, packed
        self.seed, self.shuffle = seed, shuffle
        self.train_loader: ResumableLoader | None = None  # the last one served: its `served` rows are this rank's

    def _processed_in_epoch(self) -> int:
        return int(self.trainer.fit_loop.epoch_loop.batch_progress.current.processed)

    def _ranks(self) -> dict[str, int]:
        if self.trainer is None:  # outside a fit (tools): one process
            return {"num_replicas": 1, "rank": 0}
        return {"num_replicas": int(self.trainer.world_size), "rank": int(self.trainer.global_rank)}

    def train_dataloader(self) -> ResumableLoader:
        self.train_loader = ResumableLoader(
            self.train_rows, self.batch_size, self.pad_id, self.packed, self.seed, self.shuffle,
            self._processed_in_epoch, lambda: self.trainer.current_epoch, micro_batches_per_step=self.grad_accum,
            **self._ranks())
        return self.train_loader

    def val_dataloader(self) -> ResumableLoader | list:
        if not self.val_rows:
            return []
        return ResumableLoader(self.val_rows, self.batch_size, self.pad_id, self.packed, self.seed, shuffle=False,
                               **self._ranks())
