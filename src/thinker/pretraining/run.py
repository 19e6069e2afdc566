"""method=pretrain: a model built from its config alone (Cognate), trained from scratch on reasoning data.

    build the model and its tokenizer (thinker.models.builtin, seeded) -> the data task's pretraining
    examples (thinker.tasks; GSM8K and HotpotQA in thinker.data.reasoning) -> token blocks -> PretrainModule (GrokFast or AdamW) ->
    weights/ (save_pretrained: the registry and a later `model=<name> method=lora` load it like any model)

Exact total and trainable parameter counts go into the MLflow params and the run record. The local backend
sends method=pretrain here; nothing of fine-tuning's loop runs.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from thinker.backends import TrainingReport, WeightsRef
from thinker.errors import ThinkerError
from thinker.paths import resolve_input

log = logging.getLogger("thinker")


def reasoning_examples(cfg: DictConfig, run_dir: Path) -> tuple[Any, list[Any], list[Any]]:
    """(the data's task, train examples, held-out examples): the task's pretraining examples, the seeded split
    of every backend."""
    from thinker.data.examples import split_examples
    from thinker.data.reasoning import read_examples
    from thinker.data.source import effective_data_path
    from thinker.tasks import task_of

    task = task_of(cfg.data)
    limit = int(cfg.data.max_examples) if cfg.data.max_examples else None
    examples = read_examples(effective_data_path(cfg, run_dir), task.pretraining_example, limit)
    train, held_out = split_examples(examples, float(cfg.data.validation_split), int(cfg.seed))
    return task, train, held_out


def answer_accuracy_fn(task: Any, held_out: list[Any], tokenizer: Any, cfg: DictConfig) -> Any:
    """Greedy generation on the held-out prompts (evaluation.max_samples of them), scored by the task's own
    answer check."""
    import copy

    from thinker.evaluation.generate import Decoding, model_generator

    limit = cfg.evaluation.max_samples
    samples = held_out[: int(limit)] if limit else held_out
    if not samples:
        return None
    decoding = Decoding(max_new_tokens=int(cfg.evaluation.decoding.max_new_tokens))
    batch = max(1, int(cfg.evaluation.batch_size))
    # a copy: generation pads on the left, and the tokenizer saved with the weights stays as training made it
    tokenizer = copy.copy(tokenizer)

    def accuracy(model: Any) -> dict[str, float]:
        was_training = model.training
        model.eval()
        generate = model_generator(model, tokenizer, decoding, model.device)
        answers = [text for start in range(0, len(samples), batch)
                   for text in generate([s.prompt for s in samples[start:start + batch]])]
        model.train(was_training)
        correct = sum(bool(task.pretraining_answer_correct(text, s.answer)) for text, s in zip(answers, samples, strict=True))
        return {"reasoning_accuracy": correct / len(samples)}

    return accuracy


def pretrain(cfg: DictConfig, run_dir: Path, session: Any = None) -> TrainingReport:
    import lightning.pytorch as pl
    import torch

    from thinker.backends.local.lightning_run import (
        WEIGHTS,
        LightningRun,
        checkpoint_interval,
        quiet_lightning,
        save_weights_atomically,
    )
    from thinker.backends.local.resume import resume_checkpoint
    from thinker.models.loading import count_parameters, load_causal_lm, load_tokenizer, resolve_model_path
    from thinker.pretraining.blocks import collate, to_blocks
    from thinker.pretraining.module import PretrainModule
    from thinker.tracking.mlflow_run import log_params

    quiet_lightning()
    seed = int(cfg.seed)
    path = resolve_model_path(cfg.model, seed, [resolve_input(p) for p in cfg.model.tokenizer_corpus])
    pl.seed_everything(seed, workers=True, verbose=False)
    tokenizer = load_tokenizer(path)
    model = load_causal_lm(path, method="full", dtype="fp32")
    trainable, total = count_parameters(model)
    log.info("pretraining %s from scratch: %s parameters (%s trainable)", cfg.model.name, f"{total:,}",
             f"{trainable:,}")
    if session is not None:
        log_params(session.client, session.run_id, {"total_params": str(total), "trainable_params": str(trainable)})

    task, train_ex, held_out = reasoning_examples(cfg, run_dir)
    length = min(int(cfg.trainer.max_seq_length), int(model.config.max_position_embeddings))
    train_blocks = to_blocks(tokenizer, [e.text for e in train_ex], length)
    val_blocks = to_blocks(tokenizer, [e.text for e in held_out], length) if int(cfg.trainer.evaluations) else None
    if not train_blocks.blocks:
        raise ThinkerError(f"data={cfg.data.name} gives no training text", "data.path",
                           "point data.path at a non-empty file of the data's format", stage="train")
    batch = int(cfg.trainer.batch_size)
    generator = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(train_blocks.blocks, batch_size=batch, shuffle=bool(cfg.data.shuffle),
                                         generator=generator, collate_fn=lambda b: collate(b, tokenizer.pad_token_id))
    val_loader = (torch.utils.data.DataLoader(val_blocks.blocks, batch_size=batch,
                                              collate_fn=lambda b: collate(b, tokenizer.pad_token_id))
                  if val_blocks and val_blocks.blocks else None)
    per_epoch = math.ceil(len(train_blocks.blocks) / batch)
    max_steps = int(cfg.trainer.max_steps)
    steps = max_steps if max_steps > 0 else per_epoch * int(cfg.trainer.epochs)
    every = checkpoint_interval(steps, cfg)
    accuracy = answer_accuracy_fn(task, held_out, tokenizer, cfg) if cfg.evaluation.enabled else None
    module = PretrainModule(model, cfg.optimizer, steps, accuracy)

    # one process on one device, whatever trainer.devices says: PretrainModule's held-out loss and token
    # counts are its own process's, and the steps above are planned for one (config check refuses more)
    run = LightningRun(cfg, run_dir, session, steps=steps, every=every, steps_per_epoch=per_epoch,
                       has_val=val_loader is not None, max_epochs=-1 if max_steps > 0 else int(cfg.trainer.epochs),
                       single_process=True, gradient_clip_val=float(cfg.optimizer.max_grad_norm) or None)
    trainer = run.trainer
    log.info("pretraining: %d steps of %d blocks x %d tokens (%d train / %d held-out examples), evaluation "
             "every %d", steps, batch, length, len(train_ex), len(held_out), every)
    run.fit(module, resume_checkpoint(run_dir) if cfg.resume else None,
            {"train_dataloaders": loader, "val_dataloaders": val_loader},
            {"dataloaders": val_loader} if val_loader is not None else None)
    logged = run.finish("pretraining")

    metrics: dict[str, float] = {"total_params": float(total), "trainable_params": float(trainable),
                                 "optimizer_steps": float(trainer.global_step),
                                 "trained_tokens": float(module.trained_tokens), "train_seconds": run.fit_seconds,
                                 **logged}
    if module.last_train_loss is not None:
        metrics["train_loss"] = module.last_train_loss
    if module.val_history:
        metrics["val_loss"] = module.val_history[-1][1]
    if module.accuracy_history:
        metrics.update(module.accuracy_history[-1][1])
    out = save_weights_atomically(module.model, tokenizer, run_dir / WEIGHTS,
                                  {"base_model": cfg.model.name, "method": "pretrain", "from_scratch": True,
                                   "steps": trainer.global_step, "metrics": metrics})
    log.info("saved the pretrained %s model to %s", cfg.model.family, out)
    return TrainingReport(backend="local", weights=WeightsRef.local(out), metrics=metrics,
                          extra={"total_params": total, "trainable_params": trainable, "block_length": length,
                                 "train_blocks": len(train_blocks.blocks), "train_tokens": train_blocks.tokens},
                          objects={"model": module.model, "tokenizer": tokenizer})
