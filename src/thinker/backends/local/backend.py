"""backend=local: fine-tune with Lightning on this machine and return the common TrainingReport.

The recipe, step by step: seed; load (and for builtin models, build) the model and tokenizer; apply the
method (full / LoRA / QLoRA); tokenise and pack the data; train with checkpoints every evaluation;
save the adapter (or full weights) in Hugging Face format, atomically.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from thinker.backends import Backend, Generate, TrainingReport, WeightsRef
from thinker.backends.local.lightning_run import (
    WEIGHTS,
    LightningRun,
    checkpoint_interval,
    device_type,
    lightning_devices,
    quiet_lightning,
    save_weights_atomically,
)
from thinker.backends.local.training_model import load_training_model
from thinker.errors import ThinkerError
from thinker.paths import resolve_input

log = logging.getLogger("thinker")


def planned_world_size(cfg: DictConfig, device: str) -> int:
    """Training processes (ranks) the Trainer will have: devices per node x trainer.num_nodes, counted as
    Lightning counts them. The step count and schedule are planned from it before the Trainer exists."""
    from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator

    accelerator = CUDAAccelerator if device == "cuda" else CPUAccelerator
    devices = lightning_devices(cfg)
    if devices == "auto":
        count = accelerator.auto_device_count()
    else:
        parsed = accelerator.parse_devices(devices)
        count = parsed if isinstance(parsed, int) else len(parsed or [])
    return max(1, count) * int(cfg.trainer.num_nodes)


def processes_per_run(cfg: DictConfig) -> int | None:
    """Training processes trainer.devices x trainer.num_nodes asks for, without importing torch; None when only
    the machine can say (devices auto / -1 on a GPU: every visible GPU)."""
    devices = cfg.trainer.devices
    gpu = str(cfg.trainer.accelerator) != "cpu"
    if isinstance(devices, str) and "," in devices:
        count: int | None = len([d for d in devices.split(",") if d.strip()])
    elif isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        count = int(devices)
    elif isinstance(devices, int):
        count = devices
    elif isinstance(devices, str):  # auto
        count = None if gpu else 1
    else:  # a list of device ids
        count = len(devices)
    if count is not None and count < 0:  # -1: every device
        count = None
    return None if count is None else count * int(cfg.trainer.num_nodes)


def total_optimizer_steps(n_batches: int, cfg: DictConfig) -> int:
    per_epoch = max(1, math.ceil(n_batches / int(cfg.trainer.grad_accum)))
    by_epochs = per_epoch * int(cfg.trainer.epochs)
    max_steps = int(cfg.trainer.max_steps)
    return min(by_epochs, max_steps) if max_steps > 0 else by_epochs


def train(cfg: DictConfig, run_dir: Path, session: Any = None, callbacks: tuple = ()) -> TrainingReport:
    """Fine-tune per `cfg` into `run_dir`. `callbacks`: extra Lightning callbacks (tools and tests)."""
    from thinker.backends.local.datamodule import FineTuneDataModule
    from thinker.backends.local.module import FineTuneModule
    from thinker.backends.local.resume import resume_checkpoint
    from thinker.backends.local.speedups import apply_speedups
    from thinker.data.prepare import prepare_training_data
    from thinker.models.loading import count_parameters
    from thinker.tracking.mlflow_logger import BatchedMlflowLogger

    method = str(cfg.method.name)
    if method == "pretrain":
        # pretraining has its own loop (Cognate + GrokFast), never this fine-tuning one (docs/decisions/0010-cognate-pretraining-path.md)
        from thinker.pretraining.run import pretrain

        return pretrain(cfg, run_dir, session)
    if str(OmegaConf.select(cfg, "objective.name", default="sft")) == "dpo":
        # preference pairs against a reference (docs/objectives.md, "Preference tuning")
        from thinker.backends.local.dpo import train_dpo

        quiet_lightning()
        return train_dpo(cfg, run_dir, load_training_model(cfg), session, callbacks)
    if str(OmegaConf.select(cfg, "objective.name", default="sft")) == "grpo":
        # reinforcement learning samples its own completions each step (docs/objectives.md)
        from thinker.backends.local.grpo import train_grpo

        return train_grpo(cfg, run_dir, session, callbacks)
    quiet_lightning()
    device = device_type(cfg)
    world = planned_world_size(cfg, device)
    optimizations = {str(o) for o in cfg.trainer.optimizations}
    ckpt_path = resume_checkpoint(run_dir) if cfg.resume else None
    path, tokenizer, model, quant = load_training_model(cfg)
    speedups = apply_speedups(model, cfg, device)
    trainable, total = count_parameters(model)

    # data: the same tokens, masks and weights as every backend (thinker.data.prepare)
    packed = "sequence_packing" in optimizations
    prepared = prepare_training_data(cfg, run_dir, tokenizer, packed)
    train_rows, val_rows, st = prepared.train_rows, prepared.val_rows, prepared.stats
    grad_accum = int(cfg.trainer.grad_accum)
    data = FineTuneDataModule(train_rows, val_rows, int(cfg.trainer.batch_size), tokenizer.pad_token_id, packed,
                              int(cfg.seed), bool(cfg.data.shuffle), grad_accum=grad_accum)

    # each rank takes batch_size rows of its shard per micro-batch: a step trains world x grad_accum x batch_size
    # rows, and an epoch has as many steps as one rank's shard makes (thinker.data.batches)
    n_batches = math.ceil(math.ceil(len(train_rows) / world) / int(cfg.trainer.batch_size))
    steps = total_optimizer_steps(n_batches, cfg)
    steps_per_epoch = max(1, math.ceil(n_batches / grad_accum))
    # checkpoints (and held-out evaluations, when there are any) every 1/evaluations of the run
    every = checkpoint_interval(steps, cfg)
    module = FineTuneModule(model, cfg.optimizer, steps, device, int(cfg.trainer.log_every_n_steps),
                            hidden_state_loss=speedups.hidden_state_loss)

    # one loader item is one optimizer step (its micro-batches inside), so Lightning counts steps
    run = LightningRun(cfg, run_dir, session, steps=steps, every=every, steps_per_epoch=steps_per_epoch,
                       has_val=bool(val_rows), max_epochs=int(cfg.trainer.epochs), callbacks=callbacks)
    trainer = run.trainer
    if isinstance(run.logger, BatchedMlflowLogger):
        sizes = {"trainable_params": trainable, "total_params": total,
                 "train_examples": prepared.read_train_examples, "train_tokens": st.tokens}
        session.log_metrics({k: v for k, v in sizes.items() if k not in run.logger.logged_through})
    if trainer.world_size != world:  # the steps and schedule above were planned for `world` ranks
        raise RuntimeError(f"Lightning started {trainer.world_size} ranks where {world} were planned")
    ranks = f"{world} ranks x " if world > 1 else ""
    log.info("training: %d optimizer steps of %s%d x %d rows, %s every %d", steps, ranks, grad_accum,
             int(cfg.trainer.batch_size), "held-out eval + checkpoint" if val_rows else "checkpoint", every)
    run.fit(module, ckpt_path, {"datamodule": data}, {"datamodule": data} if val_rows else None)

    metrics: dict[str, float] = {}
    if module.last_train_loss is not None:
        metrics["train_loss"] = float(module.last_train_loss)
    if module.val_history:
        metrics["val_loss"] = float(module.val_history[-1][1])
    metrics.update(trainable_params=float(trainable), total_params=float(total),
                   trained_tokens=float(module.trained_tokens), optimizer_steps=float(trainer.global_step))
    metrics["train_seconds"] = run.fit_seconds
    shards = data_parallel_summary(data, len(train_rows), world, grad_accum * int(cfg.trainer.batch_size))
    metrics.update(run.finish("training"))

    gathered = None
    if str(cfg.trainer.strategy).startswith("fsdp") and world > 1:
        # each rank holds a shard of the weights: gathering the full state dict is a collective of every rank
        prefix = "model."
        gathered = {k[len(prefix):]: v for k, v in trainer.strategy.lightning_module_state_dict().items()
                    if k.startswith(prefix)}
    if not trainer.is_global_zero:  # rank 0 saves the weights every rank holds; the pipeline records them
        return TrainingReport(backend="local", weights=None, metrics=metrics)
    out = save_weights_atomically(
        module.model, tokenizer, run_dir / WEIGHTS,
        {"base_model": cfg.model.name, "base_path": str(path), "method": method,
         "quantization": quant, "steps": trainer.global_step, "metrics": metrics},
        state_dict=gathered,
    )
    log.info("saved %s to %s", "adapter" if method != "full" else "model", out)
    return TrainingReport(backend="local", weights=WeightsRef.local(out), metrics=metrics,
                          extra={"packing": packed, "truncated_examples": st.truncated,
                                 **({"data_parallel": shards} if shards else {})},
                          objects={"model": module.model, "tokenizer": tokenizer, "datamodule": data,
                                   "module": module, "base_path": path})


def rows_in_several_shards(served_by_rank: list[dict[int, Any]]) -> int:
    """How many rows more than one rank trained in the same epoch; `served_by_rank`: each rank's loader.served."""
    from collections import Counter

    shared = 0
    for epoch in {e for by_epoch in served_by_rank for e in by_epoch}:
        ranks_per_row = Counter(row for by_epoch in served_by_rank for row in set(by_epoch.get(epoch, ())))
        shared += sum(1 for n in ranks_per_row.values() if n > 1)
    return shared


