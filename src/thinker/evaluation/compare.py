"""Before and after: the untrained base scored exactly like the trained weights, and the trivial floor.

A score means little alone: the embedded tiny model starts from random weights, and some metrics pay out
without any skill (a sample with no gold evidence scores 1.0 on evidence match when the model predicts
none). So the eval stage also scores the base model the run started from (once per base model, eval set and
decoding: cached under models/eval_cache/) and what an empty answer would score (the floor), and marks a
metric that did not rise above its floor.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from thinker.evaluation.runner import evaluate

log = logging.getLogger("thinker")

CACHE_FOLDER = "eval_cache"


def floor_metrics(samples: list[Any], semantic: Any) -> dict[str, float]:
    """What an empty completion scores on these samples: the level a metric reaches without any skill."""
    return evaluate(samples, lambda prompts: [""] * len(prompts), semantic=semantic).metrics


def base_cache_key(cfg: Any, semantic_name: str) -> str:
    from thinker.paths import resolve_input
    from thinker.tracking.file_hashes import file_sha256
    from thinker.tracking.fingerprint import canonical_json, fingerprint_inputs

    ev = cfg.evaluation
    identity = {
        "model": fingerprint_inputs(cfg)["model"], "backend": str(cfg.backend.name),
        "claims": file_sha256(resolve_input(str(ev.claims_file))),
        "corpus": file_sha256(resolve_input(str(ev.corpus_file))), "max_samples": ev.max_samples,
        "decoding": {k: ev.decoding[k] for k in ev.decoding}, "seed": int(cfg.seed), "matcher": semantic_name,
    }
    return hashlib.sha256(canonical_json(identity).encode()).hexdigest()[:24]


def base_metrics(cfg: Any, backend: Any, samples: list[Any], semantic: Any, batch_size: int) -> dict[str, float] | None:
    """The base model's scores (None when the backend cannot name its base), from the cache when present."""
    from thinker.backends import TrainingReport
    from thinker.models.paths import models_dir
    from thinker.tracking.atomic import atomic_write_json

    weights = backend.base_weights(cfg)
    if weights is None:
        return None
    cache = models_dir() / CACHE_FOLDER / f"{base_cache_key(cfg, semantic.name)}.json"
    if cache.is_file():
        try:
            return json.loads(cache.read_text())["metrics"]
        except (OSError, ValueError, KeyError):
            log.warning("ignoring an unreadable evaluation cache entry %s", cache)
    log.info("evaluating the base model %s the same way (once; cached in %s)", weights.uri, cache.parent)
    generate = backend.sampler(TrainingReport(backend=backend.name, weights=weights), cfg)
    metrics = evaluate(samples, generate, semantic=semantic, batch_size=batch_size).metrics
    atomic_write_json(cache, {"weights": weights.uri, "metrics": metrics})
    return metrics
