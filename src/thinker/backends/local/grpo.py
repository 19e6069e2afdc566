"""objective=grpo on backend=local: reinforcement learning with verifiable rewards in the one Lightning run
(docs/objectives.md, "Reinforcement learning"). The model, method (full / LoRA / QLoRA), seed, checkpoints,
graceful stop, logger and weights save are fine-tuning's; what differs is the data (the training split's
prompts, each step's `trainer.batch_size` of them) and the step (thinker.backends.local.grpo_module). The
held-out split is left to the eval stage, which scores the base and the trained weights on it as for any run.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

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

log = logging.getLogger("thinker")



def grpo_steps(n_prompts: int, cfg: DictConfig) -> tuple[int, int]:
    """(optimizer steps, steps per epoch): one step per trainer.grad_accum micro-batches of trainer.batch_size
    prompts (the steps backend=tinker plans from the same loader)."""
    micro_batches = math.ceil(n_prompts / int(cfg.trainer.batch_size))
    per_epoch = max(1, math.ceil(micro_batches / int(cfg.trainer.grad_accum)))
    by_epochs = per_epoch * int(cfg.trainer.epochs)
    max_steps = int(cfg.trainer.max_steps)
    return (min(by_epochs, max_steps) if max_steps > 0 else by_epochs), per_epoch


def table_writer(run_dir: Path, session: Any) -> Any:
    from thinker.rewards.report import write_table

    return lambda step, rows: write_table(run_dir, session, step, rows)


def train_grpo(cfg: DictConfig, run_dir: Path, session: Any = None, callbacks: tuple = ()) -> TrainingReport:
    from thinker.backends.local.grpo_module import GrpoModule
    from thinker.backends.local.prompts import PromptDataModule
    from thinker.backends.local.resume import resume_checkpoint
    from thinker.backends.local.training_model import load_training_model
    from thinker.models.loading import count_parameters
    from thinker.rewards.prompts import training_prompts
    from thinker.rewards.report import reward_window
    from thinker.rewards.spec import build_rewards, reward_specs

    quiet_lightning()
    device = device_type(cfg)
    ckpt_path = resume_checkpoint(run_dir) if cfg.resume else None
    rewards = build_rewards(reward_specs(cfg.objective.rewards))
    path, tokenizer, model, quant = load_training_model(cfg)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    prompts, records = training_prompts(cfg, run_dir, tokenizer)
    steps, per_epoch = grpo_steps(len(prompts), cfg)
    every = checkpoint_interval(steps, cfg)
    module = GrpoModule(model, tokenizer, prompts, records, rewards, cfg.objective, cfg.optimizer, steps, device,
                        int(cfg.trainer.log_every_n_steps), table_writer(run_dir, session))
    data = PromptDataModule(len(prompts), int(cfg.trainer.batch_size), int(cfg.seed), bool(cfg.data.shuffle),
                            int(cfg.trainer.grad_accum))
    run = LightningRun(cfg, run_dir, session, steps=steps, every=every, steps_per_epoch=per_epoch, has_val=False,
                       max_epochs=int(cfg.trainer.epochs), single_process=True, callbacks=callbacks)
    log.info("grpo: %d steps of %d x %d prompts x %d completions (%s loss, rewards %s), checkpoint every %d",
             steps, int(cfg.trainer.grad_accum), int(cfg.trainer.batch_size), int(cfg.objective.group_size),
             cfg.objective.loss,
             ", ".join(f"{r.name} x {r.weight:g}" for r in rewards), every)
    run.fit(module, ckpt_path, {"datamodule": data}, None)

    trainable, total = count_parameters(module.model)
    history = module.history
    metrics: dict[str, float] = {"trainable_params": float(trainable), "total_params": float(total),
                                 "optimizer_steps": float(run.trainer.global_step), "train_seconds": run.fit_seconds,
                                 "sampled_tokens": float(module.trained_tokens)}
    if history:
        metrics["train_loss"] = history[-1]["train_loss"]
    metrics.update(reward_window(history))
    metrics.update(run.finish("training"))
    out = save_weights_atomically(
        module.model, tokenizer, run_dir / WEIGHTS,
        {"base_model": cfg.model.name, "base_path": str(path), "method": str(cfg.method.name),
         "quantization": quant, "steps": run.trainer.global_step, "objective": "grpo", "metrics": metrics},
    )
    log.info("saved %s to %s", "adapter" if str(cfg.method.name) != "full" else "model", out)
    return TrainingReport(backend="local", weights=WeightsRef.local(out), metrics=metrics,
                          extra={"grpo_history": history},
                          objects={"model": module.model, "tokenizer": tokenizer, "module": module,
                                   "base_path": path})