def data_parallel_summary(data: Any, rows: int, world: int, rows_per_rank_step: int) -> dict[str, Any] | None:
    """Which rows each rank trained on, gathered from every rank's loader (a collective: every rank calls it):
    rows per rank, and how many rows more than one rank trained in the same epoch, which sharding keeps at 0.
    None on a single process (and on ranks > 0)."""
    if world == 1:
        return None
    import torch.distributed as dist

    served = data.train_loader.served if data.train_loader is not None else {}
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, served)  # {epoch: array of rows} per rank
    if dist.get_rank() != 0:
        return None
    summary = {"ranks": world, "rows_per_epoch": rows, "global_batch_rows": world * rows_per_rank_step,
               "rows_trained_per_rank": [sum(len(a) for a in by_epoch.values()) for by_epoch in gathered],
               "rows_trained_by_several_ranks": rows_in_several_shards(gathered)}
    log.info("data parallel: %d ranks trained %s rows (a global step is %d rows); %d trained by more than one "
             "rank", world, " + ".join(str(n) for n in summary["rows_trained_per_rank"]),
             summary["global_batch_rows"], summary["rows_trained_by_several_ranks"])
    return summary


def _hydra_runtime() -> Any:
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get()
    except ValueError:  # no Hydra run (tools, tests)
        return None


