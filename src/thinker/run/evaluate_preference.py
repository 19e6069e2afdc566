"""The eval stage for preference pairs (data tasks with `pairs`, docs/objectives.md "Preference tuning"): the
held-out pairs (the split training made, evaluation.max_samples of them) scored through the backend's
log-prob scorer, the base weights before and the trained ones after: pref_accuracy and pref_margin
(thinker.evaluation.preference), printed before -> after, recorded and logged like every run's eval metrics."""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import OmegaConf

from thinker.run.context import StageContext, last_step

log = logging.getLogger("thinker")


def heldout_pairs(ctx: StageContext, tokenizer: Any) -> list[tuple[Any, Any]]:
    """The held-out pairs, tokenized as training tokenized them (pairs cut to nothing left out)."""
    from thinker.data.source import effective_data_path
    from thinker.evaluation.heldout import heldout_examples
    from thinker.tasks.preference import tokenize_pairs

    cfg = ctx.cfg
    pairs = heldout_examples(cfg, effective_data_path(cfg, ctx.run_dir))
    return tokenize_pairs(tokenizer, pairs, int(cfg.trainer.max_seq_length))[0]


def _skip(ctx: StageContext, reason: str, **details: Any) -> None:
    ctx.record.stage_update("eval", "skipped", reason=reason, **details)
    log.warning("evaluation skipped: %s", reason)


def stage_eval_preference(ctx: StageContext, report: Any, tokenizer: Any) -> None:
    """`report`: the weights to evaluate (thinker.run.evaluate.weights_to_evaluate); `tokenizer`: the model's."""
    from thinker.backends import instantiate_backend
    from thinker.evaluation.preference import preference_metrics, reward_metrics, score_pairs

    cfg, record = ctx.cfg, ctx.record
    backend = instantiate_backend(cfg)
    skip = backend.eval_skip_reason(report, cfg)
    if skip:
        _skip(ctx, skip, weights=report.weights.uri)
        return
    pairs = heldout_pairs(ctx, tokenizer)
    if not pairs:
        _skip(ctx, "no held-out preference pairs (data.validation_split=0, or max_seq_length cut them all)")
        return
    scorer = backend.logprob_scorer(report.weights, cfg)
    if scorer is None:
        _skip(ctx, f"backend={backend.name} cannot score log-probabilities of {report.weights.uri}",
              weights=report.weights.uri)
        return
    record.stage_update("eval", "running", weights=report.weights.uri, samples=len(pairs))
    try:
        trained = score_pairs(scorer, pairs)
        del scorer  # the trained model's memory, before the base model loads
        base = backend.base_weights(cfg) if cfg.evaluation.compare_base else None
        base_scorer = backend.logprob_scorer(base, cfg) if base is not None else None
        untrained = score_pairs(base_scorer, pairs) if base_scorer is not None else None
    finally:
        backend.close()
    after, before = preference_metrics(trained), None
    if untrained is not None:
        before = preference_metrics(untrained)
        after.update(reward_metrics(trained, untrained, float(OmegaConf.select(cfg, "objective.beta", default=1.0))))
    print(preference_table(before, after, f"evaluation of {report.weights.uri} ({len(pairs)} held-out pairs)"),
          flush=True)
    record.metrics.update(after)
    session = ctx.open_session()
    if session is not None:
        base_metrics = {f"base_{k}": v for k, v in (before or {}).items()}
        session.log_metrics({**after, **base_metrics}, step=last_step(record))
    record.stage_update("eval", "passed", metrics=after, metrics_before=before)


def preference_table(before: dict[str, float] | None, after: dict[str, float], title: str) -> str:
    from thinker.evaluation.preference import PREFERENCE_METRICS

    lines = [title, f"{'metric':<22}{'before':>10}{'after':>10}"]
    for name in [*PREFERENCE_METRICS, *(k for k in after if k.startswith("pref_reward_"))]:
        was = f"{before[name]:>10.4f}" if before and name in before else f"{'-':>10}"
        lines.append(f"{name:<22}{was}{after[name]:>10.4f}")
    return "\n".join(lines)
