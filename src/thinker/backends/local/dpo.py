"""objective=dpo on backend=local: preference tuning in the one Lightning run (docs/objectives.md, "Preference
tuning"). The model, method (full / LoRA / QLoRA), seed, checkpoints, graceful stop, resume, logger and weights
save are fine-tuning's; what differs is the data (pairs, tokenized by thinker.tasks.preference, each pair two
rows of one micro-batch) and the step (thinker.backends.local.dpo_module).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from omegaconf import DictConfig

from thinker.backends import TrainingReport, WeightsRef
from thinker.backends.local.lightning_run import (
    WEIGHTS,
    LightningRun,
    checkpoint_interval,
    device_type,
    quiet_lightning,
    save_weights_atomically,
)
from thinker.data.batches import ResumableLoader, padding_row
from thinker.data.packing import Row, collate, single_rows
from thinker.errors import ThinkerError

log = logging.getLogger("thinker")

Pair = tuple[Row, Row]  # (prompt + chosen, prompt + rejected)


def pair_batch(pairs: list[Pair], pad_id: int) -> dict[str, Any]:
    """B pairs as one padded batch of 2B rows: the chosen completions, then the rejected ones (TRL's layout)."""
    return collate([c for c, _ in pairs] + [r for _, r in pairs], pad_id, packed=False)


class PairLoader(ResumableLoader):
    """The fine-tuning loader's seeded, resumable, per-epoch order over pairs instead of rows: each micro-batch
    is one pair_batch. A rank's short shard is padded with pairs of padding rows, which carry no loss weight."""

    def _row(self, index: int | None) -> Any:
        return (padding_row(self.pad_id),) * 2 if index is None else self.rows[index]

    def __iter__(self) -> Iterator[Any]:
        if self._current_epoch is not None:
            self.epoch = int(self._current_epoch())
        start = self._skip if self._skip_epoch == self.epoch else 0
        self._skip_epoch, self._skip = -1, 0
        shard = self.shard(self.epoch)
        for item in range(start, len(self)):
            micro = self._indices_of(item, shard)
            batches = [pair_batch([self._row(i) for i in indices], self.pad_id) for indices in micro]
            yield batches if self.micro_batches_per_step else batches[0]


class PairDataModule(pl.LightningDataModule):
    def __init__(self, train: list[Pair], val: list[Pair], batch_size: int, pad_id: int, seed: int,
                 shuffle: bool = True, grad_accum: int = 1):
        super().__init__()
        self.train, self.val = train, val
        self.batch_size, self.pad_id, self.seed, self.shuffle, self.grad_accum = (batch_size, pad_id, seed, shuffle,
                                                                                   grad_accum)

    def train_dataloader(self) -> PairLoader:
        trainer = self.trainer
        return PairLoader(self.train, self.batch_size, self.pad_id, False, self.seed, self.shuffle,
                          lambda: int(trainer.fit_loop.epoch_loop.batch_progress.current.processed),
                          lambda: trainer.current_epoch, micro_batches_per_step=self.grad_accum)

    def val_dataloader(self) -> PairLoader | list:
        return PairLoader(self.val, self.batch_size, self.pad_id, False, self.seed, shuffle=False) if self.val else []


def tokenized_pairs(tokenizer: Any, pairs: list[Any], max_length: int) -> tuple[list[Pair], int]:
    """(each pair's two rows, how many pairs were left out because max_seq_length cut a whole completion)."""
    from thinker.tasks.preference import tokenize_pairs

    kept, left_out = tokenize_pairs(tokenizer, pairs, max_length)
    return [tuple(single_rows([chosen, rejected])) for chosen, rejected in kept], left_out  # type: ignore[misc]


def preference_data(cfg: DictConfig, run_dir: Path, tokenizer: Any) -> tuple[list[Pair], list[Pair], int]:
    """(train pairs, held-out pairs, train pairs read): the split every stage uses (thinker.data.examples)."""
    from thinker.data.examples import split_examples
    from thinker.data.source import effective_data_path
    from thinker.tasks import task_of

    pairs = task_of(cfg.data).read(effective_data_path(cfg, run_dir), cfg.data, cfg.data.max_examples)
    train, val = split_examples(pairs, float(cfg.data.validation_split), int(cfg.seed))
    if int(cfg.trainer.evaluations) == 0:
        val = []
    max_len = int(cfg.trainer.max_seq_length)
    train_rows, cut = tokenized_pairs(tokenizer, train, max_len)
    val_rows, cut_val = tokenized_pairs(tokenizer, val, max_len)
    log.info("data: %d train / %d held-out preference pairs (2 rows each, not packed), %d left out (a completion "
             "beyond trainer.max_seq_length=%d)", len(train_rows), len(val_rows), cut + cut_val, max_len)
    if not train_rows:
        raise ThinkerError(f"no preference pair keeps a completion token within trainer.max_seq_length={max_len}",
                           "trainer.max_seq_length", "raise trainer.max_seq_length (the sample pairs need about 768)",
                           stage="train")
    return train_rows, val_rows, len(train)


def dpo_steps(n_pairs: int, cfg: DictConfig) -> tuple[int, int]:
    """(optimizer steps, steps per epoch): trainer.grad_accum micro-batches of trainer.batch_size pairs a step."""
    micro = math.ceil(n_pairs / int(cfg.trainer.batch_size))
    per_epoch = max(1, math.ceil(micro / int(cfg.trainer.grad_accum)))
    by_epochs = per_epoch * int(cfg.trainer.epochs)
    max_steps = int(cfg.trainer.max_steps)
    return (min(by_epochs, max_steps) if max_steps > 0 else by_epochs), per_epoch


def train_dpo(cfg: DictConfig, run_dir: Path, start: tuple[Path, Any, Any, Any], session: Any = None,
              callbacks: tuple = ()) -> TrainingReport:
    """`start`: (start-point path, tokenizer, model with the method applied, 4-bit settings), loaded as for
    fine-tuning (thinker.backends.local.training_model.load_training_model; backend.train calls this)."""
    from thinker.backends.local.dpo_module import DpoModule
    from thinker.backends.local.resume import resume_checkpoint
    from thinker.models.loading import count_parameters

    quiet_lightning()
    device = device_type(cfg)
    ckpt_path = resume_checkpoint(run_dir) if cfg.resume else None
    path, tokenizer, model, quant = start
    method = str(cfg.method.name)
    if "sequence_packing" in {str(o) for o in cfg.trainer.optimizations}:
        log.info("sequence_packing is not applied to preference pairs (each pair is two rows of one micro-batch)")
    train, val, read = preference_data(cfg, run_dir, tokenizer)
    steps, per_epoch = dpo_steps(len(train), cfg)
    every = checkpoint_interval(steps, cfg)
    module = DpoModule(model, cfg.objective, cfg.optimizer, steps, device, int(cfg.trainer.log_every_n_steps),
                       full=method == "full")
    data = PairDataModule(train, val, int(cfg.trainer.batch_size), tokenizer.pad_token_id, int(cfg.seed),
                          bool(cfg.data.shuffle), int(cfg.trainer.grad_accum))
    # one process: the pairs' order and the step plan are one process's (data parallel DPO is not offered yet)
    run = LightningRun(cfg, run_dir, session, steps=steps, every=every, steps_per_epoch=per_epoch,
                       has_val=bool(val), max_epochs=int(cfg.trainer.epochs), single_process=True,
                       callbacks=callbacks)
    trainable, total = count_parameters(module.model)
    log.info("dpo: %d optimizer steps of %d x %d pairs (%s loss, beta %g, reference: %s), %s every %d", steps,
             int(cfg.trainer.grad_accum), int(cfg.trainer.batch_size), module.loss_name, module.beta,
             "none" if not module.needs_reference else "a frozen copy" if module.reference is not None
             else "the base with the adapters off", "held-out eval + checkpoint" if val else "checkpoint", every)
    run.fit(module, ckpt_path, {"datamodule": data}, {"datamodule": data} if val else None)

    metrics: dict[str, float] = {"trainable_params": float(trainable), "total_params": float(total),
                                 "trained_tokens": float(module.trained_tokens), "train_examples": float(read),
                                 "optimizer_steps": float(run.trainer.global_step), "train_seconds": run.fit_seconds}
    if module.history:
        last = module.history[-1]
        metrics["train_loss"] = last["loss"]
        metrics.update({f"train_{k.replace('/', '_')}": v for k, v in last.items() if k.startswith("rewards/")})
    if module.val_history:
        metrics["val_loss"] = float(module.val_history[-1][1])
    metrics.update(run.finish("training"))
    out = save_weights_atomically(
        module.model, tokenizer, run_dir / WEIGHTS,
        {"base_model": cfg.model.name, "base_path": str(path), "method": method, "quantization": quant,
         "steps": run.trainer.global_step, "objective": "dpo", "metrics": metrics},
    )
    log.info("saved %s to %s", "adapter" if method != "full" else "model", out)
    return TrainingReport(backend="local", weights=WeightsRef.local(out), metrics=metrics,
                          extra={"dpo_history": module.history},
                          objects={"model": module.model, "tokenizer": tokenizer, "module": module, "datamodule": data,
                                   "base_path": path})
