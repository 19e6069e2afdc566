"""The pipeline of a data-parallel rank other than 0: train this rank's shard, nothing else."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from omegaconf import DictConfig

from thinker.data.source import effective_data_path, source_format
from thinker.errors import ThinkerError

log = logging.getLogger("thinker")


def run_worker_rank(cfg: DictConfig, run_dir: Path, rank: str) -> None:
    """The pipeline of a data-parallel rank other than 0 (thinker.backends.local.ranks): train this rank's shard
    beside rank 0 and nothing else. Rank 0 alone runs the validation gate, opens the MLflow run, registers the
    weights, evaluates and writes the run record; this process prints only warnings and errors and writes
    nothing into the run folder but its own log (hydra.job.name)."""
    import sys

    from thinker.backends import instantiate_backend
    from thinker.config.check import check_config
    from thinker.config.enums import Stage
    from thinker.errors import ExitCode
    from thinker.tracking.secrets import mask_text

    for handler in logging.getLogger().handlers:  # rank 0's console already shows the progress
        if type(handler) is logging.StreamHandler:
            handler.setLevel(logging.WARNING)
    log.info("%s of a data-parallel run in %s: training this rank's shard only", rank, run_dir)
    try:
        check_config(cfg)
        if Stage(cfg.stage) in (Stage.train, Stage.run):
            wait_for_training_data(cfg, run_dir)
            instantiate_backend(cfg).train(cfg, run_dir, None)
    except ThinkerError as err:
        if err.exit_code != ExitCode.INTERRUPTED:  # rank 0 prints the stop and how to resume
            print(f"{mask_text(err.line())} ({rank})", file=sys.stderr, flush=True)
        raise SystemExit(int(err.exit_code)) from None
    except KeyboardInterrupt:
        raise SystemExit(int(ExitCode.INTERRUPTED)) from None


def wait_for_training_data(cfg: DictConfig, run_dir: Path, timeout_s: float = 600.0) -> None:
    """A converted dataset (data.source_format) is written by rank 0's validate stage into the run folder: a rank
    that torchrun / srun started at the same time waits for it (ranks Lightning starts come after it)."""
    path = effective_data_path(cfg, run_dir)
    deadline = time.monotonic() + timeout_s
    while source_format(cfg) is not None and not path.exists():
        if time.monotonic() > deadline:
            raise ThinkerError(f"rank 0 did not write the converted dataset {path} within {timeout_s:.0f} s",
                               "data.source_format", "see rank 0's output for why", stage="train")
        time.sleep(1.0)
