"""The provider adapter contract: capabilities, validate, translate, start, status (docs/decisions/0003-universal-job-configuration.md).

A hosted provider is one config file (`conf/provider/<name>.yaml`, whose `_target_` names the adapter class)
and one module here. The adapter only knows its provider's API; the flow around it (upload, reattach, poll,
mirror into MLflow, record) is thinker.providers.flow, the same for every provider.

Contract for a subclass:
- `capabilities()`: what the provider supports (no network), shown by `thinker providers capabilities NAME`
  and used by the generic checks in `validate`;
- `validate(job)`: findings beyond the generic ones (no network); errors stop the run at config check;
- `translate(job, files)`: the create-job payload (plain kwargs for the SDK call; no network);
- `upload(path, purpose)`, `find_job(job)`, `create(payload, job)`, `status(job_id)`, `cancel(job_id)`,
  `chat(model, prompts, decoding)`: the SDK calls. `start(job, files)` combines find/translate/create.

Providers reached through an official SDK subclass thinker.providers.sdk_adapter.SdkAdapter, which makes
these calls' clients and errors the same for all of them. SDK imports happen inside methods: instantiating an adapter (at config check) imports nothing heavy. Keys are
read from the environment when a client is made and never stored in anything that is logged or recorded.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thinker.config.job_configuration import JobConfiguration
from thinker.errors import ThinkerError
from thinker.providers import checks
from thinker.providers.capabilities import Capabilities, Finding

# the metadata key / name fragment that ties a provider job to the config that made it (re-launches reattach)
FINGERPRINT_KEY = "thinker_fingerprint"


class JobState(enum.StrEnum):
    """The universal job status; every provider's own states map onto these."""

    queued = "queued"  # accepted, waiting (validating files, in the queue)
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.succeeded, JobState.failed, JobState.cancelled)


@dataclass(frozen=True)
class UploadedFiles:
    training_file_id: str
    validation_file_id: str | None = None


@dataclass(frozen=True)
class JobHandle:
    job_id: str
    reattached: bool = False  # an existing job of this config was found; nothing new was created


@dataclass(frozen=True)
class JobEvent:
    event_id: str  # stable across polls, so the flow mirrors each event once
    created_at: float  # unix seconds
    message: str
    level: str = "info"


@dataclass
class JobStatus:
    """A job's status: cumulative (every event and step metric so far); the flow de-duplicates."""

    job_id: str
    state: JobState
    provider_state: str  # the provider's own word for it, shown in the progress line
    progress: float | None = None  # 0..1 where the provider reports it
    model_id: str | None = None  # the fine-tuned model, once it exists
    error: str | None = None  # why the job failed, in the provider's words
    events: list[JobEvent] = field(default_factory=list)
    # optimizer step -> metric name -> value, in the flow's names (train_loss, val_loss, ...)
    metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    total_steps: int | None = None
    trained_tokens: int | None = None
    estimated_finish: float | None = None  # unix seconds, where the provider predicts it (OpenAI)


class ProviderUnreachable(Exception):
    """A status or list call failed after the SDK's own retries (dropped connection, timeout, 5xx): the flow
    waits and polls again, up to provider.max_wait, instead of failing the run."""


class CreateOutcomeUnknown(Exception):
    """The create request may or may not have made a job (its response was lost): look again before retrying."""


