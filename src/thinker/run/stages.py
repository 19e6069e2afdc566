"""The pipeline's stages after the config check: validate, train, eval.

Each stage takes the StageContext, does one job, and writes its outcome into the run record. Stages
raise ThinkerError (with their own stage name) for anything the user can fix.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from thinker.data.source import effective_data_path, prepare_data, source_format
from thinker.errors import ThinkerError
from thinker.paths import resolve_input
from thinker.tracking.run_record import RunRecord

if TYPE_CHECKING:
    from thinker.backends import TrainingReport, WeightsRef

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


def find_reuse(ctx: StageContext) -> bool:
    """Inside a sweep: look for a finished run with this job's training (thinker.run.reuse). True when found; the
    job then runs stage_reuse instead of training. A failed lookup is a warning, and the job trains."""
    from thinker.run import reuse

    if not reuse.wanted(ctx.cfg, ctx.record):
        return False
    try:
        found = reuse.find_reusable(ctx.cfg, ctx.record)
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
    from thinker.run import reuse

    found: reuse.Reusable = ctx.results["reuse"]
    record = ctx.record
    reuse.adopt(record, found)
    log.info("this training already finished in MLflow run %s (%s): reusing its result, not training again "
             "(sweep.reuse=false retrains)", found.run_id, found.run_dir or "its folder is unknown")
    record.stage_update("reuse", "running", reused_from=found.run_id, run_dir=found.run_dir,
                        source_run_id=found.source_run_id)
    session = ctx.open_session()
    if session is not None:
        reuse.annotate(session, found)
    record.stage_update("reuse", "passed")


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


def environment_for_gate(cfg: DictConfig, data_path: Path) -> dict[str, str]:
    """Variables the dataset-contract tests read (tests/gate); data_path is the file really validated."""
    return {
        "THINKER_DATA_PATH": str(data_path.resolve()),
        "THINKER_DATA_FORMAT": str(cfg.data.format),
        "THINKER_PROMPT_FIELD": str(cfg.data.prompt_field),
        "THINKER_COMPLETION_FIELD": str(cfg.data.completion_field),
    }


def stage_validate(ctx: StageContext) -> None:
    from thinker.validation.dataset import FieldSpec, validate_dataset
    from thinker.validation.pytest_gate import run_pytest_gate

    cfg, record = ctx.cfg, ctx.record
    found = prepare_data(cfg, ctx.run_dir)  # converts data.source_format inputs first; else data.path
    if not cfg.validation.enabled:
        log.warning("validation.enabled=false: the dataset and pytest gate are SKIPPED (debug only)")
        record.stage_update("validate", "skipped", reason="validation.enabled=false (debug only)")
        _record_dataset_digest(ctx, found)
        return

    converted = source_format(cfg) is not None
    path = str(found) if converted else str(cfg.data.path)
    if converted:
        record.dataset_path = path  # the file this run really validates and trains on
    log.info("validating %s against the %s schema", path, cfg.data.name)
    result = validate_dataset(found, FieldSpec.from_config(cfg.data.schema), max_examples=cfg.data.max_examples,
                              max_record_chars=cfg.data.max_record_chars)
    record.dataset_sha256 = result.sha256
    record.stage_update(
        "validate", "running", dataset_records=result.records, dataset_errors=len(result.errors)
    )
    if not result.ok:
        print(result.summary(cfg.validation.max_errors_shown))
        first = result.errors[0] if result.errors else None
        raise ThinkerError(
            f"dataset failed validation with {len(result.errors)} error(s)" + (f" (first: {first})" if first else ""),
            f"data.path={path}",
            "fix the listed lines or point data.path at another file",
            stage="validate",
        )
    gate = cfg.validation.pytest
    if gate.enabled:
        outcome = run_pytest_gate([str(resolve_input(p)) for p in gate.paths], gate.markers, list(gate.args),
                                  environment_for_gate(cfg, found), quiet=not cfg.debug)
        record.stage_update("validate", "running", pytest=outcome.status, pytest_outcomes=outcome.outcomes)
        log.info("validation: %d records ok (sha256 %s); pytest gate %s: %s", result.records,
                 (result.sha256 or "")[:12], outcome.status, outcome.message)
        if outcome.status != "passed":
            raise ThinkerError(
                f"the pytest gate {outcome.status} (exit code {outcome.exit_code})"
                + (f": {outcome.message}" if outcome.message else ""),
                f"validation.pytest.paths={list(gate.paths)}",
                "fix the failing tests above (validation.pytest.enabled=false skips the gate, debug only)",
                stage="validate",
            )
    else:
        record.stage_update("validate", "running", pytest="skipped")
        log.info("validation: %d records ok (sha256 %s); pytest gate off", result.records,
                 (result.sha256 or "")[:12])
    record.stage_update("validate", "passed")


def _record_dataset_digest(ctx: StageContext, data_path: Path) -> None:
    from thinker.tracking.provenance import file_sha256

    ctx.record.dataset_sha256 = file_sha256(data_path)
    ctx.record.write()


def stage_train(ctx: StageContext) -> None:
    from thinker.backends import instantiate_backend

    cfg, record = ctx.cfg, ctx.record
    backend = instantiate_backend(cfg)
    record.stage_update("train", "running", backend=backend.name, method=str(cfg.method.name), model=cfg.model.name)
    session = ctx.open_session()
    report = backend.train(cfg, ctx.run_dir, session)
    ctx.results["train"] = report
    registered = register_weights(ctx, report)
    if session is not None and report.weights is not None:
        log_weights(session, report.weights)
    record.metrics.update(report.metrics)
    if session is not None:  # the losses were logged step by step; the run's totals go at its last step
        session.log_metrics({k: v for k, v in report.metrics.items() if k not in STEP_METRICS},
                            step=last_step(record))
    record.stage_update(
        "train",
        "passed",
        backend=report.backend,
        weights=report.weights.uri if report.weights else None,
        metrics=report.metrics,
        registered_as=registered,
        **report.extra,
    )


# logged by the backend at every step (or evaluation) while training, never again afterwards
STEP_METRICS = ("train_loss", "val_loss", "reasoning_accuracy")


def last_step(record: RunRecord) -> int:
    """The run's last optimizer step (0 before training): where summary and eval metrics are logged."""
    return int(record.metrics.get("optimizer_steps", 0))


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


