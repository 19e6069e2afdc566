"""The run pipeline: check the config, validate the data, train, evaluate, record.

Every stage updates the run record; a user error becomes one `[thinker] error:` line and the exit code
of the stage that failed. Heavy libraries are imported only inside the stages that use them.
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from thinker.backends.local.ranks import rank_name
from thinker.config.check import check_config
from thinker.config.enums import Stage
from thinker.console import release_stderr
from thinker.errors import ExitCode, ThinkerError
from thinker.errors.disk_full import DiskFull, disk_full_error, quiet_log_files_when_full
from thinker.paths import project_root
from thinker.tracking.fingerprint import config_fingerprint
from thinker.tracking.provenance import git_commit, git_dirty
from thinker.tracking.run_record import RECORD_NAME, RunRecord
from thinker.tracking.secrets import install_log_masking, mask_text, register_config_secrets

log = logging.getLogger("thinker")

STAGES_FOR = {
    Stage.validate: ["validate"],
    Stage.train: ["validate", "train"],
    Stage.eval: ["validate", "eval"],
    Stage.run: ["validate", "train", "eval"],
}
# stage -> its module in thinker.run (imported after the config check: a stage may import heavy libraries)
STAGE_MODULES = {"validate": "validate", "train": "train", "eval": "evaluate", "reuse": "reuse"}


def stage_function(stage: str) -> Callable[[Any], None]:
    """The function that runs one stage: thinker.run.<module>.stage_<stage>, one module per stage."""
    module = importlib.import_module(f"thinker.run.{STAGE_MODULES[stage]}")
    return getattr(module, f"stage_{stage}")


def _run_dir(cfg: DictConfig) -> Path:
    try:
        configured = cfg.output.dir
    except Exception:  # no Hydra runtime (tools, tests)
        configured = None
    return Path(configured) if configured else Path("outputs") / "adhoc"


def _hydra_context() -> tuple[str | None, list[str]]:
    try:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
        config_path = str(Path(hc.runtime.config_sources[1].path.replace("file://", "")) / "config.yaml")
        return config_path, list(hc.overrides.task)
    except Exception:
        return None, []


def new_record(cfg: DictConfig, run_dir: Path) -> RunRecord:
    config_path, overrides = _hydra_context()
    record = RunRecord(path=run_dir / RECORD_NAME, config_path=config_path, overrides=overrides)
    record.stage = str(cfg.stage)
    record.backend = str(OmegaConf.select(cfg, "backend.name", default=None))
    record.dataset_path = OmegaConf.select(cfg, "data.path", default=None, throw_on_missing=False)
    code_dir = project_root() or Path.cwd()  # the code's commit, wherever the run is launched from
    record.git_commit = git_commit(code_dir)
    record.git_dirty = git_dirty(code_dir) if record.git_commit else None
    try:
        record.config_fingerprint = config_fingerprint(cfg)
    except Exception:  # an incomplete config has no fingerprint; the config stage will say why
        record.config_fingerprint = None
    return record


def continue_record(cfg: DictConfig, fresh: RunRecord) -> RunRecord:
    """The record this job writes. resume=true continues the interrupted run's record (and through it, its
    MLflow run); stage=eval in a trained run's folder adds its stage to that folder's record. Anything that
    makes a resume impossible is a config error, raised before the validation gate."""
    path = fresh.path
    resuming = bool(cfg.resume)
    if not path.exists():
        if resuming:
            raise ThinkerError(
                f"resume=true but {path.parent} holds no interrupted run (no {RECORD_NAME})",
                "resume, hydra.run.dir",
                "pass hydra.run.dir=<the interrupted run's folder> with resume=true, or drop resume",
            )
        return fresh
    if not resuming and Stage(cfg.stage) != Stage.eval:
        return fresh  # a new run in a reused folder starts a new record
    try:
        previous = RunRecord.load(path)
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else str(exc)
        if resuming:
            raise ThinkerError(f"the run record {path} cannot be read: {why}", "resume, hydra.run.dir",
                               "point hydra.run.dir at a folder written by thinker, or drop resume") from exc
        raise ThinkerError(f"the run record {path} cannot be read: {why}", "stage=eval, hydra.run.dir",
                           f"run stage=train or the full run in {path.parent} to write a new one, or point "
                           "hydra.run.dir at a trained run's folder") from exc
    if resuming:
        if previous.exit_status == "succeeded":
            raise ThinkerError(f"the run in {path.parent} already finished; there is nothing to resume", "resume",
                               "drop resume=true to start a new run (stage=eval re-evaluates it)")
        if previous.config_fingerprint and fresh.config_fingerprint != previous.config_fingerprint:
            raise ThinkerError(
                f"resume=true with a different training config than the interrupted run "
                f"(fingerprint {str(fresh.config_fingerprint)[:12]} vs {previous.config_fingerprint[:12]})",
                "resume", f"resume with the interrupted run's overrides: {' '.join(previous.overrides)}",
            )
    previous.continue_with(fresh.stage or str(cfg.stage), fresh.overrides)
    previous.config_path = fresh.config_path
    previous.git_commit, previous.git_dirty = fresh.git_commit, fresh.git_dirty
    return previous


MLFLOW_STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "crashed": "FAILED", "interrupted": "KILLED"}


def _close_session(context, record: RunRecord, exit_status: str) -> None:
    """Attach the run record and resolved config to the MLflow run, then close it with the run's status.

    Metrics are not re-logged here: each stage logged its own at the step it describes."""
    session = getattr(context, "session", None)
    if session is None:
        return
    try:
        session.log_artifact(record.path)
        log_masked_config(session, record.path.parent / ".hydra" / "config.yaml")
    except Exception as exc:  # noqa: BLE001 - tracking must not mask the run's own outcome
        log.warning("could not attach the run record to the MLflow run: %s", mask_text(str(exc)))
    try:  # even without its artifacts (a full disk): a run left RUNNING would claim to be still going
        session.end(MLFLOW_STATUS[exit_status])
    except Exception as exc:  # noqa: BLE001 - tracking must not mask the run's own outcome
        log.warning("could not finish the MLflow run: %s", mask_text(str(exc)))


def log_masked_config(session, config_file: Path) -> None:
    """The resolved config as an artifact, secrets masked (a tracking URI may carry a password)."""
    if not config_file.is_file():
        return
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        masked = Path(tmp) / config_file.name
        masked.write_text(mask_text(config_file.read_text()))
        session.log_artifact(masked, "config")


def print_traceback() -> None:
    print(mask_text(traceback.format_exc()), file=sys.stderr, end="", flush=True)


def _plain(cfg: DictConfig) -> object:
    """The config as plain data, resolved where it resolves (an incomplete config fails at its check later)."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # noqa: BLE001 - an interpolation error is the config check's to report
        return OmegaConf.to_container(cfg, resolve=False)


