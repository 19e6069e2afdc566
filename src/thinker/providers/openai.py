"""OpenAI's hosted fine-tuning (`backend=provider provider=openai`) through the official `openai` SDK.

What OpenAI offers (its API reference / OpenAPI spec, which the SDK is generated from):
- supervised fine-tuning of whole GPT models (`method={"type": "supervised"}`): thinker's method=full; there is
  no LoRA/QLoRA choice;
- three hyperparameters: `n_epochs` (1-50), `batch_size` (1-256, examples per optimizer step) and
  `learning_rate_multiplier` (> 0, a factor on OpenAI's own, unpublished base rate). Everything else (schedule,
  warmup, weight decay, clipping, sequence length) is OpenAI's choice;
- fine-tuned models are called serverless through chat completions (no deployment);
- OpenAI is winding self-serve fine-tuning down: new jobs stop being accepted on 2027-01-06 (earlier for
  organisations that have not used it recently); a 403 on create says so.

How thinker's settings map:
- trainer.epochs -> n_epochs; trainer.batch_size x trainer.grad_accum -> batch_size (the examples per update,
  which is what OpenAI's batch size is); seed -> seed;
- optimizer.lr is NOT sent: OpenAI does not publish the base rate its multiplier scales, so no honest
  conversion exists. provider.options.learning_rate_multiplier is sent when set; otherwise OpenAI picks it
  ("auto"). validate() warns either way;
- the config's fingerprint goes into the job's `metadata` (thinker_fingerprint); find_job lists jobs with the
  `metadata[thinker_fingerprint]=<fp>` filter and checks the returned metadata too.

Metric names (events of type "metrics"): train_loss -> train_loss, train_mean_token_accuracy -> train_accuracy,
valid_loss (one validation batch) -> val_batch_loss, valid_mean_token_accuracy -> val_batch_accuracy,
full_valid_loss (the whole validation file, at epoch ends) -> val_loss, full_valid_mean_token_accuracy ->
val_accuracy.

The SDK is imported inside the methods that call the API: capabilities/validate/translate import nothing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from thinker.config.job_configuration import JobConfiguration
from thinker.errors import ThinkerError
from thinker.providers.adapter import FINGERPRINT_KEY, JobEvent, JobState, JobStatus, UploadedFiles
from thinker.providers.capabilities import (
    Capabilities,
    Finding,
    ParameterDefinition,
    PreferenceSupport,
    narrowed,
)
from thinker.providers.checks import is_preference
from thinker.providers.job_fields import (
    base_model_of,
    examples_per_step,
    live_words,
    options_of,
    state_of,
    step_progress,
    wandb_fields,
)
from thinker.providers.sdk_adapter import CREATE_JOB, SdkAdapter

# OpenAI's supervised fine-tuning snapshots (its model-optimization guide); `ft:` models (earlier fine-tunes)
# train further. Refused otherwise at config check: OpenAI stops adding models as it winds fine-tuning down,
# and a wrong id would otherwise fail only after the upload.
SUPERVISED_MODELS = ("gpt-4.1-2025-04-14", "gpt-4.1-mini-2025-04-14", "gpt-4.1-nano-2025-04-14",
                     "gpt-4o-2024-08-06", "gpt-4o-mini-2024-07-18", "gpt-3.5-turbo-0125")
# the snapshots OpenAI's DPO guide lists ("Direct preference optimization": use with), and ft: models
DPO_MODELS = ("gpt-4.1-2025-04-14", "gpt-4.1-mini-2025-04-14", "gpt-4.1-nano-2025-04-14")
DPO_BETA_MAX = 2.0  # FineTuneDPOHyperparameters.beta in OpenAI's OpenAPI spec: a number in (0, 2], or auto
# OpenAI's published bounds (FineTuneSupervisedHyperparameters in its OpenAPI spec)
OPENAI_EPOCHS = (1, 50)
OPENAI_BATCH = (1, 256)
MULTIPLIER_MAX = 10.0  # thinker's bound: OpenAI's own (auto) multipliers are well below 1; 10+ is a typo
SUFFIX_MAX = 64
MIN_EXAMPLES = 10  # "The minimum number of examples you can provide for fine-tuning is 10"
MAX_FILE_BYTES = 512 * 1024 * 1024  # the Files API's per-file limit (512 MB)
ALTERNATIVES = ["together", "fireworks"]

STATES = {"validating_files": JobState.queued, "queued": JobState.queued, "running": JobState.running,
          "succeeded": JobState.succeeded, "failed": JobState.failed, "cancelled": JobState.cancelled}
LIVE_STATES = live_words(STATES)  # a job find_job may reattach to
METRIC_NAMES = {"train_loss": "train_loss", "train_mean_token_accuracy": "train_accuracy",
                "valid_loss": "val_batch_loss", "valid_mean_token_accuracy": "val_batch_accuracy",
                "full_valid_loss": "val_loss", "full_valid_mean_token_accuracy": "val_accuracy"}
STEP_OF_MESSAGE = re.compile(r"^Step (\d+)/(\d+)")
SCHEDULE_NOTE = "OpenAI uses its own learning-rate schedule (not published, not configurable)"
KEY_PATTERN = re.compile(r"sk-[A-Za-z0-9_\-*.]+")
FIND_SCAN_LIMIT = 1000  # jobs looked at by find_job (the metadata filter normally returns only this config's)


class OpenAIAdapter(SdkAdapter):
    """provider=openai: supervised (full) fine-tuning of GPT models, evaluated serverless."""

    label, sdk_name, client_class = "OpenAI", "openai", "OpenAI"
    keys_page = "https://platform.openai.com/api-keys"
    key_pattern = KEY_PATTERN  # OpenAI's key errors quote part of the key
    create_timeout = 60.0  # seconds (tests lower it)
    upload_timeout = 600.0
    chat_timeout = 120.0
    read_retries = 3
    max_tokens_key = "max_completion_tokens"
    events_page = 100  # events per list call (the API's default is 20)

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        # per job: events seen so far (oldest first), step metrics, total steps, checkpoint events (once done)
        self._events: dict[str, list[JobEvent]] = {}
        self._metrics: dict[str, dict[int, dict[str, float]]] = {}
        self._total_steps: dict[str, int] = {}
        self._checkpoints: dict[str, list[JobEvent]] = {}
        self._seen: dict[str, set[str]] = {}  # every event id recorded (metrics events included)

    # ------------------------------------------------------------------ capabilities and checks (no network)

    def capabilities(self) -> Capabilities:
        return Capabilities(
            provider=self.name,
            available=True,
            supported_methods=["full"],
            parameter_ranges={"trainer.epochs": narrowed("trainer.epochs", *OPENAI_EPOCHS),
                              "trainer.batch_size": narrowed("trainer.batch_size", *OPENAI_BATCH)},
            refused_keys={"trainer.max_steps": "OpenAI trains whole epochs (n_epochs): choose trainer.epochs",
                          "optimizer.scheduler.type": SCHEDULE_NOTE},
            ignored_keys={
                "trainer.max_seq_length": "OpenAI has no sequence-length setting (each example trains whole, up "
                                          "to the base model's own training context)",
                "trainer.save_total_limit": "OpenAI keeps a checkpoint of each of the job's last 3 epochs itself",
                "trainer.evaluations": "OpenAI scores the validation file on its own schedule "
                                       "(trainer.evaluations=0 uploads no validation file)",
                "optimizer.weight_decay": "OpenAI has no weight-decay setting",
                "optimizer.max_grad_norm": "OpenAI has no gradient-clipping setting",
                "optimizer.scheduler.warmup_ratio": SCHEDULE_NOTE,
                "optimizer.scheduler.min_lr_ratio": SCHEDULE_NOTE,
                "optimizer.scheduler.cycles": SCHEDULE_NOTE,
            },
            custom_parameters={
                "learning_rate_multiplier": ParameterDefinition(
                    "number", "OpenAI's learning_rate_multiplier, a factor on OpenAI's own base rate (unset: "
                    "OpenAI chooses it); optimizer.lr is not sent", min=0.0, max=MULTIPLIER_MAX),
                "suffix": ParameterDefinition(
                    "string", f"up to {SUFFIX_MAX} characters added to the fine-tuned model's name "
                    "(ft:<base>:<org>:<suffix>:<id>)"),
            },
            serverless_inference=["full"],
            integrations=["wandb"],  # OpenAI holds the W&B key in the organisation's settings
            output_suffix=True,
            upload_format="chat_messages_jsonl",
            min_examples=MIN_EXAMPLES,
            max_file_bytes=MAX_FILE_BYTES,
            learning_rate_note=(
                "OpenAI takes learning_rate_multiplier, a factor on a base rate it does not publish, so "
                "optimizer.lr cannot be converted and is not sent: set provider.options.learning_rate_multiplier "
                "to choose the factor, otherwise OpenAI picks it (auto)."),
            alternatives=ALTERNATIVES,
            preference=PreferenceSupport(methods=["full"], losses=["sigmoid"], beta_min=0.0, beta_max=DPO_BETA_MAX,
                                         base_models=list(DPO_MODELS)),
            notes=[
                "OpenAI is winding self-serve fine-tuning down: since 2026-05-07 organisations that never "
                "fine-tuned cannot create jobs, since 2026-07-02 neither can those without fine-tuned-model "
                "inference in the last 60 days, and from 2027-01-06 no new jobs are accepted (inference on "
                "fine-tuned models continues until the base model is retired). A refused create names "
                "provider=together or provider=fireworks.",
                f"OpenAI accepts n_epochs {OPENAI_EPOCHS[0]}-{OPENAI_EPOCHS[1]} and batch_size "
                f"{OPENAI_BATCH[0]}-{OPENAI_BATCH[1]}; thinker's universal ranges are narrower and apply.",
                "batch_size sent = trainer.batch_size x trainer.grad_accum (OpenAI's batch is the examples per "
                "optimizer step).",
                f"base models: {', '.join(SUPERVISED_MODELS)}, or an ft: model to train further.",
                "metrics: train_loss, train_accuracy, val_batch_loss/val_batch_accuracy (one validation batch), "
                "val_loss/val_accuracy (the whole validation file, at epoch ends).",
                "method=full means OpenAI's supervised fine-tuning; OpenAI does not say which weights it updates.",
                "objective=dpo is OpenAI's DPO job (method type dpo) with objective.beta as its beta, in (0, 2]: "
                f"whole-model, sigmoid loss only, on {', '.join(DPO_MODELS)} or an ft: model (a DPO job is "
                "best run on a supervised fine-tune of the same data).",
            ],
        )

    def validate(self, job: JobConfiguration) -> list[Finding]:
        generic = [f for f in super().validate(job) if f.key != "method"]  # ours says why (OpenAI's own way)
        return (method_findings(job) + generic + model_findings(job, self.base_model) + batch_findings(job)
                + schedule_findings(job) + rate_findings(job) + suffix_findings(job))

    def translate(self, job: JobConfiguration, files: UploadedFiles) -> dict[str, Any]:
        options = options_of(job)
        hyperparameters: dict[str, Any] = {"n_epochs": int(job.schedule.epochs),
                                           "batch_size": examples_per_step(job)}
        if options.get("learning_rate_multiplier") is not None:
            hyperparameters["learning_rate_multiplier"] = float(options["learning_rate_multiplier"])
        method = "supervised"
        if is_preference(job):  # OpenAI's DPO job: the same hyperparameters plus beta
            method, hyperparameters["beta"] = "dpo", float(job.objective.beta)
        payload: dict[str, Any] = {
            "model": base_model_of(job, self.base_model),
            "training_file": files.training_file_id,
            "seed": int(job.seed),
            "method": {"type": method, method: {"hyperparameters": hyperparameters}},
        }
        if files.validation_file_id:
            payload["validation_file"] = files.validation_file_id
        suffix = options.get("suffix") or job.output.suffix  # provider.options.suffix, else output.name
        if suffix:
            payload["suffix"] = str(suffix)[:SUFFIX_MAX]
        wandb = wandb_fields(job, {"project": "project", "entity": "entity", "name": "name"})
        if wandb:
            payload["integrations"] = [{"type": "wandb", "wandb": wandb}]
        if job.passthrough:  # provider.metadata: parameters of OpenAI's API thinker does not declare
            payload["extra_body"] = dict(job.passthrough)
        return payload

    # ------------------------------------------------------------------ SDK calls

    def upload(self, path: Path, purpose: str) -> str:
        """Both files are uploaded with OpenAI's purpose "fine-tune"; the chat JSONL is OpenAI's own format."""
        with self.client(timeout=self.upload_timeout) as client:
            uploaded = self.call(lambda: client.files.create(file=Path(path), purpose="fine-tune"),
                                 f"upload {Path(path).name}")
        return str(uploaded.id)

    def find_job(self, job: JobConfiguration, fingerprint: str) -> str | None:
        def scan(client: Any) -> str | None:
            listed = client.fine_tuning.jobs.list(metadata={FINGERPRINT_KEY: fingerprint}, limit=100)
            for seen, item in enumerate(listed):
                if seen >= FIND_SCAN_LIMIT:
                    break
                if (item.metadata or {}).get(FINGERPRINT_KEY) == fingerprint and item.status in LIVE_STATES:
                    return str(item.id)  # newest first: the latest live job of this config
            return None

        return self.request(scan, "look for this config's job")

    def create(self, payload: dict[str, Any], job: JobConfiguration, fingerprint: str) -> str:
        body = {**payload, "metadata": {FINGERPRINT_KEY: fingerprint}}
        return self.create_once(lambda client: str(client.fine_tuning.jobs.create(**body).id))

    def status(self, job_id: str) -> JobStatus:
        with self.client() as client:
            job = self.call(lambda: client.fine_tuning.jobs.retrieve(job_id), f"read job {job_id}")
            self.call(lambda: self._fetch_events(client, job_id), f"read job {job_id}'s events")
            if job.status == "succeeded" and job_id not in self._checkpoints:
                self._checkpoints[job_id] = self.call(lambda: checkpoint_events(client, job_id),
                                                      f"read job {job_id}'s checkpoints")
        return self._job_status(job)

    def cancel(self, job_id: str) -> None:
        self.request(lambda client: client.fine_tuning.jobs.cancel(job_id), f"cancel job {job_id}")

    # ------------------------------------------------------------------ status pieces

    def _fetch_events(self, client: Any, job_id: str) -> None:
        """Add the events newer than the newest one seen (the API lists newest first); all or nothing."""
        seen = self._seen.setdefault(job_id, set())
        fresh = []
        for event in client.fine_tuning.jobs.list_events(job_id, limit=self.events_page):
            if event.id in seen:
                break
            fresh.append(event)
        for event in reversed(fresh):
            self._record(job_id, event)

    def _record(self, job_id: str, event: Any) -> None:
        self._seen.setdefault(job_id, set()).add(str(event.id))
        data = event.data if isinstance(event.data, dict) else {}
        if event.type == "metrics" and "step" in data:  # step metrics, not event lines
            step = int(data["step"])
            named = {METRIC_NAMES[k]: float(v) for k, v in data.items() if k in METRIC_NAMES and v is not None}
            self._metrics.setdefault(job_id, {}).setdefault(step, {}).update(named)
            total = data.get("total_steps") or steps_in_message(event.message)
            if total:
                self._total_steps[job_id] = int(total)
            return
        self._events.setdefault(job_id, []).append(
            JobEvent(str(event.id), float(event.created_at), str(event.message), str(event.level)))

    def _job_status(self, job: Any) -> JobStatus:
        job_id = str(job.id)
        metrics = {step: dict(values) for step, values in sorted(self._metrics.get(job_id, {}).items())}
        total = self._total_steps.get(job_id)
        state = state_of(STATES, str(job.status))  # an unknown word: still going (e.g. paused)
        progress = step_progress(state, max(metrics) if metrics else None, total)
        error = None
        if job.error is not None and job.error.message:
            error = f"{job.error.message} ({job.error.code})" if job.error.code else str(job.error.message)
        elif state is JobState.failed:
            error = "OpenAI reported no reason"
        return JobStatus(job_id=job_id, state=state, provider_state=str(job.status), progress=progress,
                         model_id=str(job.fine_tuned_model) if job.fine_tuned_model else None, error=error,
                         events=[*self._events.get(job_id, []), *self._checkpoints.get(job_id, [])],
                         metrics=metrics, total_steps=total, trained_tokens=job.trained_tokens,
                         estimated_finish=float(job.estimated_finish) if job.estimated_finish else None)

    # ------------------------------------------------------------------ OpenAI's own refusals

    def refusal(self, error: Any, what: str, stage: str, model: str | None = None,
                fix: str | None = None) -> ThinkerError:
        status = getattr(error, "status_code", None)
        if getattr(error, "code", None) == "insufficient_quota":
            return ThinkerError(f"OpenAI says the organisation's quota is used up (429) while trying to {what}",
                                f"provider={self.name}",
                                "add credit at https://platform.openai.com/settings/organization/billing",
                                stage=stage)
        if what == CREATE_JOB and status == 403:  # the wind-down: this organisation may not create jobs any more
            return ThinkerError(
                f"provider no longer accepts fine-tuning jobs for this organisation (OpenAI answered 403: "
                f"{self.message_of(error)})", f"provider={self.name}",
                f"use provider={' or provider='.join(ALTERNATIVES)} (OpenAI is winding self-serve fine-tuning "
                "down; no new jobs from 2027-01-06)", stage=stage)
        if status == 403:  # the key is valid, but its project may not do this
            return ThinkerError(f"OpenAI refused to {what} (403: {self.message_of(error)})",
                                f"provider={self.name}, {self.api_key_env}",
                                "check that the key's project may use fine-tuning and models", stage=stage)
        if what == CREATE_JOB and status not in (None, 401):
            return ThinkerError(f"OpenAI refused creating the fine-tuning job ({status}: {self.message_of(error)})",
                                f"provider={self.name}", fix or "fix what OpenAI names above", stage=stage)
        return super().refusal(error, what, stage, model, fix)


# ---------------------------------------------------------------- findings (no network)


def method_findings(job: JobConfiguration) -> list[Finding]:
    method = str(job.method.type)
    if method == "full":
        return []
    return [Finding("method", f"provider=openai does not train method={method}: OpenAI offers supervised "
                    "fine-tuning of whole models only (no LoRA/QLoRA choice)",
                    "use method=full, or provider=together / provider=fireworks for LoRA")]


def model_findings(job: JobConfiguration, configured: str | None) -> list[Finding]:
    model = base_model_of(job, configured)
    if is_preference(job):
        offered = ", ".join(DPO_MODELS)
        if not model or model in DPO_MODELS or model.startswith("ft:"):
            return [] if model else [Finding("provider.base_model", "provider=openai needs an OpenAI model id "
                                             "to fine-tune", f"set provider.base_model to one of {offered}")]
        return [Finding("provider.base_model", f"provider.base_model={model} is not a model OpenAI's DPO "
                        "fine-tuning accepts (OpenAI's DPO guide lists the GPT-4.1 snapshots)",
                        f"use one of {offered}, or an ft: model")]
    offered = ", ".join(SUPERVISED_MODELS)
    if not model:
        return [Finding("provider.base_model", "provider=openai needs an OpenAI model id to fine-tune",
                        f"set provider.base_model to one of {offered}")]
    if model in SUPERVISED_MODELS or model.startswith("ft:"):
        return []
    return [Finding("provider.base_model", f"provider.base_model={model} is not an OpenAI model that supervised "
                    "fine-tuning accepts (a dated snapshot or an ft: model)", f"use one of {offered}")]


def batch_findings(job: JobConfiguration) -> list[Finding]:
    batch = examples_per_step(job)
    low, high = OPENAI_BATCH
    if low <= batch <= high:
        return []
    return [Finding("trainer.batch_size", f"trainer.batch_size x trainer.grad_accum = {batch} examples per step "
                    f"is outside what provider=openai accepts, integer [{low}, {high}]",
                    f"set trainer.batch_size x trainer.grad_accum within integer [{low}, {high}]")]


def schedule_findings(job: JobConfiguration) -> list[Finding]:
    """Loss on prompts is refused rather than dropped (disabled is what OpenAI does anyway)."""
    if str(job.schedule.train_on_inputs) != "enabled":
        return []
    return [Finding("trainer.train_on_inputs", "trainer.train_on_inputs=enabled cannot be honoured: OpenAI trains "
                    "on the assistant's messages only", "use trainer.train_on_inputs=auto (or disabled, the same "
                    "at OpenAI)")]


def rate_findings(job: JobConfiguration) -> list[Finding]:
    multiplier = options_of(job).get("learning_rate_multiplier")
    lr = job.optimizer.learning_rate
    if multiplier is None:
        return [Finding("optimizer.lr", f"optimizer.lr={lr} is dropped: OpenAI scales its own unpublished base "
                        "rate, and chooses the factor itself unless provider.options.learning_rate_multiplier "
                        "is set", error=False)]
    found = [Finding("optimizer.lr", f"optimizer.lr={lr} is dropped: provider.options.learning_rate_multiplier="
                     f"{multiplier} is sent instead", error=False)]
    if isinstance(multiplier, int | float) and not isinstance(multiplier, bool) and multiplier == 0:
        found.append(Finding("provider.options.learning_rate_multiplier", "provider.options."
                             "learning_rate_multiplier=0 trains nothing (OpenAI needs a factor above 0)",
                             f"set a number in (0, {MULTIPLIER_MAX:g}]"))
    return found


def suffix_findings(job: JobConfiguration) -> list[Finding]:
    suffix = options_of(job).get("suffix")
    if suffix is None or 1 <= len(str(suffix)) <= SUFFIX_MAX:
        return []
    return [Finding("provider.options.suffix", f"provider.options.suffix is {len(str(suffix))} characters; "
                    f"OpenAI takes 1 to {SUFFIX_MAX}", f"shorten it to at most {SUFFIX_MAX} characters")]


# ---------------------------------------------------------------- small helpers


def steps_in_message(message: str) -> int | None:
    match = STEP_OF_MESSAGE.match(message or "")
    return int(match.group(2)) if match else None


def checkpoint_events(client: Any, job_id: str) -> list[JobEvent]:
    """The finished job's checkpoints (callable models of its last epochs), as events naming them."""
    return [JobEvent(str(c.id), float(c.created_at),
                     f"checkpoint at step {c.step_number}: {c.fine_tuned_model_checkpoint}")
            for c in sorted(client.fine_tuning.jobs.checkpoints.list(job_id, limit=100), key=lambda c: c.step_number)]
