"""De-duplicated, resumable sweeps: inside a sweep (-m), a job whose training already finished is not run again.

A job is reused when a FINISHED MLflow run in the same experiment carries the same `config_fingerprint` tag
(same training: thinker.tracking.fingerprint) and the same settings for what its result also depends on: the
stage, every evaluation.* key but the predictions path, and trainer.evaluations (compared through the runs'
params), and its run record (its MLflow artifact, else its run folder's) says it succeeded with weights that
still exist. The job then takes that run's metrics (held-out loss and evaluation scores, so the sweeper's
objective is the same), its weights reference and its stages, records `reused_from` (run record and MLflow tag,
linked in the run's description) and trains nothing. A re-launched sweep therefore reruns only the jobs that
did not finish. `sweep.reuse=false` always trains; resume=true, stage=validate/eval and runs outside a sweep
never reuse.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from thinker.config.enums import Stage
from thinker.run.context import StageContext
from thinker.tracking.run_record import RECORD_NAME, RunRecord, read_record
from thinker.tracking.secrets import mask_text

log = logging.getLogger("thinker")

# params that must match besides the fingerprint: what the result (not the weights) depends on
RESULT_KEYS = ("stage", "trainer.evaluations")
RESULT_PREFIXES = ("evaluation.",)
RESULT_KEYS_LEFT_OUT = ("evaluation.output_path",)  # where predictions are written, not what they are
# tags of the original run that describe its weights, copied onto the reusing run
WEIGHT_TAGS = ("weights_path", "weights_uri", "weights_bytes")


@dataclass
class Reusable:
    run_id: str  # the run that trained (a reused run points at its own original)
    source_run_id: str  # the run whose record and metric history are copied
    experiment_id: str
    record: dict[str, Any]
    run_name: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    metric_keys: list[str] = field(default_factory=list)

    @property
    def run_dir(self) -> str | None:
        return self.tags.get("reused_from_run_dir") or self.tags.get("run_dir")


def wanted(cfg: DictConfig, record: RunRecord) -> bool:
    """Whether this job may reuse a finished run (the pipeline also requires a multirun)."""
    return (bool(OmegaConf.select(cfg, "sweep.reuse", default=True)) and bool(cfg.logger.mlflow)
            and not bool(cfg.resume) and Stage(cfg.stage) in (Stage.train, Stage.run)
            and bool(record.config_fingerprint) and not record.history)


def result_params(cfg: DictConfig) -> dict[str, str]:
    """This job's values of the params (as MLflow holds them) that a reusable run must share."""
    from thinker.tracking.fingerprint import resolved_container
    from thinker.tracking.mlflow_run import PARAMS_LEFT_OUT, flatten

    flat = flatten(resolved_container(cfg, drop=PARAMS_LEFT_OUT))
    return {k: v for k, v in flat.items()
            if (k in RESULT_KEYS or k.startswith(RESULT_PREFIXES)) and k not in RESULT_KEYS_LEFT_OUT}


def _record_of(client: Any, run: Any) -> dict[str, Any] | None:
    """The run record a run logged as its artifact, else the one in its run folder (if it is still that run's)."""
    run_id = run.info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        try:
            return read_record(client.download_artifacts(run_id, RECORD_NAME, tmp))
        except Exception:  # noqa: BLE001 - no artifact (an old run, another artifact store): try the folder
            pass
    folder = run.data.tags.get("run_dir")
    try:
        data = read_record(Path(folder) / RECORD_NAME) if folder else None
    except (OSError, ValueError):
        return None
    return data if data is not None and data.get("mlflow_run_id") == run_id else None


def _unusable(record: dict[str, Any], fingerprint: str) -> str | None:
    """Why a finished run's record cannot stand in for this job; None when it can."""
    from thinker.backends import WeightsRef

    if record.get("exit_status") != "succeeded":
        return f"its record says {record.get('exit_status')}"
    if record.get("config_fingerprint") != fingerprint:
        return "its record has another config fingerprint"
    weights = (record.get("stages") or {}).get("train", {}).get("weights")
    if not weights:
        return "it recorded no trained weights"
    ref = WeightsRef(str(weights))
    if ref.is_local and not Path(ref.uri).exists():
        return f"its weights {ref.uri} are gone"
    return None


