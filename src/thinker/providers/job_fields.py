"""What every provider reads the same way: the universal job configuration's pieces its payload is built from
(base model, examples per step, provider.options, W&B settings, names made from the fingerprint) and the
plain values in a provider's answers (numbers, timestamps, step metrics, job states). A provider module keeps
only its own names for them (docs/decisions/0003-universal-job-configuration.md)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from thinker.config.job_configuration import JobConfiguration
from thinker.providers.adapter import JobState

# a job in one of these states is this config's job: a re-launch reattaches instead of paying again
LIVE = (JobState.queued, JobState.running, JobState.succeeded)


def options_of(job: JobConfiguration) -> dict[str, Any]:
    """provider.options (the provider's own parameters)."""
    return dict(job.metadata or {})


def base_model_of(job: JobConfiguration, configured: str | None = None) -> str | None:
    model = job.model.base_model or configured
    return str(model) if model else None


def examples_per_step(job: JobConfiguration) -> int:
    """trainer.batch_size x trainer.grad_accum: what a provider that batches by examples per update takes."""
    return int(job.schedule.batch_size) * int(job.schedule.gradient_accumulation or 1)


def wandb_fields(job: JobConfiguration, names: Mapping[str, str]) -> dict[str, Any]:
    """provider.integrations.wandb's settings that are set, under the provider's names ({} without a project)."""
    wandb = job.integrations.wandb
    if not wandb.project:
        return {}
    return {names[key]: value for key, value in vars(wandb).items() if key in names and value is not None}


def slug(text: str) -> str:
    """Lowercase letters, digits and dashes (the ids and names providers accept)."""
    return re.sub(r"[^0-9a-z-]+", "-", str(text).lower()).strip("-")


def fingerprint_tag(fingerprint: str, chars: int) -> str:
    """The fingerprint's first `chars` letters and digits."""
    return re.sub(r"[^0-9a-z]", "", str(fingerprint).lower())[:chars]


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def finite_number(value: Any) -> bool:
    return is_number(value) and math.isfinite(value)


def timestamp_of(value: Any) -> float | None:
    """Unix seconds from a datetime, a number or an ISO 8601 text; None when it is none of these."""
    if hasattr(value, "timestamp"):  # a datetime
        return value.timestamp()
    if is_number(value):
        return float(value)
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def add_step_metrics(metrics: dict[int, dict[str, float]], step: Any, values: Mapping[str, Any],
                     name_of: Callable[[str], str | None], keep: Callable[[Any], bool] = is_number) -> None:
    """Merge one row of a provider's step metrics into `metrics`: its values under the flow's names (train_loss,
    val_loss, ...; `name_of` gives None for what is not a metric), those `keep` accepts."""
    for key, value in values.items():
        name = name_of(key)
        if name and keep(value):
            metrics.setdefault(int(step), {})[name] = float(value)


def state_of(states: Mapping[str, JobState], word: str) -> JobState:
    """The universal state of a provider's word; a word newer than the table is still going (polling goes on)."""
    return states.get(word, JobState.running)


def live_words(states: Mapping[str, JobState]) -> frozenset[str]:
    """The provider's words for a job a re-launch reattaches to (queued, running or succeeded)."""
    return frozenset(word for word, state in states.items() if state in LIVE)


def step_progress(state: JobState, done: float | None, total: float | None) -> float | None:
    """1 once succeeded, else the share of steps done where the provider says how many there are."""
    if state is JobState.succeeded:
        return 1.0
    return min(1.0, done / total) if total and done is not None else None