def weights_to_evaluate(ctx: StageContext) -> TrainingReport:
    """This job's training report; else evaluation.checkpoint_dir; else the weights the folder's record names
    (a remote URI stays one); else <run folder>/weights."""
    from thinker.backends import TrainingReport, WeightsRef
    from thinker.evaluation.checkpoint import find_checkpoint

    trained = ctx.results.get("train")
    if trained is not None and trained.weights is not None and not ctx.cfg.evaluation.checkpoint_dir:
        return trained
    recorded = ctx.record.stages.get("train", {}).get("weights")
    backend = str(ctx.cfg.backend.name)
    if recorded and not ctx.cfg.evaluation.checkpoint_dir and not WeightsRef(recorded).is_local:
        return TrainingReport(backend=backend, weights=WeightsRef(recorded), extra={"run_dir": str(ctx.run_dir)})
    folder = find_checkpoint(ctx.cfg.evaluation.checkpoint_dir, ctx.run_dir, Path(recorded) if recorded else None)
    return TrainingReport(backend=backend, weights=WeightsRef.local(folder), extra={"run_dir": str(ctx.run_dir)})


def stage_eval(ctx: StageContext) -> None:
    """Score the trained weights on held-out SciFact claims through the backend's sampler; metrics go to
    stdout, the record and MLflow, the same metrics whichever backend trained them."""
    from thinker.backends import instantiate_backend
    from thinker.evaluation.samples import load_eval_samples

    cfg, record = ctx.cfg, ctx.record
    ev = cfg.evaluation
    if not ev.enabled:
        record.stage_update("eval", "skipped", reason="evaluation.enabled=false")
        return
    from thinker.tasks import task_of

    task = task_of(cfg.data)
    if not task.scores_claims:
        stage_eval_heldout(ctx, task)
        return
    if not ev.claims_file or not ev.corpus_file:
        raise ThinkerError("evaluation needs SciFact claims and corpus files", "evaluation.claims_file / corpus_file",
                           "set both (or evaluation.enabled=false)", stage="eval")
    report = weights_to_evaluate(ctx)
    weights = report.weights.uri
    samples = load_eval_samples(resolve_input(str(ev.claims_file)), resolve_input(str(ev.corpus_file)),
                                ev.max_samples)
    backend = instantiate_backend(cfg)
    skip = backend.eval_skip_reason(report, cfg)
    if skip:
        record.stage_update("eval", "skipped", reason=skip, weights=weights)
        log.warning("evaluation skipped: %s", skip)
        return
    record.stage_update("eval", "running", weights=weights, samples=len(samples))
    try:
        scored = score_claims(ctx, backend, report, samples)
    finally:
        backend.close()
    record_claim_scores(ctx, weights, samples, *scored)