def find_reusable(cfg: DictConfig, record: RunRecord) -> Reusable | None:
    """The newest finished run this job can reuse (runs that trained before runs that reused), or None."""
    from thinker.tracking.mlflow_run import get_client, tracking_uri

    client = get_client(tracking_uri(cfg.logger.tracking_uri))
    experiment = client.get_experiment_by_name(str(cfg.logger.experiment_name))
    if experiment is None:
        return None
    fingerprint = str(record.config_fingerprint)
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.config_fingerprint = '{fingerprint}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=200,
    )
    wanted_params = result_params(cfg)
    for run in sorted(runs, key=lambda r: "reused_from" in r.data.tags):
        differs = sorted(k for k, v in wanted_params.items() if run.data.params.get(k) != v)
        if differs:
            log.info("finished run %s has this training but other %s; not reused", run.info.run_id,
                     ", ".join(differs[:3]))
            continue
        found = _record_of(client, run)
        why = "its run record is unavailable" if found is None else _unusable(found, fingerprint)
        if why is not None:
            log.info("finished run %s has this training but is not reused: %s", run.info.run_id, mask_text(why))
            continue
        tags = dict(run.data.tags)
        original = tags.get("reused_from") or run.info.run_id
        return Reusable(run_id=original, source_run_id=run.info.run_id, experiment_id=experiment.experiment_id,
                        record=found, run_name=tags.get("reused_from_run_name") or run.info.run_name, tags=tags,
                        metric_keys=sorted(run.data.metrics))
    return None


def copy_history(client: Any, source_run_id: str, target_run_id: str, keys: list[str]) -> int:
    """Every logged value of `keys` (step by step), from one run to another; returns how many."""
    items = [m for key in keys for m in client.get_metric_history(source_run_id, key)]
    for i in range(0, len(items), 1000):  # MLflow: at most 1000 metrics a batch
        client.log_batch(target_run_id, metrics=items[i : i + 1000])
    return len(items)


def adopt(record: RunRecord, found: Reusable) -> None:
    """Put the reused run's outcome into this job's record: metrics, dataset digest and stages, each stage
    marked `reused` with the run it came from."""
    original = found.record
    record.reused_from = found.run_id
    record.metrics.update(original.get("metrics") or {})
    record.dataset_sha256 = record.dataset_sha256 or original.get("dataset_sha256")
    for name, entry in (original.get("stages") or {}).items():
        if name in ("config", "reuse") or not isinstance(entry, dict):
            continue
        copied = dict(entry)
        copied["status"] = "reused" if entry.get("status") in ("passed", "reused") else entry.get("status")
        copied["reused_from"] = found.run_id
        record.stages[name] = copied


def annotate(session: Any, found: Reusable) -> None:
    """The reusing MLflow run: `reused_from` (tag and a link in its description), the original's weights
    tags and its metric history, so the run compares like any other in the UI."""
    link = f"#/experiments/{found.experiment_id}/runs/{found.run_id}"
    tags: dict[str, Any] = {
        "reused_from": found.run_id, "reused_from_run_name": found.run_name, "reused_from_run_dir": found.run_dir,
        "reused_from_link": link,
        "mlflow.note.content": f"Not trained again: this job reused the result of run "
                               f"[{found.run_name or found.run_id}]({link}) (same config fingerprint, stage and "
                               "evaluation settings). `sweep.reuse=false` retrains.",
    }
    tags.update({k: found.tags[k] for k in WEIGHT_TAGS if k in found.tags})
    session.set_tags(tags)
    copy_history(session.client, found.source_run_id, session.run_id, found.metric_keys)


def find_reuse(ctx: StageContext) -> bool:
    """Inside a sweep: look for a finished run with this job's training (thinker.run.reuse). True when found; the
    job then runs stage_reuse instead of training. A failed lookup is a warning, and the job trains."""
    if not wanted(ctx.cfg, ctx.record):
        return False
    try:
        found = find_reusable(ctx.cfg, ctx.record)
    except Exception as exc:  # noqa: BLE001 - the job can always train instead
        from thinker.tracking.secrets import mask_text

        log.warning("could not look for a finished run to reuse (%s); training", mask_text(str(exc)))
        return False
    if found is not None:
        ctx.results["reuse"] = found
    return found is not None


def stage_reuse(ctx: StageContext) -> None:
    """Take a finished run's result instead of training (thinker.run.reuse): its metrics, weights and stages go into
    this job's record and MLflow run, which records `reused_from`."""
    found: Reusable = ctx.results["reuse"]
    record = ctx.record
    adopt(record, found)
    log.info("this training already finished in MLflow run %s (%s): reusing its result, not training again "
             "(sweep.reuse=false retrains)", found.run_id, found.run_dir or "its folder is unknown")
    record.stage_update("reuse", "running", reused_from=found.run_id, run_dir=found.run_dir,
                        source_run_id=found.source_run_id)
    session = ctx.open_session()
    if session is not None:
        annotate(session, found)
    record.stage_update("reuse", "passed")
