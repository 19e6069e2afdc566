"""The training loop's logger, from the `logger=` option's `_target_` (conf/logger/*.yaml): a Lightning logger
class, or a factory that returns one, finished at build time with what the run knows, as far as its signature
takes it: `save_dir` (the run folder), `name` (the option's name), `session` (the run's MLflow session, when
the option sets `mlflow: true`) and `resuming`. An option without a `_target_` (logger=none) logs nothing.
Adding a logger is one YAML file (conf/logger/csv.yaml: Lightning's CSVLogger).
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
