"""The run pipeline: check the config, validate the data, train, evaluate, record.

Every stage updates the run record; a user error becomes one `[thinker] error:` line and the exit code
of the stage that failed. Heavy libraries are imported only inside the stages that use them.
"""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from thinker.config.check import check_config
from thinker.config.enums import Stage
from thinker.entry import release_stderr
from thinker.errors import ExitCode, ThinkerError
from thinker.paths import project_root
from thinker.tracking.fingerprint import config_fingerprint
from thinker.tracking.provenance import git_commit, git_dirty
from thinker.tracking.run_record import RECORD_NAME, RunRecord
from thinker.tracking.secrets import mask_text

log = logging.getLogger("thinker")

STAGES_FOR = {
    Stage.validate: ["validate"],
    Stage.train: ["validate", "train"],
    Stage.eval: ["validate", "eval"],
    Stage.run: ["validate", "train", "eval"],
}


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


MLFLOW_STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "crashed": "FAILED", "interrupted": "KILLED"}


def _close_session(context, record: RunRecord, exit_status: str) -> None:
    """Attach the run record and resolved config to the MLflow run, then close it with the run's status."""
    session = getattr(context, "session", None)
    if session is None:
        return
    try:
        if record.metrics:
            session.log_metrics({k: v for k, v in record.metrics.items() if isinstance(v, int | float)})
        session.log_artifact(record.path)
        hydra_dir = record.path.parent / ".hydra"
        session.log_artifact(hydra_dir / "config.yaml", "config")
        session.end(MLFLOW_STATUS[exit_status])
    except Exception as exc:  # noqa: BLE001 - tracking must not mask the run's own outcome
        log.warning("could not finish the MLflow run: %s", mask_text(str(exc)))


def run(cfg: DictConfig) -> float | None:
    """Run the composed config. Returns the held-out loss for sweepers (Optuna minimises it)."""
    release_stderr()
    run_dir = _run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    record = new_record(cfg, run_dir)
    debug = bool(OmegaConf.select(cfg, "debug", default=False))
    context = None
    current = "config"
    error: ThinkerError | None = None
    exit_status = "succeeded"
    try:
        check_config(cfg)
        record.stage_update("config", "passed", fingerprint=record.config_fingerprint)
        log.info("run folder %s (config %s)", run_dir, (record.config_fingerprint or "")[:12])
        from thinker import stages  # after the check: stages may import more

        context = stages.StageContext(cfg=cfg, run_dir=run_dir, record=record)
        for current in STAGES_FOR[Stage(cfg.stage)]:
            getattr(stages, f"stage_{current}")(context)
    except ThinkerError as err:
        if debug:
            traceback.print_exc()
        error = err
        exit_status = "interrupted" if err.exit_code == ExitCode.INTERRUPTED else "failed"
    except KeyboardInterrupt:
        error = ThinkerError("interrupted", f"stage {current}", "rerun with resume=true to continue",
                             stage=current, code=ExitCode.INTERRUPTED)
        exit_status = "interrupted"
    except Exception as exc:  # noqa: BLE001 - not a user error: show where, then the one-line summary
        traceback.print_exc()
        error = ThinkerError(
            f"{type(exc).__name__}: {exc}".replace("\n", " "),
            f"stage {current}",
            "this is a bug or an environment problem; the traceback above shows where",
            stage=current,
        )
        exit_status = "crashed"

    if error is not None:
        print(mask_text(error.line()), file=sys.stderr, flush=True)
        record.stage_update(current, exit_status if exit_status != "failed" else "failed", error=error.line())
    record.finish(exit_status, int(error.exit_code) if error else int(ExitCode.OK))
    _close_session(context, record, exit_status)
    if error is not None:
        raise SystemExit(int(error.exit_code))
    log.info("run record %s", record.path)
    loss = record.metrics.get("val_loss")
    if loss is None and "train_loss" in record.metrics:
        log.warning("no held-out loss (data.validation_split=0?): returning train_loss to sweepers")
        loss = record.metrics["train_loss"]
    return float(loss) if loss is not None else None

