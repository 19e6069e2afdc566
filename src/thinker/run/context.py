"""What every stage of one run shares: the StageContext (config, run folder, run record, results, the MLflow
run opened by the first stage that logs) and the run's MLflow metadata."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from thinker.data.source import effective_data_path
from thinker.tracking.run_record import RunRecord

log = logging.getLogger("thinker")


@dataclass
class StageContext:
    cfg: DictConfig
    run_dir: Path
    record: RunRecord
    results: dict[str, Any] = field(default_factory=dict)
    session: Any = None  # the MLflow run of this job, opened by the first stage that logs

    def open_session(self) -> Any:
        """Open this job's MLflow run; None unless the logger option sets `mlflow: true`. A continued record (resume=true, or stage=eval
        in a trained run's folder) reopens the MLflow run it already has, so one run holds the whole story."""
        if self.session is not None or not self.cfg.logger.mlflow:
            return self.session
        from thinker.sweeps.plan import current_sweep
        from thinker.tracking.mlflow_run import MlflowSession, tracking_uri

        cfg, record = self.cfg, self.record
        sweep = current_sweep()  # inside -m: this job's run is a child of the sweep's parent run
        name = sweep.label(record.overrides) if sweep is not None else None
        self.session = MlflowSession(
            tracking_uri(cfg.logger.tracking_uri), cfg.logger.experiment_name,
            cfg.logger.run_name or name or run_name(cfg),
            resume_run_id=record.mlflow_run_id if record.history else None,
        )
        record.mlflow_run_id = self.session.run_id
        record.write()
        log_run_metadata(self.session, cfg, record)
        if sweep is not None and not self.session.reopened:
            link_to_sweep(self.session, sweep)
        log.info("MLflow run %s (%s)", self.session.run_id, self.session.uri)
        return self.session


def run_name(cfg: DictConfig) -> str:
    """What the MLflow UI lists: model, method, learning rate and start time (tiny-qwen-qlora-lr3e-3-224700)."""
    import datetime as dt

    mantissa, exponent = f"{float(cfg.optimizer.lr):.2e}".split("e")
    lr = f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{cfg.model.name}-{cfg.method.name}-lr{lr}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def link_to_sweep(session: Any, sweep: Any) -> None:
    """Make this job's MLflow run a child of its sweep's parent run (MLflow's mlflow.parentRunId tag), when
    both live in the same store and experiment."""
    from thinker.sweeps.plan import job_number
    from thinker.tracking.secrets import mask_text

    same_store = sweep.tracking_uri == mask_text(session.uri) and sweep.experiment_id == session.experiment_id
    if sweep.parent_run_id and same_store:
        session.set_tags({"mlflow.parentRunId": sweep.parent_run_id, "sweep_job": job_number()})
    elif sweep.parent_run_id:
        log.warning("this job logs to another MLflow store or experiment than its sweep's parent run %s; it is "
                    "not linked to it", sweep.parent_run_id)
    session.set_tags({"sweep_name": sweep.name, "sweep_dir": sweep.sweep_dir})


def log_run_metadata(session: Any, cfg: DictConfig, record: RunRecord) -> None:
    from thinker.tracking.fingerprint import resolved_container
    from thinker.tracking.mlflow_run import PARAMS_LEFT_OUT, flatten, log_dataset, log_params

    if not session.reopened:  # params are immutable in MLflow; a reopened run already has them
        log_params(session.client, session.run_id, flatten(resolved_container(cfg, drop=PARAMS_LEFT_OUT)))
    session.set_tags({
        "git_commit": record.git_commit, "dataset_sha256": record.dataset_sha256,
        "config_fingerprint": record.config_fingerprint, "backend": str(cfg.backend.name),
        "method": str(cfg.method.name), "model": cfg.model.name, "data": cfg.data.name,
        "run_dir": str(record.path.parent),
    })
    log_dataset(session.client, session.run_id, str(effective_data_path(cfg, record.path.parent)),
                record.dataset_sha256, cfg.data.name)


def last_step(record: RunRecord) -> int:
    """The run's last optimizer step (0 before training): where summary and eval metrics are logged."""
    return int(record.metrics.get("optimizer_steps", 0))
