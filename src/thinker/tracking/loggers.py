"""The training loop's logger, from the `logger=` option's `_target_` (conf/logger/*.yaml): a Lightning logger
class, or a factory that returns one, finished at build time with what the run knows, as far as its signature
takes it: `save_dir` (the run folder), `name` (the option's name), `session` (the run's MLflow session, when
the option sets `mlflow: true`) and `resuming`. An option without a `_target_` (logger=none) logs nothing.
Adding a logger is one YAML file (conf/logger/csv.yaml: Lightning's CSVLogger).

A backend that trains without a Lightning run of its own (tinker, provider) logs its per-step metrics into a
tracker; when the option is not MLflow, logger_tracker gives it one that writes them to the option's logger.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from thinker.config.targets import accepted_keywords, partial_from

# logger.* keys thinker reads itself (the MLflow session's settings), never the target's
THINKER_KEYS = ("name", "mlflow", "tracking_uri", "experiment_name", "run_name")


def training_logger(logger_cfg: Any, *, run_dir: Path, session: Any, resuming: bool) -> Any:
    """The Lightning logger the option describes, or False (Lightning's "no logger")."""
    if not logger_cfg.get("_target_"):
        return False
    factory = partial_from(logger_cfg, THINKER_KEYS)
    accepted = accepted_keywords(factory.func)
    known = {"save_dir": str(run_dir), "name": str(logger_cfg.name), "session": session, "resuming": resuming}
    return factory(**{key: value for key, value in known.items() if accepted is None or key in accepted})


class LoggerTracker:
    """A backend's tracker (log_metrics, set_tags, log_artifact, as the MLflow session offers them) that writes
    metrics to a Lightning logger; tags and artifacts are MLflow's alone and are left out."""

    def __init__(self, logger: Any):
        self.logger = logger

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        self.logger.log_metrics({key: float(value) for key, value in metrics.items()}, step=step)

    def set_tags(self, tags: dict[str, Any]) -> None:
        return

    def log_artifact(self, path: Any, artifact_path: str | None = None) -> None:
        return

    def close(self, status: str = "success") -> None:
        """Write out what was logged (a CSV logger keeps rows until saved)."""
        self.logger.save()
        self.logger.finalize(status)


def logger_tracker(logger_cfg: Any, *, run_dir: Path, resuming: bool) -> LoggerTracker | None:
    """The tracker a backend without a Lightning run of its own logs into when the logger option does not open
    an MLflow run (logger=csv, one of your own); None when it logs nothing (logger=none)."""
    if logger_cfg.get("mlflow"):
        return None  # the MLflow session is the tracker
    logger = training_logger(logger_cfg, run_dir=run_dir, session=None, resuming=resuming)
    return LoggerTracker(logger) if logger else None
