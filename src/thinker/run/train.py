"""The train stage: the backend trains, the weights are registered and logged, the totals recorded."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from thinker.run.context import StageContext, last_step

if TYPE_CHECKING:
    from thinker.backends import TrainingReport, WeightsRef

log = logging.getLogger("thinker")


def stage_train(ctx: StageContext) -> None:
    from thinker.backends import instantiate_backend

    cfg, record = ctx.cfg, ctx.record
    backend = instantiate_backend(cfg)
    record.stage_update("train", "running", backend=backend.name, method=str(cfg.method.name), model=cfg.model.name)
    session = ctx.open_session()
    own_tracker = None if session is not None or backend.builds_training_logger(cfg) else logger_tracker(ctx)
    tracker = session if own_tracker is None else own_tracker
    try:
        report = backend.train(cfg, ctx.run_dir, tracker)
        ctx.results["train"] = report
        registered = register_weights(ctx, report)
        if session is not None and report.weights is not None:
            log_weights(session, report.weights)
        record.metrics.update(report.metrics)
        cost = record_cost(ctx, report.metrics)
        if tracker is not None:  # the losses were logged step by step; the run's totals go at its last step
            tracker.log_metrics({**{k: v for k, v in report.metrics.items() if k not in STEP_METRICS}, **cost},
                                step=last_step(record))
    finally:
        if own_tracker is not None:
            own_tracker.close()
    record.stage_update(
        "train",
        "passed",
        backend=report.backend,
        weights=report.weights.uri if report.weights else None,
        metrics=report.metrics,
        registered_as=registered,
        **report.extra,
    )


def logger_tracker(ctx: StageContext) -> Any:
    """What a backend without a Lightning run of its own logs into under a logger option that is not MLflow
    (logger=csv writes <run>/csv/version_N/metrics.csv); None for logger=none."""
    from thinker.tracking.loggers import logger_tracker as tracker_for

    return tracker_for(ctx.cfg.logger, run_dir=ctx.run_dir, resuming=bool(ctx.cfg.get("resume")))


def record_cost(ctx: StageContext, metrics: dict[str, float]) -> dict[str, float]:
    """What the training took and cost, next to the config check's estimate (docs/costs.md); its MLflow metrics."""
    from thinker.estimate.actual import actual_cost, cost_metrics, remember_throughput

    estimate = ctx.record.cost.get("estimate")
    ctx.record.cost["actual"] = actual_cost(ctx.cfg, estimate, metrics)
    remember_throughput(ctx.cfg, estimate, metrics)
    return cost_metrics(ctx.record.cost)


# logged by the backend at every step (or evaluation) while training, never again afterwards
STEP_METRICS = ("train_loss", "val_loss", "reasoning_accuracy")


def register_weights(ctx: StageContext, report: TrainingReport) -> str | None:
    """Put the run's weights (a local folder or a remote URI) in the model registry with their lineage,
    unless output.register=false or the run is a smoke run (finetunes.should_register)."""
    if report.weights is None:
        return None
    from thinker.models.finetunes import register_run_output, should_register

    steps = report.metrics.get("optimizer_steps")
    register, reason = should_register(ctx.cfg, int(steps) if steps is not None else None)
    if not register:
        log.info("the weights were not registered (%s); they stay in %s", reason, report.weights.uri)
        return None
    entry = register_run_output(ctx.cfg, report.weights, ctx.record.mlflow_run_id, metrics=report.metrics,
                                run_dir=ctx.run_dir)
    log.info("registered the weights as model %s (fine-tuned from %s)", entry.model_name, entry.fine_tuned_from)
    return entry.model_name


# Adapters are small and go into MLflow whole; a full model above this size is referenced by path only.
MAX_WEIGHTS_ARTIFACT_BYTES = 200 * 1024 * 1024


def log_weights(session: Any, weights: WeightsRef) -> None:
    if weights.path is None:  # remote weights: the URI is the reference
        session.set_tags({"weights_uri": weights.uri})
        return
    size = sum(p.stat().st_size for p in weights.path.rglob("*") if p.is_file())
    if size <= MAX_WEIGHTS_ARTIFACT_BYTES:
        session.log_artifact(weights.path, "weights")
    session.set_tags({"weights_path": str(weights.path), "weights_bytes": size})
