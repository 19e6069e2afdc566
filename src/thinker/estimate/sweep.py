"""A sweep's estimate: one per job, and the total that budget.max_usd is held to before any job starts.

The jobs are the ones Hydra's basic sweeper launches (its own split of the command line's sweep overrides and
hydra.sweeper.params); an Optuna search's trials are chosen as it goes, so its estimate is its first trial's
times hydra.sweeper.n_trials."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from thinker.estimate.cost import Estimate, budget_limit, check_budget, estimate_run


@dataclass
class JobEstimate:
    overrides: list[str]
    estimate: Estimate
    repeat: int = 1  # an Optuna search: its trials, all estimated like the first


def job_overrides(overrides: list[str], params: dict[str, Any] | None = None) -> list[list[str]]:
    """Each job's overrides, as Hydra's basic sweeper splits them (params: hydra.sweeper.params)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    lines = [f"{k}={v}" for k, v in (params or {}).items()] + list(overrides)
    parsed = OverridesParser.create().parse_overrides(lines)
    return [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def fixed_overrides(overrides: list[str]) -> list[str]:
    """The overrides of a search without its search space (choice(...), interval(...), a,b): what every trial
    shares, so the first trial is estimated from the config it starts from."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    return [line for line, override in zip(overrides, parsed, strict=True) if not override.is_sweep_override()]


def estimate_jobs(jobs: list[list[str]], compose: Callable[[list[str]], DictConfig], heavy: bool,
                  repeat: int = 1) -> list[JobEstimate]:
    return [JobEstimate(job, estimate_run(compose(job), heavy=heavy), repeat) for job in jobs]


def total_usd(jobs: list[JobEstimate]) -> float | None:
    if any(j.estimate.usd is None for j in jobs):
        return None
    return sum(float(j.estimate.usd or 0.0) * j.repeat for j in jobs)


def check_sweep_budget(config: DictConfig) -> list[JobEstimate] | None:
    """In the launching process of a multirun (thinker.sweeps.summary.SweepSummary), before the sweeper starts
    a job: every job estimated, one line with the total, and budget.max_usd held to the total (one
    `[thinker] error:` line and exit code 2 when it is above)."""
    from hydra.core.global_hydra import GlobalHydra

    from thinker.errors import ExitCode, ThinkerError

    if str(OmegaConf.select(config, "stage", default="run")) not in ("train", "run"):
        return None
    limit = budget_limit(config)
    overrides = [str(o) for o in OmegaConf.select(config, "hydra.overrides.task", default=[]) or []]
    target = str(OmegaConf.select(config, "hydra.sweeper._target_", default="") or "")
    loader = GlobalHydra.instance().config_loader()

    def compose(job: list[str]) -> DictConfig:
        return loader.load_sweep_config(config, job)

    try:
        if "optuna" in target.lower():  # the first trial's estimate, n_trials times
            trials = int(OmegaConf.select(config, "hydra.sweeper.n_trials", default=1) or 1)
            jobs = estimate_jobs([fixed_overrides(overrides)], compose, heavy=limit is not None, repeat=trials)
        else:
            params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
            params = OmegaConf.to_container(params, resolve=True) if not isinstance(params, dict) else params
            jobs = estimate_jobs(job_overrides(overrides, params), compose, heavy=limit is not None)
        check_budget([j.estimate for j in jobs for _ in range(j.repeat)], limit, f"the sweep ({len(jobs)} jobs)")
    except ThinkerError as err:
        from thinker.console import release_stderr
        from thinker.tracking.secrets import mask_text

        release_stderr()
        print(mask_text(err.line()), file=sys.stderr, flush=True)
        raise SystemExit(int(ExitCode.CONFIG)) from None
    except Exception as exc:  # noqa: BLE001 - without a budget the estimate is information: each job's config
        # check still estimates and reports that job (data not yet validated, a search space it cannot compose)
        if limit is not None:
            raise
        import logging

        logging.getLogger("thinker").warning("no sweep estimate (%s: %s); each job estimates itself",
                                             type(exc).__name__, exc)
        return None
    total = total_usd(jobs)
    import logging

    logging.getLogger("thinker").info(
        "sweep estimate: %d job(s), %s", sum(j.repeat for j in jobs),
        f"${total:,.4f} in all" if total is not None else "cost unknown (thinker estimate -m ... shows each job)")
    return jobs
