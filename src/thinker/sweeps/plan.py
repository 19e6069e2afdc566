"""Sweeps (-m): one MLflow parent run per sweep, a child per job, a progress line per job, a summary at the end.

A failed job never stops a sweep: the pipeline records it (run record, MLflow run FAILED) and returns to the
launcher, which starts the next job. The SweepSummary Hydra callback (thinker.sweeps.summary) runs in the
launching process:

- when the multirun starts, it writes `<sweep dir>/sweep_run.json` (SweepInfo: the sweep's name, overrides, swept
  keys, number of jobs and, with logger=mlflow, the parent run it opens). Every job reads that file through its
  own `hydra.sweep.dir`, in this process or another (the joblib launcher's loky workers inherit no environment),
  and opens its MLflow run as a child of the parent, named from what the job changes (`lr=3e-4 method=qlora`).
- when the multirun ends, it reads every job's run record (the source of truth, wherever the job ran), prints
  `sweep: N of M jobs succeeded; failed: #i <error>`, writes the summary table and loss plot into the sweep
  folder and onto the parent run (thinker.sweeps.summary), tags the best job and closes the parent.

Each job returns its objective to the sweeper (sweeper_value: hparams_search.objective, else val_loss, else
train_loss); the launching process checks the hparams_search settings before the sweeper uses them
(check_search). guarded_main turns a sweep with failures into a non-zero exit code. Imports stay light (no
mlflow, no optuna here).
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from thinker.errors import ERROR_PREFIX, ExitCode
from thinker.tracking.run_record import RECORD_NAME, read_record

log = logging.getLogger("thinker")

SWEEP_FILE = "sweep_run.json"  # in the sweep folder: what every job needs to know about its sweep


@dataclass
class SweepOutcome:
    total: int = 0
    failed: list[tuple[int, str, int]] = field(default_factory=list)  # (job number, error, exit code)

    @property
    def exit_code(self) -> int:
        return self.failed[0][2] if self.failed else int(ExitCode.OK)

    def line(self) -> str:
        text = f"sweep: {self.total - len(self.failed)} of {self.total} jobs succeeded"
        if self.failed:
            text += "; failed: " + "; ".join(f"#{num} {error}" for num, error, _code in self.failed)
        return text


@dataclass
class SweepInfo:
    """What the launching process tells every job of its sweep (SWEEP_FILE). No secrets: the tracking URI is
    stored masked, and only compared with the job's own (masked) URI."""

    sweep_dir: str
    name: str  # the parent run's name: sweep-<date>-<time>
    overrides: list[str] = field(default_factory=list)  # the sweep's command-line overrides, as given
    swept_keys: list[str] = field(default_factory=list)  # the keys the jobs differ in (child run names)
    total_jobs: int | None = None  # None when the sweeper does not say
    sweeper: str = "basic"
    direction: str = "minimize"  # how the sweep's objective is ranked
    objective: str | None = None  # hparams_search.objective; None: val_loss, else train_loss
    study_name: str | None = None  # an Optuna sweep's study, and its storage URL (masked)
    storage: str | None = None
    parent_run_id: str | None = None  # None with logger=none, or when the parent could not be created
    experiment_id: str | None = None
    tracking_uri: str | None = None  # masked

    def write(self) -> Path:
        from thinker.tracking.atomic import atomic_write_json
        from thinker.tracking.secrets import mask

        return atomic_write_json(Path(self.sweep_dir) / SWEEP_FILE, mask(asdict(self)))

    @classmethod
    def load(cls, sweep_dir: str | Path) -> SweepInfo | None:
        path = Path(sweep_dir) / SWEEP_FILE
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def label(self, overrides: list[str]) -> str:
        return job_label(overrides, self.swept_keys)


# ---------------------------------------------------------------- what a job knows about its sweep


def current_sweep() -> SweepInfo | None:
    """The sweep this job belongs to (read from its hydra.sweep.dir); None outside a multirun."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        if hc.mode != RunMode.MULTIRUN:
            return None
        sweep_dir = str(hc.sweep.dir)
    except Exception:  # no Hydra runtime (tools, tests)
        return None
    return SweepInfo.load(sweep_dir)


def job_number() -> int | None:
    try:
        from hydra.core.hydra_config import HydraConfig

        return int(HydraConfig.get().job.num)
    except Exception:
        return None


def _short_value(value: str) -> str:
    """`0.00012345678` -> `0.000123`; a path -> its last part; anything else as given (cut at 40 characters)."""
    text = value.strip("'\"")
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is not None and len(text) > 8 and any(c in text for c in ".eE"):
        return f"{number:.3g}"
    if "/" in text and not text.startswith(("[", "{")):
        text = text.rstrip("/").rsplit("/", 1)[-1] or text
    return text if len(text) <= 40 else text[:39] + "~"


def _parse(overrides: list[str]) -> list[tuple[str, str]]:
    """(key or group, value) of each override; Hydra's parser when it takes them, else split on the first '='."""
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parsed = OverridesParser.create().parse_overrides(list(overrides))
        return [(o.key_or_group, o.get_value_element_as_str()) for o in parsed if o.value() is not None]
    except Exception:  # noqa: BLE001 - a label is never worth failing a job
        pairs = [o.lstrip("+~").split("=", 1) for o in overrides if "=" in o]
        return [(k.split("@", 1)[0], v) for k, v in pairs]