class ProviderAdapter:
    """Base class: keeps the provider config's keys; the generic checks read `capabilities()`."""

    def __init__(self, name: str, api_key_env: str | None = None, required_env: Sequence[str] = (),
                 base_url: str | None = None, base_url_env: str | None = None, base_model: str | None = None,
                 poll_interval: float = 30.0, max_wait: float = 86400.0, options: Mapping[str, Any] | None = None,
                 job: Any = None, integrations: Any = None, hardware: Any = None, metadata: Any = None):
        # job, integrations, hardware and metadata reach the provider through job_configuration(cfg)
        self.name = name
        self.api_key_env = api_key_env
        self.required_env = list(required_env)
        self.base_url_setting = base_url
        self.base_url_env = base_url_env
        self.base_model = base_model
        self.poll_interval = float(poll_interval)
        self.max_wait = float(max_wait)
        self.options = dict(options or {})

    # ------------------------------------------------------------------ settings

    def base_url(self) -> str | None:
        """provider.base_url, else the SDK's own variable, else None (the SDK's default)."""
        if self.base_url_setting:
            return str(self.base_url_setting)
        if self.base_url_env and os.environ.get(self.base_url_env):
            return os.environ[self.base_url_env]
        return None

    def api_key(self) -> str:
        return os.environ.get(str(self.api_key_env), "").strip()

    def integration_key(self, integration: str) -> str:
        """The key an integration logs with (capabilities' integration_keys names its variable), for the create
        request only: it is never recorded."""
        return os.environ.get(self.capabilities().integration_keys.get(integration, ""), "")

    def sdk_module(self) -> str | None:
        """The import name of the provider's SDK (checked at config check without importing it)."""
        return None

    # ------------------------------------------------------------------ the adapter contract

    def capabilities(self) -> Capabilities:
        raise NotImplementedError

    def validate(self, job: JobConfiguration) -> list[Finding]:
        """Generic checks against capabilities(); subclasses extend with `super().validate(job) + [...]`."""
        return checks.generic_findings(self.capabilities(), job)

    def translate(self, job: JobConfiguration, files: UploadedFiles) -> dict[str, Any]:
        raise NotImplementedError

    def start(self, job: JobConfiguration, files: UploadedFiles, fingerprint: str) -> JobHandle:
        """Reattach to this config's job if the provider has one, else create it; a create whose response was
        lost is looked up again before it is retried, so a job is never paid for twice."""
        existing = self.find_job(job, fingerprint)
        if existing is not None:
            return JobHandle(existing, reattached=True)
        payload = self.translate(job, files)
        try:
            return JobHandle(self.create(payload, job, fingerprint))
        except CreateOutcomeUnknown:
            existing = self.find_job(job, fingerprint)
            if existing is not None:
                return JobHandle(existing, reattached=True)
            return JobHandle(self.create(payload, job, fingerprint))

    def status(self, job_id: str) -> JobStatus:
        """The job's state, events and step metrics; ProviderUnreachable for a transient failure."""
        raise NotImplementedError

    # ------------------------------------------------------------------ SDK calls

    def upload(self, path: Path, purpose: str) -> str:
        """Upload a prepared file (purpose: "train" or "validation"); returns the provider's file id."""
        raise NotImplementedError

    def find_job(self, job: JobConfiguration, fingerprint: str) -> str | None:
        """The id of a job this config already made (queued, running or succeeded), else None."""
        raise NotImplementedError

    def create(self, payload: dict[str, Any], job: JobConfiguration, fingerprint: str) -> str:
        """Create the job; raise CreateOutcomeUnknown when the response was lost (timeout, dropped connection)."""
        raise NotImplementedError

    def cancel(self, job_id: str) -> None:
        raise NotImplementedError

    def chat(self, model: str, prompts: list[Any], decoding: Mapping[str, Any], seed: int) -> list[str]:
        """One chat completion per prompt, with evaluation.decoding's settings: a text is sent as a single user
        message, a conversation (a list of {"role", "content"} messages) as its messages."""
        raise NotImplementedError

    def deploy(self, model: str) -> str:
        """Make `model` callable for chat (a paid deployment); returns the name to call. Default: as is."""
        return model

    def undeploy(self, model: str) -> None:
        """Remove what deploy() made."""

    # ------------------------------------------------------------------ helpers

    def scrub(self, text: str) -> str:
        """`text` with the API key replaced, for anything that quotes a provider's answer."""
        key = self.api_key()
        return text.replace(key, "***") if key else text

    def refuse_if_unavailable(self) -> None:
        caps = self.capabilities()
        if not caps.available:
            alternatives = ", ".join(f"provider={a}" for a in caps.alternatives) or "backend=local"
            raise ThinkerError(f"provider={self.name} runs no fine-tuning jobs: {caps.unavailable_reason}",
                               "provider", f"use {alternatives} (thinker providers list)")
