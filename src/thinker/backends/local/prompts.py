"""The prompts of a reinforcement-learning run in a resumable, seeded order: each loader item is one step's
micro-batches of prompt indices. The order, the per-epoch reshuffle, the data-parallel shards and the checkpointed
position are the fine-tuning loader's (thinker.data.batches.ResumableLoader), so a resumed run continues with
the prompts the interrupted one would have taken next."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lightning.pytorch as pl

from thinker.data.batches import ResumableLoader


class PromptLoader(ResumableLoader):
    """Yields, per step, its micro-batches' prompt indices (`batch_size` each) instead of collated token rows."""

    def __iter__(self) -> Iterator[list[list[int]]]:
        if self._current_epoch is not None:
            self.epoch = int(self._current_epoch())
        start = self._skip if self._skip_epoch == self.epoch else 0
        self._skip_epoch, self._skip = -1, 0
        shard = self.shard(self.epoch)
        for item in range(start, len(self)):
            micro_batches = [[i for i in micro if i is not None] for micro in self._indices_of(item, shard)]
            micro_batches = [m for m in micro_batches if m]
            if micro_batches:
                yield micro_batches


class PromptDataModule(pl.LightningDataModule):
    def __init__(self, n_prompts: int, batch_size: int, seed: int, shuffle: bool = True, grad_accum: int = 1):
        super().__init__()
        self.n_prompts, self.batch_size, self.seed, self.shuffle = n_prompts, batch_size, seed, shuffle
        self.grad_accum = grad_accum

    def train_dataloader(self) -> Any:
        trainer = self.trainer
        return PromptLoader(
            list(range(self.n_prompts)), self.batch_size, pad_id=0, packed=False, seed=self.seed,
            shuffle=self.shuffle,
            processed_in_epoch=lambda: int(trainer.fit_loop.epoch_loop.batch_progress.current.processed),
            current_epoch=lambda: trainer.current_epoch, micro_batches_per_step=self.grad_accum,
            num_replicas=int(trainer.world_size), rank=int(trainer.global_rank))