def job_label(overrides: list[str], swept_keys: list[str]) -> str:
    """`lr=3e-4 method=qlora`: the job's values of the swept keys (all its overrides when none is swept),
    each key shortened to its last part unless two would then read the same."""
    pairs = [(k, v) for k, v in _parse(overrides) if not k.startswith("hydra")]
    chosen = [(k, v) for k, v in pairs if k in swept_keys] or pairs
    shorts = [k.replace("/", ".").rsplit(".", 1)[-1] for k, _ in chosen]
    from thinker.tracking.secrets import mask_text

    # a label names runs, progress lines and summary rows: a credential override shows as token=***
    return mask_text(" ".join(f"{short if shorts.count(short) == 1 else key}={_short_value(value)}"
                              for short, (key, value) in zip(shorts, chosen, strict=True)))


def objective_of(metrics: dict[str, Any], objective: str | None = None) -> tuple[str | None, float | None]:
    """A job's objective: the metric `objective` (hparams_search.objective) when named, else its held-out loss,
    else its training loss. (name, None) when the named metric is missing."""
    if objective:
        value = metrics.get(objective)
        return objective, float(value) if value is not None else None
    for name in ("val_loss", "train_loss"):
        if metrics.get(name) is not None:
            return name, float(metrics[name])
    return None, None


def sweeper_value(cfg: Any, metrics: dict[str, Any]) -> float | None:
    """What a finished job returns to the sweeper (thinker.run.pipeline.run): its objective_of, with a warning when
    the metric hparams_search.objective names is missing (the sweeper then records the trial as failed)."""
    from thinker.sweeps.search import objective_setting

    wanted = objective_setting(cfg)
    name, value = objective_of(metrics, wanted)
    if value is None and wanted and not OmegaConf.select(cfg, "hparams_search.objective", default=None):
        name, value = objective_of(metrics)  # the data task's default is not reported (stage=train): the loss
        wanted = None
    if value is None and wanted:
        log.warning("hparams_search.objective=%s is not among this run's metrics: the sweeper gets no value", wanted)
    elif name == "train_loss" and not wanted:
        log.warning("no held-out loss (data.validation_split=0 or trainer.evaluations=0): returning train_loss")
    return value


def job_done(record: Any, exit_status: str, seconds: float) -> None:
    """One line per finished job, printed by the job itself (it reaches the console with every launcher):
    `[sweep] job 2/4 (#1) done: lr=3e-4 method=qlora val_loss 7.1200 (35 s)`."""
    try:
        info = current_sweep()
        num = job_number()
        label = info.label(list(record.overrides)) if info else job_label(list(record.overrides), [])
        position = "?" if num is None else str(num + 1)
        if info is not None and info.total_jobs:
            position += f"/{info.total_jobs}"
        which = f"job {position}" + ("" if num is None else f" (#{num})")
        if record.reused_from and exit_status == "succeeded":
            outcome = f"reused run {record.reused_from[:12]}"
        else:
            outcome = {"succeeded": "done"}.get(exit_status, exit_status)
        objective = info.objective if info else None
        name, value = objective_of(record.metrics, objective) if exit_status == "succeeded" else (None, None)
        result = f" {name} {value:.4f}" if value is not None else ""
        print(f"[sweep] {which} {outcome}: {label or '(no overrides)'}{result} ({seconds:.0f} s)", flush=True)
    except Exception as exc:  # noqa: BLE001 - a progress line never fails a job
        log.warning("no sweep progress line: %s", exc)


# ---------------------------------------------------------------- the launching process


def summarize(sweep_dir: Path) -> SweepOutcome:
    """Read every job's run record under `sweep_dir` (job folders are named by job number)."""
    outcome = SweepOutcome()
    for job, record in job_records(sweep_dir):
        outcome.total += 1
        if record is None:
            path = job / RECORD_NAME
            outcome.failed.append((int(job.name), f"its run record {path} is unreadable", int(ExitCode.RECORD)))
            continue
        if record.get("exit_status") == "succeeded":
            continue
        error = record.get("error") or f"ended as {record.get('exit_status')} without an error line (killed?)"
        code = record.get("exit_code") or 1
        outcome.failed.append((int(job.name), str(error).removeprefix(ERROR_PREFIX), int(code)))
    return outcome


