"""The eval stage: the trained weights scored through the backend's sampler, the same metrics whichever backend
trained them (docs/evaluation.md): SciFact claims for the claim task, else held-out loss and the task's
generation check."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from thinker.errors import ThinkerError
from thinker.paths import resolve_input
from thinker.run.context import StageContext, last_step

if TYPE_CHECKING:
    from thinker.backends import TrainingReport

log = logging.getLogger("thinker")


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
    if task.pairs:  # preference pairs: scored by log-probabilities, before -> after
        from thinker.run.evaluate_preference import stage_eval_preference

        stage_eval_preference(ctx, weights_to_evaluate(ctx), eval_tokenizer(cfg))
        return
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
                                                lambda: eval_tokenizer(cfg), backend.samples_conversations))
                if rl_before_after(cfg):
                    metrics.update(base_generation_metrics(cfg, backend, task, examples))
            finally:
                backend.close()
    if not metrics:
        record.stage_update("eval", "skipped", reason=f"data.format={cfg.data.format} has no SciFact-style "
                            "evaluation, and its held-out loss comes from the train stage (none in this run)")
        log.warning("evaluation skipped: data.format=%s is scored by held-out loss, which needs training "
                    "in this run (data.validation_split > 0, trainer.evaluations > 0)", cfg.data.format)
        return
    print("\n".join([f"evaluation on held-out {cfg.data.name} data"] +
                    [f"{name:<16}" + (f"{metrics['base_' + name]:.4f} -> " if f"base_{name}" in metrics else "")
                     + f"{value:.4f}" for name, value in metrics.items() if not name.startswith("base_")]), flush=True)
    record.metrics.update(metrics)
    session = ctx.open_session()
    if session is not None:
        session.log_metrics(metrics, step=last_step(record))
    record.stage_update("eval", "passed", metrics=metrics)


def rl_before_after(cfg: DictConfig) -> bool:
    """objective=grpo reports the task's generation metrics of the base beside the trained weights' (before ->
    after: reinforcement learning is judged by what it changed; docs/objectives.md)."""
    return bool(cfg.evaluation.compare_base) and str(cfg.objective.get("name", "sft")) == "grpo"


def base_generation_metrics(cfg: DictConfig, backend: Any, task: Any, examples: list[Any]) -> dict[str, float]:
    """The generation check of the weights the run started from, as base_<metric> (none if the backend cannot
    name them)."""
    from thinker.backends import TrainingReport
    from thinker.evaluation.heldout import generation_check

    weights = backend.base_weights(cfg)
    if weights is None:
        return {}
    generate = backend.sampler(TrainingReport(backend=backend.name, weights=weights), cfg)
    before = generation_check(task, examples, generate, int(cfg.evaluation.batch_size), lambda: eval_tokenizer(cfg),
                              backend.samples_conversations)
    return {f"base_{name}": value for name, value in before.items()}


def eval_tokenizer(cfg: DictConfig) -> Any:
    """The model's tokenizer, for tasks whose prompts it renders (chat templates)."""
    from thinker.models.loading import load_training_tokenizer

    return load_training_tokenizer(cfg)


def evaluation_device() -> str:
    """Where the evidence-similarity model runs: this machine's GPU when it has one (any backend)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