def check_data_parallel(cfg: DictConfig, env: Any) -> None:
    """What config check can refuse about several training processes (thinker.backends.local.ranks)."""
    from hydra.types import RunMode

    from thinker.backends.local.ranks import external_launcher

    if str(cfg.stage) not in ("train", "run"):
        return
    hydra = _hydra_runtime()
    processes = processes_per_run(cfg)
    if str(cfg.method.name) == "pretrain" and (processes or 1) > 1:
        # thinker.pretraining.run trains in one process (LightningRun's single_process)
        raise ThinkerError(
            f"method=pretrain trains in one process, and trainer.devices={cfg.trainer.devices} "
            f"trainer.num_nodes={cfg.trainer.num_nodes} ask for {processes}",
            "trainer.devices, trainer.num_nodes",
            "use trainer.devices=1 trainer.num_nodes=1 for pretraining (data parallel is for fine-tuning)",
        )
    if hydra is not None and hydra.mode == RunMode.MULTIRUN and processes != 1:
        asked = f"{processes} training processes" if processes else "a training process per visible GPU"
        raise ThinkerError(
            f"trainer.devices={cfg.trainer.devices} trainer.num_nodes={cfg.trainer.num_nodes} start {asked} per "
            "job, which a sweep (-m) cannot do (Lightning starts the other ranks by re-running the command line: "
            "the whole sweep)",
            "trainer.devices, trainer.num_nodes",
            "run each configuration as its own python launch.py, or sweep with trainer.devices=1",
        )
    if str(cfg.trainer.strategy).startswith("fsdp") and str(cfg.trainer.accelerator) == "cpu":
        raise ThinkerError(f"trainer.strategy={cfg.trainer.strategy} needs CUDA GPUs (Lightning's FSDP)",
                           "trainer.strategy, trainer.accelerator",
                           "use trainer.strategy=ddp on the CPU (trainer=ddp_cpu), or trainer=fsdp on GPUs")
    launcher = external_launcher(env)
    if launcher and hydra is not None and not any(o.startswith("hydra.run.dir=") for o in hydra.overrides.hydra):
        raise ThinkerError(
            f"{launcher} started every rank, and each would pick its own run folder from its own clock",
            "hydra.run.dir",
            "add hydra.run.dir=<one folder every rank and node sees> to the command line",
        )


class LocalBackend(Backend):
    """backend=local: Lightning on this machine; weights are a local folder, sampled with transformers."""

    def check(self, cfg: DictConfig, env: Any) -> None:
        from thinker.backends.local.preflight import check_machine

        check_data_parallel(cfg, env)
        check_machine(cfg, env)  # CUDA-only settings without a GPU, a gated model without HF_TOKEN

    def train(self, cfg: DictConfig, run_dir: Path, tracker: Any) -> TrainingReport:
        return train(cfg, run_dir, tracker)

    def sampler(self, report: TrainingReport, cfg: DictConfig) -> Generate:
        from thinker.evaluation.generate import Decoding, local_generator

        weights = self.weights_of(report)
        if not weights.is_local:
            raise ThinkerError(f"{weights.uri} is not a local weights folder, so backend=local cannot sample it",
                               "backend=local", "evaluate with the backend that trained it", stage="eval")
        d = cfg.evaluation.decoding
        decoding = Decoding(bool(d.do_sample), float(d.temperature), float(d.top_p), int(d.max_new_tokens),
                            int(cfg.seed))
        return local_generator(weights.path, decoding, device_type(cfg))

    def logprob_scorer(self, weights: WeightsRef, cfg: DictConfig) -> Any:
        from thinker.evaluation.preference import local_logprob_scorer

        if not weights.is_local:
            return None
        return local_logprob_scorer(weights.path, device_type(cfg), int(cfg.evaluation.batch_size))

    def base_weights(self, cfg: DictConfig) -> WeightsRef:
        from thinker.models.adapter_weights import training_start_point
        from thinker.models.loading import resolve_model_path

        path = resolve_model_path(cfg.model, int(cfg.seed), [resolve_input(p) for p in cfg.model.tokenizer_corpus])
        return WeightsRef.local(training_start_point(path))