def score_claims(ctx: StageContext, backend: Any, report: TrainingReport, samples: list[Any]) -> tuple:
    """(result, before, floor, seconds, output): the trained weights', the base model's and the floor's scores."""
    from thinker.evaluation.compare import base_metrics, floor_metrics
    from thinker.evaluation.matching import STRING, load_embedding_matcher
    from thinker.evaluation.report import comparison_table
    from thinker.evaluation.runner import evaluate

    cfg, ev = ctx.cfg, ctx.cfg.evaluation
    weights = report.weights.uri
    generate = backend.sampler(report, cfg)
    semantic = (load_embedding_matcher(float(ev.embedding.threshold), evaluation_device())
                if ev.embedding.enabled else None) or STRING
    output = Path(ev.output_path) if ev.output_path else Path("eval") / "predictions.jsonl"
    output = output if output.is_absolute() else ctx.run_dir / output
    log.info("evaluating %s on %d claims of %s (%s decoding, evidence matcher %s)", weights, len(samples),
             ev.claims_file, "sampled" if ev.decoding.do_sample else "greedy", semantic.name)
    started = time.perf_counter()
    result = evaluate(samples, generate, semantic=semantic, output_path=output, batch_size=int(ev.batch_size))
    seconds = time.perf_counter() - started
    del generate  # the trained model's memory, before the base model loads
    before = base_metrics(cfg, backend, samples, semantic, int(ev.batch_size)) if ev.compare_base else None
    floor = floor_metrics(samples, semantic)
    print(comparison_table(before, result.metrics, floor, f"evaluation of {weights} ({len(samples)} claims)"),
          flush=True)
    return result, before, floor, seconds, output


def record_claim_scores(ctx: StageContext, weights: str, samples: list[Any], result: Any, before: Any,
                        floor: dict, seconds: float, output: Path) -> None:
    from thinker.evaluation.report import at_floor

    record = ctx.record
    record.metrics.update(result.metrics)
    session = ctx.open_session()
    if session is not None:
        base = {f"base_{k}": v for k, v in (before or {}).items()}
        session.log_metrics({**result.metrics, **base, "eval_seconds": seconds}, step=last_step(record))
        session.log_artifact(output, "eval")
    record.stage_update("eval", "passed", metrics=result.metrics, metrics_before=before, floor=floor,
                        at_floor=at_floor(result.metrics, floor), predictions=str(output),
                        evidence_semantic_matcher=result.semantic_matcher, eval_seconds=round(seconds, 3),
                        **result.per_sample)


def stage_eval_heldout(ctx: StageContext, task: Any) -> None:
    """Data without SciFact-style claims: held-out loss and perplexity from training, plus the data task's
    generation check on the held-out split when it has one (final-answer accuracy, chat replies)."""
    from thinker.backends import instantiate_backend
    from thinker.data.source import effective_data_path
    from thinker.evaluation.heldout import generation_check, heldout_examples, loss_metrics

    cfg, record = ctx.cfg, ctx.record
    metrics = loss_metrics(record.metrics.get("val_loss"))
    if task.generation_metrics:
        report = weights_to_evaluate(ctx)
        backend = instantiate_backend(cfg)
        skip = backend.eval_skip_reason(report, cfg)
        if skip:
            log.warning("the generation check (%s) is skipped: %s", ", ".join(task.generation_metrics), skip)
        else:
            examples = heldout_examples(cfg, effective_data_path(cfg, ctx.run_dir))
            record.stage_update("eval", "running", weights=report.weights.uri, samples=len(examples))
            try:
                generate = backend.sampler(report, cfg)
                metrics.update(generation_check(task, examples, generate, int(cfg.evaluation.batch_size),
                                                lambda: eval_tokenizer(cfg)))
            finally:
                backend.close()
    if not metrics:
        record.stage_update("eval", "skipped", reason=f"data.format={cfg.data.format} has no SciFact-style "
                            "evaluation, and its held-out loss comes from the train stage (none in this run)")
        log.warning("evaluation skipped: data.format=%s is scored by held-out loss, which needs training "
                    "in this run (data.validation_split > 0, trainer.evaluations > 0)", cfg.data.format)
        return
    print("\n".join([f"evaluation on held-out {cfg.data.name} data"] +
                    [f"{name:<16}{value:.4f}" for name, value in metrics.items()]), flush=True)
    record.metrics.update(metrics)
    session = ctx.open_session()
    if session is not None:
        session.log_metrics(metrics, step=last_step(record))
    record.stage_update("eval", "passed", metrics=metrics)


def eval_tokenizer(cfg: DictConfig) -> Any:
    """The model's tokenizer, for tasks whose prompts it renders (chat templates)."""
    from thinker.models.loading import load_training_tokenizer

    return load_training_tokenizer(cfg)


def evaluation_device() -> str:
    """Where the evidence-similarity model runs: this machine's GPU when it has one (any backend)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
