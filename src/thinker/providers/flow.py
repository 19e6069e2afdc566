"""One hosted fine-tuning job, the same way for every provider:

    convert the data -> reattach to this config's job, or upload and create it -> poll with a progress line
    -> mirror events and per-step metrics into the MLflow run -> the fine-tuned model id

A job is never paid for twice: the project's jobs ledger and the provider itself (adapter.find_job, by the
config fingerprint) are asked before anything is uploaded, and a create whose response was lost is looked up
again before it is retried (ProviderAdapter.start). A launcher killed while polling leaves the job running;
the same command reattaches to it. `<run>/provider/job.json` always says where the job stands.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from thinker.backends import TrainingReport, WeightsRef
from thinker.config.job_configuration import job_configuration, job_configuration_dict
from thinker.errors import ThinkerError
from thinker.providers import jobs_ledger
from thinker.providers.adapter import (
    CreateOutcomeUnknown,
    JobState,
    JobStatus,
    ProviderAdapter,
    ProviderUnreachable,
    UploadedFiles,
)
from thinker.providers.job_status import create_result, status_document
from thinker.providers.upload_format import prepare_upload
from thinker.tracking.atomic import append_json_line, atomic_write_json

log = logging.getLogger("thinker")

SCHEME = "provider://"  # weights: provider://<provider>/<model id>
JOB_FILE = Path("provider") / "job.json"


def weights_uri(provider: str, model_id: str, scheme: str = SCHEME) -> str:
    return f"{scheme}{provider}/{model_id}"


def parse_weights(uri: str, scheme: str = SCHEME) -> tuple[str, str]:
    """(provider, model id) of a weights_uri (provider://, or another scheme such as the base model's)."""
    if not uri.startswith(scheme) or "/" not in uri[len(scheme):]:
        raise ThinkerError(f"{uri} is not a hosted provider's model", "backend=provider",
                           "evaluate it with the backend that trained it", stage="eval")
    provider, model_id = uri[len(scheme):].split("/", 1)
    return provider, model_id


class JobFile:
    """`<run>/provider/job.json`: the universal job configuration, files, job id and latest state (no secrets)."""

    def __init__(self, run_dir: Path, content: dict[str, Any]):
        self.path = run_dir / JOB_FILE
        self.content = content

    def update(self, **fields: Any) -> None:
        """Write the file when a field changed (polling repeats the same state for hours)."""
        if self.path.is_file() and all(self.content.get(k) == v for k, v in fields.items()):
            return
        self.content.update(fields)
        atomic_write_json(self.path, self.content)


class ProviderJobRun:
    def __init__(self, cfg: DictConfig, run_dir: Path, tracker: Any, adapter: ProviderAdapter, fingerprint: str):
        self.cfg, self.run_dir, self.tracker, self.adapter = cfg, run_dir, tracker, adapter
        self.fingerprint = fingerprint
        self.job = job_configuration(cfg)
        self.name = adapter.name
        self.job_file = JobFile(run_dir, {"provider": self.name, "fingerprint": fingerprint,
                                          "job_configuration": job_configuration_dict(self.job)})
        self.logged_steps: set[int] = set()
        self.seen_events: set[str] = set()
        self.events_path = run_dir / "provider" / "events.jsonl"
        self.last_line = ""

    # ------------------------------------------------------------------ submit

    def submit(self) -> tuple[str, bool]:
        """(job id, reattached): this config's running or finished job if one exists, else a new one."""
        known = jobs_ledger.find(self.name, self.fingerprint)
        if known is not None:
            log.info("provider=%s: this config already has job %s (started from %s); reattaching", self.name,
                     known.job_id, known.run_dir)
            return known.job_id, True
        caps = self.adapter.capabilities()
        upload = prepare_upload(self.cfg, self.run_dir, caps)
        self.job_file.update(upload={"train_examples": upload.train_examples,
                                     "validation_examples": upload.validation_examples})
        existing = self.adapter.find_job(self.job, self.fingerprint)
        if existing is not None:
            log.info("provider=%s already runs job %s for this config; reattaching (nothing uploaded)",
                     self.name, existing)
            return existing, True
        log.info("provider=%s: uploading %d training and %d validation examples", self.name,
                 upload.train_examples, upload.validation_examples)
        files = UploadedFiles(self.adapter.upload(upload.train, "train"),
                              self.adapter.upload(upload.validation, "validation") if upload.validation else None)
        self.job_file.update(files=asdict(files))
        handle = self.adapter.start(self.job, files, self.fingerprint)
        return handle.job_id, handle.reattached

    # ------------------------------------------------------------------ poll

    def poll(self, job_id: str) -> JobStatus:
        deadline = time.monotonic() + self.adapter.max_wait
        outage_since: float | None = None
        while True:
            try:
                status = self.adapter.status(job_id)
            except ProviderUnreachable as error:
                if outage_since is None:
                    outage_since = time.monotonic()
                    print(f"[provider] {self.name} {job_id}: lost contact ({error}); polling again every "
                          f"{self.adapter.poll_interval:g} s", flush=True)
            else:
                if outage_since is not None:
                    print(f"[provider] {self.name} {job_id}: back after {time.monotonic() - outage_since:.0f} s",
                          flush=True)
                    outage_since = None
                self.mirror(status)
                if status.state.finished:
                    return status
            if time.monotonic() > deadline:
                raise ThinkerError(
                    f"provider={self.name} job {job_id} has not finished after provider.max_wait="
                    f"{self.adapter.max_wait:g} s (it keeps running there)", "provider.max_wait",
                    "run the same command again to reattach to it, or see it with thinker jobs status " + job_id,
                    stage="train")
            time.sleep(self.adapter.poll_interval)

    def mirror(self, status: JobStatus) -> None:
        """New events to the log and events.jsonl, new step metrics to MLflow, one progress line on change."""
        new_events = [e for e in status.events if e.event_id not in self.seen_events]
        for event in new_events:
            self.seen_events.add(event.event_id)
            append_json_line(self.events_path, asdict(event))
            log.info("[%s] %s", self.name, event.message)
        for step in sorted(s for s in status.metrics if s not in self.logged_steps):
            self.logged_steps.add(step)
            if self.tracker is not None and status.metrics[step]:
                self.tracker.log_metrics(status.metrics[step], step=step)
        line = progress_line(self.name, status)
        if line != self.last_line:
            print(line, flush=True)
            self.last_line = line
        self.job_file.update(state=str(status.state), provider_state=status.provider_state,
                             model_id=status.model_id, error=status.error,
                             status=status_document(self.name, status, run_dir=str(self.run_dir),
                                                    estimated_usd=self.estimate()[0]))

    # ------------------------------------------------------------------ whole job

    def run(self) -> TrainingReport:
        self.job_file.update(state="submitting")
        try:
            job_id, reattached = self.submit()
        except (ProviderUnreachable, CreateOutcomeUnknown) as error:
            raise ThinkerError(f"provider={self.name} could not be reached while submitting the job ({error})",
                               f"provider={self.name}", "launch the same command again: a job that was made is "
                               "found and reattached to, never created twice", stage="train") from error
        usd, seconds = self.estimate()
        cost = f", estimated ${usd:,.4f}" if usd is not None else ""
        print(f"[provider] {self.name} job {job_id} {'reattached' if reattached else 'created'} "
              f"(base model {self.job.model.base_model}, method={self.job.method.type}{cost})", flush=True)
        self.job_file.update(job_id=job_id, reattached=reattached,
                             create_result=create_result(str(self.run_dir), job_id, usd, seconds, reattached))
        self.ledger(job_id, "queued")
        if self.tracker is not None:
            self.tracker.set_tags({"provider": self.name, "provider_job_id": job_id,
                                   "provider_base_model": self.job.model.base_model,
                                   "provider_reattached": str(reattached).lower()})
            self.tracker.log_artifact(self.job_file.path, "provider")
        status = self.poll(job_id)
        self.ledger(job_id, str(status.state), status.model_id)
        if self.tracker is not None and self.events_path.is_file():
            self.tracker.log_artifact(self.events_path, "provider")
        if status.state is not JobState.succeeded or not status.model_id:
            raise no_model_error(self.name, job_id, status)
        return self.report(job_id, reattached, status)

    def report(self, job_id: str, reattached: bool, status: JobStatus) -> TrainingReport:
        metrics: dict[str, float] = {}
        for step in sorted(status.metrics):
            metrics.update(status.metrics[step])  # the last value of each metric
        steps = max(status.metrics) if status.metrics else status.total_steps
        if steps:
            metrics["optimizer_steps"] = float(steps)
        if status.trained_tokens:
            metrics["trained_tokens"] = float(status.trained_tokens)
        return TrainingReport(
            backend="provider", weights=WeightsRef(weights_uri(self.name, status.model_id)), metrics=metrics,
            extra={"provider": self.name, "provider_job_id": job_id, "reattached": reattached,
                   "provider_model_id": status.model_id, "job_configuration": self.job_file.content[
                       "job_configuration"], "run_dir": str(self.run_dir)})

    def ledger(self, job_id: str, state: str, model_id: str | None = None) -> None:
        usd, seconds = self.estimate()
        jobs_ledger.append(jobs_ledger.JobEntry(self.name, job_id, self.fingerprint, str(self.run_dir),
                                                self.job.model.base_model, state, model_id, estimated_usd=usd,
                                                estimated_seconds=seconds,
                                                created_at=time.time() if state == "queued" else None))

    def estimate(self) -> tuple[float | None, float | None]:
        """(USD, seconds) the config check estimated for this run (its record's cost.estimate; docs/costs.md)."""
        from thinker.tracking.run_record import RECORD_NAME, read_record

        try:
            estimate = (read_record(self.run_dir / RECORD_NAME).get("cost") or {}).get("estimate") or {}
        except (OSError, ValueError):
            return None, None
        return estimate.get("usd"), estimate.get("seconds")


def no_model_error(provider: str, job_id: str, status: JobStatus) -> ThinkerError:
    """Why a finished job gave no model, in words that fit how it ended. A failed or cancelled job is never
    reattached (each adapter's find_job), so launching again creates a new one."""
    if status.state is JobState.cancelled:
        return ThinkerError(f"provider={provider} job {job_id} was cancelled ({status.provider_state}) before it "
                            "produced a model", f"provider={provider}",
                            "launch again to start a new job (a cancelled job is never reattached)", stage="train")
    reason = status.error or f"it ended {status.provider_state}"
    ended = "failed" if status.state is JobState.failed else f"ended {status.provider_state} without a model"
    return ThinkerError(f"provider={provider} job {job_id} did not produce a model: {reason}", f"provider={provider}",
                        f"fix what the provider reports and launch again (a new job is created, since this one "
                        f"{ended})", stage="train")


def progress_line(provider: str, status: JobStatus) -> str:
    parts = [f"[provider] {provider} {status.job_id}: {status.provider_state}"]
    if status.metrics:
        step = max(status.metrics)
        total = f"/{status.total_steps}" if status.total_steps else ""
        parts.append(f"step {step}{total}")
        loss = status.metrics[step].get("train_loss")
        if loss is not None:
            parts.append(f"train_loss {loss:.4f}")
    if status.progress is not None:
        parts.append(f"{100 * status.progress:.0f}%")
    return ", ".join(parts)


def train_on_provider(cfg: DictConfig, run_dir: Path, tracker: Any, adapter: ProviderAdapter) -> TrainingReport:
    from thinker.tracking.fingerprint import config_fingerprint

    return ProviderJobRun(cfg, run_dir, tracker, adapter, config_fingerprint(cfg)).run()
