"""The tokens a run trains on, counted with the run's own data code before it starts: rows from
thinker.data.prepare.tokenized_data, optimizer steps and their rows in the order thinker.data.batches gives
every backend that batches itself (backend=local, backend=tinker). A hosted provider batches on its side: it
gets the training file, `trainer.epochs` times."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from omegaconf import DictConfig

from thinker.data.packing import Row
from thinker.data.tokenize import IGNORE_INDEX


@dataclass
class TokenPlan:
    examples: int  # training examples kept (those with a trainable token)
    rows: int  # training rows (packed or one example each)
    steps: int | None  # optimizer steps; None where the provider decides
    epochs: int
    tokens: int  # tokens the steps process (padding left out): what throughput and per-token prices count
    trained_tokens: int  # tokens the loss is taken on: the run's trained_tokens metric

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def row_trained(row: Row) -> int:
    return sum(1 for label in row.labels if label != IGNORE_INDEX)


def packing_of(cfg: DictConfig) -> bool:
    """Whether the run's backend packs rows: backend=local with trainer.optimizations sequence_packing."""
    if str(cfg.backend.name) != "local":
        return False
    return "sequence_packing" in {str(o) for o in cfg.trainer.optimizations}


def world_of(cfg: DictConfig) -> int:
    """Training processes of a local run (thinker.backends.local.backend.processes_per_run); 1 elsewhere and
    where only the machine can say (devices=auto on GPUs: the estimate counts one)."""
    if str(cfg.backend.name) != "local":
        return 1
    from thinker.backends.local.backend import processes_per_run

    return processes_per_run(cfg) or 1


def stepped_tokens(rows: list[Row], cfg: DictConfig, world: int) -> tuple[int, int, int]:
    """(steps, tokens, trained tokens) of the optimizer steps a backend that batches itself takes over `rows`:
    whole epochs, then the first steps of the epoch trainer.max_steps stops in, in that epoch's seeded order."""
    from thinker.backends.local.backend import total_optimizer_steps
    from thinker.data.batches import ResumableLoader

    batch, accum = int(cfg.trainer.batch_size), int(cfg.trainer.grad_accum)
    loaders = [ResumableLoader(rows, batch, 0, False, int(cfg.seed), bool(cfg.data.shuffle),
                               micro_batches_per_step=accum, num_replicas=world, rank=rank) for rank in range(world)]
    n_batches = math.ceil(math.ceil(len(rows) / world) / batch)
    steps = total_optimizer_steps(n_batches, cfg)
    per_epoch = len(loaders[0])
    if per_epoch == 0:  # no row to train on (every example left out): training says so; nothing is trained
        return 0, 0, 0
    full, rest = divmod(steps, per_epoch)
    tokens = full * sum(len(r) for r in rows)
    trained = full * sum(row_trained(r) for r in rows)
    for loader in loaders:  # the epoch max_steps stops in: its first `rest` steps, on every rank
        if not rest:
            break
        for item in range(rest):
            for micro in loader.rows_of(item, full):
                for row in micro:
                    if row.n_examples:  # a shard's padding row trains nothing
                        tokens, trained = tokens + len(row), trained + row_trained(row)
    return steps, tokens, trained


def plan_tokens(cfg: DictConfig, data_path: Any, tokenizer: Any) -> TokenPlan:
    """The run's token plan on its backend, with `tokenizer` (the model's, or thinker.estimate.light_tokenizer)."""
    from thinker.data.prepare import tokenized_data

    packed = packing_of(cfg)
    prepared = tokenized_data(cfg, data_path, tokenizer, packed)
    epochs = int(cfg.trainer.epochs)
    if bool(cfg.backend.get("uses_provider", False)):
        # the provider trains on the whole file each epoch, prompts included in what it bills
        tokens = epochs * sum(len(t) for t in prepared.train)
        trained = epochs * sum(t.trained_tokens for t in prepared.train)
        return TokenPlan(len(prepared.train), len(prepared.train_rows), None, epochs, tokens, trained)
    steps, tokens, trained = stepped_tokens(prepared.train_rows, cfg, world_of(cfg))
    return TokenPlan(len(prepared.train), len(prepared.train_rows), steps, epochs, tokens, trained)
