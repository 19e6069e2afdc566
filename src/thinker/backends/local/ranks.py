"""Which process of a data-parallel run this is, read from the environment only (no torch import).

Every rank of a multi-process run starts launch.py from the top: Lightning's DDP re-runs the command line for
ranks > 0 on one machine (with LOCAL_RANK=1, 2, ... and its own hydra.run.dir / hydra.job.name overrides),
torchrun starts every rank itself (RANK, LOCAL_RANK, WORLD_SIZE), and so does srun (SLURM_PROCID,
SLURM_STEP_NUM_TASKS). Only rank 0 runs the pipeline (config check, validation gate, MLflow, registry,
evaluation, run record); the others train their shard and write nothing of rank 0's
(thinker.run.ranks.run_worker_rank).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# Lightning names the log of the ranks it starts itself train_ddp_process_<n> (hydra.job.name)
LIGHTNING_JOB_NAME = "train_ddp_process_"


def _int(env: Mapping[str, str], key: str) -> int:
    try:
        return int(env.get(key) or 0)
    except ValueError:
        return 0


def rank_name(env: Mapping[str, str] | None = None) -> str | None:
    """None on the process that runs the pipeline (global rank 0, or no data parallelism at all); a name such
    as `rank 3` on every other rank."""
    env = os.environ if env is None else env
    if env.get("RANK"):  # torchrun / torch elastic: the global rank
        return f"rank {env['RANK']}" if _int(env, "RANK") else None
    local, node = _int(env, "LOCAL_RANK"), _int(env, "NODE_RANK")
    if local or node:  # a process Lightning started, or a node > 0 started by hand with NODE_RANK
        return f"node {node} rank {local}" if node else f"rank {local}"
    if _int(env, "SLURM_PROCID"):  # srun: one task per rank
        return f"rank {env['SLURM_PROCID']}"
    return None


def is_rank_zero(env: Mapping[str, str] | None = None) -> bool:
    return rank_name(env) is None


def external_launcher(env: Mapping[str, str] | None = None) -> str | None:
    """`torchrun` or `srun` when that started every rank of this run (each rank then composes its own run folder
    unless hydra.run.dir names one); None for one process, or for ranks Lightning starts itself."""
    env = os.environ if env is None else env
    if env.get("RANK") and _int(env, "WORLD_SIZE") > 1:
        return "torchrun"
    if _int(env, "SLURM_STEP_NUM_TASKS") > 1:
        return "srun"
    return None


def worker_overrides(argv: list[str], env: Mapping[str, str] | None = None) -> list[str]:
    """Hydra overrides a rank > 0 started by torchrun / srun adds to its command line, as Lightning does for the
    ranks it starts: no .hydra/ folder of its own (rank 0 writes it) and a log named after the rank, never
    rank 0's launch.log."""
    name = rank_name(env)
    if name is None:
        return []
    extra = []
    if not any(a.startswith("hydra.output_subdir=") for a in argv):
        extra.append("hydra.output_subdir=null")
    if not any(a.startswith("hydra.job.name=") for a in argv):
        extra.append(f"hydra.job.name={name.replace(' ', '_')}")
    return extra