def in_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # no Hydra runtime (tools, tests)
        return False


def write_outcome(record: RunRecord, stage: str, exit_status: str, error: ThinkerError | None,
                  line: str | None) -> DiskFull | None:
    """Write how the run ended into its record. On a full disk the record stays as last written, and the
    returned error says where to free space; None when it was written."""
    try:
        if error is not None:
            record.stage_update(stage, exit_status, error=line)
        record.finish(exit_status, int(error.exit_code) if error else int(ExitCode.OK), line)
    except OSError as exc:
        unwritten = disk_full_error(exc, "record", [record.path])
        if unwritten is None:
            raise
        return unwritten
    return None


def run(cfg: DictConfig) -> float | None:
    """Run the composed config. Returns the sweep objective for sweepers (thinker.sweeps.plan.sweeper_value:
    hparams_search.objective, else the held-out loss, else the training loss).

    A failed job exits with its stage's code; inside a sweep (-m) it returns None instead, so the launcher
    goes on to the next job (Optuna records a failed trial) and thinker.sweeps.plan reports it at the end."""
    started = time.monotonic()
    release_stderr()
    install_log_masking()
    quiet_log_files_when_full()
    register_config_secrets(_plain(cfg))  # a credential in the config is masked wherever it shows, key or not
    debug = bool(OmegaConf.select(cfg, "debug", default=False))
    if not debug:
        from thinker.console import quiet_third_party

        quiet_third_party()
    run_dir = _run_dir(cfg)
    rank = rank_name()
    if rank is not None:  # a data-parallel rank > 0: trains its shard beside rank 0, which records the run
        from thinker.run.ranks import run_worker_rank

        return run_worker_rank(cfg, run_dir, rank)
    run_dir.mkdir(parents=True, exist_ok=True)
    record = new_record(cfg, run_dir)
    # a config error must not overwrite the record of the run already in this folder
    keep_existing_record = record.path.exists()
    context = None
    current = "config"
    error: ThinkerError | None = None
    exit_status = "succeeded"
    try:
        record = continue_record(cfg, record)
        keep_existing_record = False
        check_config(cfg)
        from thinker.estimate.cost import estimate_at_config_check

        estimate = estimate_at_config_check(cfg, run_dir)  # tokens, time, USD; budget.max_usd (docs/costs.md)
        if estimate is not None:
            record.cost["estimate"] = estimate.as_dict()
        record.stage_update("config", "passed", fingerprint=record.config_fingerprint)
        log.info("run folder %s (config %s)", run_dir, (record.config_fingerprint or "")[:12])
        # after the check: the stages may import more
        from thinker.run.context import StageContext
        from thinker.run.reuse import find_reuse

        context = StageContext(cfg=cfg, run_dir=run_dir, record=record)
        todo = STAGES_FOR[Stage(cfg.stage)]
        if in_multirun() and find_reuse(context):
            todo = ["reuse"]  # this training already finished in the experiment: its result is taken (thinker.run.reuse)
        for current in todo:
            stage_function(current)(context)
    except ThinkerError as err:
        if debug:
            print_traceback()
        error = err
        exit_status = "interrupted" if err.exit_code == ExitCode.INTERRUPTED else "failed"
    except KeyboardInterrupt:
        error = ThinkerError("interrupted", f"stage {current}", "rerun with resume=true to continue",
                             stage=current, code=ExitCode.INTERRUPTED)
        exit_status = "interrupted"
    except Exception as exc:  # noqa: BLE001 - not a user error: show where, then the one-line summary
        # a full disk is the environment's, in one line (thinker.errors.disk_full)
        error = disk_full_error(exc, current, [run_dir, Path.cwd()], record_file=record.path)
        if error is None or debug:
            print_traceback()
        if error is None:
            error = ThinkerError(
                f"{type(exc).__name__}: {exc}".replace("\n", " "),
                f"stage {current}",
                "this is a bug or an environment problem; the traceback above shows where",
                stage=current,
            )
        exit_status = "failed" if isinstance(error, DiskFull) else "crashed"

    line = mask_text(error.line()) if error is not None else None
    if error is not None:
        print(line, file=sys.stderr, flush=True)
        if keep_existing_record:
            raise SystemExit(int(error.exit_code))
    unwritten = write_outcome(record, current, exit_status, error, line)
    if unwritten is not None and not isinstance(error, DiskFull):  # else the line above said it already
        print(mask_text(unwritten.line()), file=sys.stderr, flush=True)
        if error is None:  # the run went well, but its record cannot say so
            error, exit_status = unwritten, "failed"
    _close_session(context, record, exit_status)
    if in_multirun():
        from thinker.sweeps.plan import job_done

        job_done(record, exit_status, time.monotonic() - started)  # `[sweep] job 2/4 (#1) done: ...`
    if error is not None:
        if in_multirun() and exit_status != "interrupted":
            return None  # the sweep goes on; thinker.sweeps.plan prints the summary and sets the exit code
        raise SystemExit(int(error.exit_code))
    log.info("run record %s", record.path)
    from thinker.sweeps.plan import sweeper_value

    return sweeper_value(cfg, record.metrics)