def job_records(sweep_dir: Path) -> list[tuple[Path, dict[str, Any] | None]]:
    """(job folder, its run record or None when unreadable) in job order; folders without a record never
    started a thinker job and are left out."""
    jobs = sorted((p for p in Path(sweep_dir).iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    out: list[tuple[Path, dict[str, Any] | None]] = []
    for job in jobs:
        path = job / RECORD_NAME
        if not path.is_file():
            continue
        try:
            record = read_record(path)
        except (OSError, ValueError):
            record = None
        out.append((job, record))
    return out


def sweep_name(sweep_dir: Path) -> str:
    """multirun/2026-01-01/12-00-00 -> sweep-2026-01-01-12-00-00; any other folder -> sweep-<its name>."""
    import re

    if re.fullmatch(r"\d\d-\d\d-\d\d", sweep_dir.name) and re.fullmatch(r"\d{4}-\d\d-\d\d", sweep_dir.parent.name):
        return f"sweep-{sweep_dir.parent.name}-{sweep_dir.name}"
    return f"sweep-{sweep_dir.name}"


def plan(config: Any) -> SweepInfo:
    """The sweep's name, overrides, swept keys and size, from the multirun's config (nothing is launched)."""
    from thinker.sweeps.search import masked_storage, objective_setting, task_default

    sweep_dir = Path(str(config.hydra.sweep.dir))
    overrides = [str(o) for o in OmegaConf.select(config, "hydra.overrides.task", default=[]) or []]
    target = str(OmegaConf.select(config, "hydra.sweeper._target_", default="") or "")
    # hparams_search.direction (the Optuna sweeper's follows it), else the data task's with its own objective
    # (task_default), else the sweeper's own, else minimize
    own = task_default(config)
    direction = (OmegaConf.select(config, "hparams_search.direction", default=None) or (own and own[1])
                 or OmegaConf.select(config, "hydra.sweeper.direction", default="minimize"))
    sweeper = ("optuna" if "optuna" in target.lower() else "basic" if "BasicSweeper" in target
               else target.rsplit(".", 1)[-1] or "unknown")
    info = SweepInfo(sweep_dir=str(sweep_dir.resolve()), name=sweep_name(sweep_dir), overrides=overrides,
                     sweeper=sweeper, direction=str(direction).lower() if isinstance(direction, str) else "minimize",
                     objective=objective_setting(config))
    if sweeper == "optuna":
        info.study_name = OmegaConf.select(config, "hydra.sweeper.study_name", default=None)
        info.storage = masked_storage(OmegaConf.select(config, "hydra.sweeper.storage", default=None))
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
        # resolved: a search space may interpolate (optimizer.lr's range follows the model's recommended_lr)
        params = OmegaConf.to_container(params, resolve=True) if not isinstance(params, dict) else params
        parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()] + overrides)
        keys = [o.key_or_group for o in parsed if o.is_sweep_override()]
        info.swept_keys = list(dict.fromkeys(keys))
        if info.sweeper == "optuna":
            info.total_jobs = int(OmegaConf.select(config, "hydra.sweeper.n_trials", default=0)) or None
        elif info.sweeper == "basic":
            info.total_jobs = sum(len(batch) for batch in BasicSweeper.split_arguments(parsed, None))
    except Exception as exc:  # noqa: BLE001 - names and counts are a convenience
        log.debug("could not read the sweep's plan: %s", exc)
    return info


# hydra-optuna-sweeper 1.3 builds optuna's pre-3.0 distribution classes and TPESampler arguments that optuna 4
# deprecates (both work until optuna 6): nothing a user of thinker can act on
OPTUNA_DEPRECATIONS = r"(\w+Distribution|`\w+`) has been deprecated in v\d"


def quiet_optuna() -> None:
    import warnings

    warnings.filterwarnings("ignore", message=OPTUNA_DEPRECATIONS, category=FutureWarning)


def check_search(config: Any) -> None:
    """A multirun's hparams_search settings, checked in the launching process before the sweeper uses them:
    the first problem is one `[thinker] error:` line and exit code 2 (each job checks them again)."""
    from thinker.sweeps.search import launch_problems

    problems = launch_problems(config)
    if not problems:
        return
    from thinker.console import release_stderr
    from thinker.errors import ThinkerError
    from thinker.tracking.secrets import mask_text

    release_stderr()  # the line goes out as it is, not folded into a launcher failure
    print(mask_text(ThinkerError(*problems[0]).line()), file=sys.stderr, flush=True)
    raise SystemExit(int(ExitCode.CONFIG))
