"""Fireworks AI: hosted LoRA supervised fine-tuning through the official `fireworks-ai` SDK (import `fireworks`).

What the adapter maps (Fireworks' Gateway REST API, https://docs.fireworks.ai/api-reference):
- data: each upload file becomes a Fireworks dataset (`datasets.create` + `datasets.upload`, the single-request
  path for files up to 150 MB) whose id is derived from the file's content (and names its example count), so an
  upload repeated by a re-launch finds the dataset it made before instead of making a second one;
- job: `supervised_fine_tuning_jobs.create` with a caller-chosen id, `thinker-<fingerprint prefix>`: a re-launch
  of the same config finds its job with one GET, and a create whose response was lost answers 409
  ALREADY_EXISTS when repeated, which means "it exists: reattach";
- status: the job's `state`, `status.message` and `jobProgress`; step metrics come from the job's
  `metricsFileSignedUrl` (a JSONL file of per-step values). The SFT API has no event list, so events are the
  job's own milestones (created, each state it was seen in, each epoch, the failure reason);
- objective=dpo: `dpo_jobs.create` (Fireworks' DPO API) with the same training settings and `lossConfig` DPO
  with objective.beta; its job ids are `thinker-dpo-<fingerprint prefix>`, so any later call knows the job's
  kind from its id alone (`thinker jobs status` included);
- eval: a LoRA fine-tune is served only on a dedicated deployment (Fireworks offers no serverless LoRA), so
  `deploy` creates one with the fine-tuned model as its base (a "live merge" deployment) and waits for it; the
  name to call is `<model>#<deployment>`.

The SDK is imported inside methods only: building the adapter, capabilities(), validate() and translate() import
nothing heavy. The API key is read from the environment when a client is made and never put into a message.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any

from thinker.config.job_configuration import JobConfiguration
from thinker.config.ranges import Range
from thinker.errors import ThinkerError
from thinker.providers.adapter import JobEvent, JobState, JobStatus, UploadedFiles
from thinker.providers.capabilities import Capabilities, Finding, ParameterDefinition, PreferenceSupport
from thinker.providers.checks import is_preference
from thinker.providers.job_fields import (
    LIVE,
    add_step_metrics,
    examples_per_step,
    fingerprint_tag,
    finite_number,
    options_of,
    slug,
    state_of,
    timestamp_of,
    wandb_fields,
)
from thinker.providers.sdk_adapter import SdkAdapter

ACCOUNT_ENV = "FIREWORKS_ACCOUNT_ID"
WANDB_KEY_ENV = "WANDB_API_KEY"
WANDB_NAMES = {"project": "project", "entity": "entity", "name": "run_id"}  # wandbConfig's names
MODEL_ID_CHARS = 63  # a Fireworks resource id: lowercase letters, digits and dashes
MAX_UPLOAD_BYTES = 150 * 1000 * 1000  # the single-request dataset upload takes files up to 150 MB
MIN_EXAMPLES = 3  # Fireworks refuses SFT datasets with fewer examples
FIREWORKS_MODELS = "accounts/fireworks/models/"

# Fireworks' job states -> the universal ones. Anything not listed (a state added later) counts as running, so
# the flow keeps polling instead of stopping on a job that is still alive.
STATES: dict[str, JobState] = {
    "JOB_STATE_UNSPECIFIED": JobState.queued,
    "JOB_STATE_CREATING": JobState.queued,
    "JOB_STATE_VALIDATING": JobState.queued,
    "JOB_STATE_PENDING": JobState.queued,
    "JOB_STATE_CREATING_INPUT_DATASET": JobState.queued,
    "JOB_STATE_RE_QUEUEING": JobState.queued,
    "JOB_STATE_IDLE": JobState.queued,
    "JOB_STATE_PAUSED": JobState.queued,
    "JOB_STATE_RUNNING": JobState.running,
    "JOB_STATE_WRITING_RESULTS": JobState.running,
    "JOB_STATE_CANCELLING": JobState.running,  # not finished until it reads CANCELLED
    "JOB_STATE_COMPLETED": JobState.succeeded,
    "JOB_STATE_EARLY_STOPPED": JobState.succeeded,  # training stopped early but wrote the model
    "JOB_STATE_FAILED": JobState.failed,
    "JOB_STATE_EXPIRED": JobState.failed,
    "JOB_STATE_CANCELLED": JobState.cancelled,
    "JOB_STATE_DELETING": JobState.cancelled,
    "JOB_STATE_DELETING_CLEANING_UP": JobState.cancelled,
    "JOB_STATE_DELETED": JobState.cancelled,
    "JOB_STATE_ARCHIVED": JobState.cancelled,
}

# metric names in Fireworks' metrics file -> the flow's names
METRICS: dict[str, str] = {
    "train/loss": "train_loss", "loss": "train_loss", "train_loss": "train_loss",
    "eval/loss": "val_loss", "eval_loss": "val_loss", "val/loss": "val_loss", "validation/loss": "val_loss",
    "train/mean_token_accuracy": "train_accuracy", "mean_token_accuracy": "train_accuracy",
    "eval/mean_token_accuracy": "val_accuracy",
    "train/learning_rate": "learning_rate", "train/lr": "learning_rate", "learning_rate": "learning_rate",
    "train/grad_norm": "grad_norm", "grad_norm": "grad_norm",
    "train/epoch": "epoch", "epoch": "epoch",
}

# Scheduler rule: Fireworks' lrScheduler has constant, linear and cosine (after `learningRateWarmupSteps` of
# warmup). Those four universal types translate exactly (constant_with_warmup = constant + warmup); polynomial
# has no Fireworks equivalent and is refused, and so is a cosine with cycles other than 0.5, because Fireworks'
# cosine anneals once from the peak to the floor (half a cycle) and anything else trains differently.
SCHEDULERS = ["constant", "constant_with_warmup", "linear", "cosine"]
HALF_COSINE = 0.5
DPO_BETA_MAX = 0.5  # Fireworks' DpoConfig.beta: "Must be > 0 and < 0.5"
DPO_TAG = "dpo-"  # job ids thinker-dpo-<fp>: a preference job (dpo_jobs), not a supervised one


class FireworksAdapter(SdkAdapter):
    """Fireworks AI supervised fine-tuning (LoRA) through `fireworks.Fireworks`."""

    label, sdk_name, client_class = "Fireworks", "fireworks", "Fireworks"
    keys_page = "https://app.fireworks.ai/settings/users/api-keys"
    create_backoff = (0.5, 8.0)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.examples: dict[str, int] = {}  # dataset name -> examples uploaded (upload() fills it)
        self._next_job_id: dict[str, str] = {}  # fingerprint -> the free job id find_job saw
        # job id -> state (or epoch) -> when this adapter first saw it: the milestones events are made of
        self._states: dict[str, dict[str, float]] = {}
        self._epochs: dict[str, dict[int, float]] = {}

    # ------------------------------------------------------------------ the adapter contract (docs/decisions/0003-universal-job-configuration.md)

    def capabilities(self) -> Capabilities:
        return Capabilities(
            provider=self.name,
            available=True,
            supported_methods=["lora"],  # Fireworks SFT trains LoRA adapters only
            supported_optimizations=["sequence_packing"],  # it packs short examples into each sequence itself
            supported_precisions=["bf16"],
            supported_schedulers=list(SCHEDULERS),
            parameter_ranges={
                "trainer.epochs": Range(1, 10, 3, "schedule.epochs", integer=True),
                "method.rank": Range(4, 128, 8, "lora.rank", integer=True),  # and a power of two
                "trainer.max_seq_length": Range(512, 33000, 2048, "schedule.sequenceLength", integer=True),
            },
            refused_keys={"trainer.max_steps": "Fireworks trains whole epochs: choose trainer.epochs"},
            ignored_keys={
                "optimizer.max_grad_norm": "Fireworks clips gradients itself (its API has no setting for it)",
                "method.alpha": "Fireworks sets the LoRA alpha itself (its API takes only the rank)",
                "method.dropout": "Fireworks' API has no LoRA dropout setting",
                "method.target_modules": "Fireworks chooses the adapted layers itself",
                "trainer.save_total_limit": "Fireworks keeps the final adapter; its checkpoints are its own",
            },
            custom_parameters={
                "is_turbo": ParameterDefinition(
                    "boolean", "turbo mode: Fireworks trains on faster (pricier) hardware", default=False),
                "region": ParameterDefinition(
                    "string", "the Fireworks region to train in, e.g. US_VIRGINIA_1 (the API refuses unknown ones)"),
                "lr_decay_ratio": ParameterDefinition(
                    "number", "fraction of the steps over which a linear/cosine schedule decays (0: all of them)",
                    default=0.0, min=0.0, max=1.0),
            },
            preference=PreferenceSupport(methods=["lora"], losses=["sigmoid"], beta_min=0.0, beta_max=DPO_BETA_MAX,
                                         beta_max_exclusive=True),
            integrations=["wandb"],  # its key: WANDB_API_KEY, added to the create request only
            integration_keys={"wandb": WANDB_KEY_ENV},
            output_suffix=True,  # output.name leads the fine-tuned model's id (output_model)
            serverless_inference=[],  # a LoRA fine-tune needs a dedicated deployment (evaluation.provider_deploy)
            upload_format="chat_messages_jsonl",
            min_examples=MIN_EXAMPLES,
            max_file_bytes=MAX_UPLOAD_BYTES,
            learning_rate_note="optimizer.lr is sent unchanged as Fireworks' learningRate (an absolute rate)",
            notes=[
                "batch size: trainer.batch_size x trainer.grad_accum examples become batchSizeSamples (Fireworks' "
                "Training V2 batches by samples and refuses gradientAccumulationSteps)",
                "warmup: optimizer.scheduler.warmup_ratio becomes learningRateWarmupSteps, counted from the "
                "uploaded examples, the batch and the epochs",
                "schedulers: constant, constant_with_warmup, linear and cosine (half a cycle) translate exactly; "
                "polynomial and cosine with other cycles are refused. Fireworks runs linear/cosine only for base "
                "models on its Training V2 path and refuses them at create for the others",
                "the job id is thinker-<config fingerprint prefix>: a re-launch of the same config reattaches",
                "events are the job's milestones (states, epochs, failure reason): the SFT API has no event log",
                "evaluating a fine-tune needs a paid dedicated deployment: set evaluation.provider_deploy=true",
                "objective=dpo is Fireworks' DPO job (lossConfig DPO, objective.beta in (0, 0.5)), LoRA: the same "
                "training settings; it takes no validation dataset and no learning-rate schedule (Fireworks' own)",
            ],
        )

    def validate(self, job: JobConfiguration) -> list[Finding]:
        return super().validate(job) + self._fireworks_findings(job)

    def translate(self, job: JobConfiguration, files: UploadedFiles) -> dict[str, Any]:
        """The kwargs of `client.supervised_fine_tuning_jobs.create` (create adds the job id and display name,
        which carry the config fingerprint)."""
        samples, options = examples_per_step(job), options_of(job)
        training: dict[str, Any] = {
            "base_model": model_name(str(job.model.base_model)), "epochs": int(job.schedule.epochs),
            "learning_rate": float(job.optimizer.learning_rate), "lora_rank": int(job.method.lora.rank),
            "max_context_length": int(job.schedule.sequence_length), "batch_size_samples": samples,
            "optimizer_weight_decay": float(job.optimizer.weight_decay),
            "learning_rate_warmup_steps": self._warmup_steps(job, files.training_file_id, samples)}
        if options.get("region"):
            training["region"] = str(options["region"])
        if is_preference(job):  # `client.dpo_jobs.create`: the same settings, under trainingConfig
            return {"dataset": files.training_file_id, "training_config": training,
                    "loss_config": {"method": "DPO", "dpo": {"beta": float(job.objective.beta)}}}
        payload: dict[str, Any] = {"dataset": files.training_file_id, **training}
        if files.validation_file_id:
            payload["evaluation_dataset"] = files.validation_file_id
        else:
            payload["eval_auto_carveout"] = False  # no validation split: train on every example
        if "is_turbo" in options:
            payload["is_turbo"] = bool(options["is_turbo"])
        # lrScheduler is in Fireworks' API but not in fireworks-ai 1.2.28's create(): it travels as extra body,
        # with provider.metadata (parameters of Fireworks' API thinker does not declare, as they are)
        payload["extra_body"] = {"lrScheduler": lr_scheduler(job, options.get("lr_decay_ratio")),
                                 **dict(job.passthrough or {})}
        wandb = wandb_fields(job, WANDB_NAMES)
        if wandb:
            payload["wandb_config"] = {"enabled": True, **wandb}
        return payload

    def status(self, job_id: str) -> JobStatus:
        remote = self.request(lambda client: jobs_api(client, job_id).get(job_id), f"read job {job_id}")
        provider_state = str(remote.state or "JOB_STATE_UNSPECIFIED")
        state = state_of(STATES, provider_state)
        progress = percent(getattr(remote, "job_progress", None))
        error = None
        if state == JobState.failed:
            error = (remote.status.message if remote.status else None) or provider_state
        return JobStatus(
            job_id=job_id,
            state=state,
            provider_state=provider_state,
            progress=1.0 if state == JobState.succeeded else progress,
            model_id=self._model_of(remote, job_id) if state == JobState.succeeded else None,
            error=error,
            events=self._events(job_id, remote, provider_state),
            metrics=self._metrics(self._metrics_url(remote, job_id, state)),
        )

    def _metrics_url(self, remote: Any, job_id: str, state: JobState) -> str | None:
        """A supervised job names its metrics file; a DPO job's comes from its metrics-file endpoint."""
        if not is_dpo_job(job_id):
            return remote.metrics_file_signed_url
        if state not in (JobState.running, JobState.succeeded):
            return None
        return self.request(lambda client: client.dpo_jobs.get_metrics_file_endpoint(job_id),
                            f"read job {job_id}'s metrics file").signed_url

    # ------------------------------------------------------------------ SDK calls

    def upload(self, path: Path, purpose: str) -> str:
        """A Fireworks dataset holding `path`; returns its name (accounts/<id>/datasets/<dataset id>)."""
        path = Path(path)
        data = path.read_bytes()
        examples = sum(1 for line in data.splitlines() if line.strip())
        dataset_id = dataset_id_of(data, examples, purpose)
        name = f"accounts/{self.account_id()}/datasets/{dataset_id}"
        with self.client() as client:
            if not self._dataset_ready(client, dataset_id, examples, path.name):
                self.call(lambda: client.datasets.upload(dataset_id, file=path), f"upload {path.name}")
        self.examples[name] = examples
        return name

    def find_job(self, job: JobConfiguration, fingerprint: str) -> str | None:
        """This config's live job: ids thinker-<fp>, thinker-<fp>-2, ... are tried in turn (a failed or cancelled
        job keeps its id, so the next launch takes the next one); the first free id is kept for create()."""
        with self.client() as client:
            for job_id in job_ids(fingerprint, is_preference(job)):
                remote = self._get_job(client, job_id)
                if remote is None:
                    self._next_job_id[fingerprint] = job_id
                    return None
                if state_of(STATES, str(remote.state)) in LIVE:
                    return job_id
        raise ThinkerError(f"every Fireworks job id for this config is taken ({job_id})", f"provider={self.name}",
                           "delete old thinker-* jobs (firectl supervised-fine-tuning-job delete) and re-launch",
                           stage="train")

    def create(self, payload: dict[str, Any], job: JobConfiguration, fingerprint: str) -> str:
        """One POST with the id find_job left free: a 409 (the id exists: an earlier create did land) is
        CreateOutcomeUnknown too, so start() looks the job up again."""
        dpo = is_preference(job)
        job_id = self._next_job_id.pop(fingerprint, None) or self._free_job_id(fingerprint, dpo)
        body = {"display_name": f"thinker {fingerprint[:32]}", **payload}
        if job.output.suffix and not dpo:  # the fine-tune's model id: output.name, then this job's id
            body["output_model"] = output_model_id(str(job.output.suffix), job_id)
        if "wandb_config" in body:  # the key from the environment, in this request only (never recorded)
            body["wandb_config"] = {**body["wandb_config"], "api_key": self.integration_key("wandb")}
        if dpo:
            return self.create_once(lambda client: job_id_of(client.dpo_jobs.create(dpo_job_id=job_id, **body).name)
                                    or job_id)
        return self.create_once(lambda client: job_id_of(client.supervised_fine_tuning_jobs.create(
            supervised_fine_tuning_job_id=job_id, **body).name) or job_id)

    def cancel(self, job_id: str) -> None:
        self.request(lambda client: jobs_api(client, job_id).cancel(job_id, body={}), f"cancel {job_id}")

    def deploy(self, model: str) -> str:
        """A dedicated deployment serving `model` (live merge of the LoRA into its base), waited for until
        READY; returns `<model>#<deployment name>`, the id chat calls it by."""
        from fireworks import ConflictError

        deployment_id = deployment_id_of(model)

        def create_deployment(client: Any) -> None:
            try:
                client.deployments.create(base_model=model, deployment_id=deployment_id, min_replica_count=1,
                                          max_replica_count=1, display_name=deployment_id)
            except ConflictError:
                pass  # made by an earlier launch: wait for that one

        with self.client("eval") as client:
            self.call(lambda: create_deployment(client), f"deploy {model}", "eval")
            deadline = time.monotonic() + self.max_wait
            while True:
                deployment = self.call(lambda: client.deployments.get(deployment_id),
                                       f"read deployment {deployment_id}", "eval")
                if deployment.state == "READY":
                    return f"{model}#{deployment.name or self._deployment_name(deployment_id)}"
                if deployment.state in ("FAILED", "DELETING", "DELETED") or time.monotonic() > deadline:
                    reason = (deployment.status.message if deployment.status else None) or deployment.state
                    raise ThinkerError(f"Fireworks deployment {deployment_id} did not become ready ({reason})",
                                       f"provider={self.name}", "check it in the Fireworks console, or set "
                                       "evaluation.provider_deploy=false to skip evaluation", stage="eval")
                time.sleep(self.poll_interval)

    def undeploy(self, model: str) -> None:
        """Delete the deployment deploy() made (given the model or the name deploy() returned)."""
        from fireworks import NotFoundError

        base, _, deployment = model.partition("#")
        deployment_id = deployment.rsplit("/", 1)[-1] if deployment else deployment_id_of(base)

        def delete(client: Any) -> None:
            try:
                client.deployments.delete(deployment_id)
            except NotFoundError:
                pass  # already gone

        self.request(delete, f"delete deployment {deployment_id}", "eval")

    # ------------------------------------------------------------------ validation

    def _fireworks_findings(self, job: JobConfiguration) -> list[Finding]:
        found: list[Finding] = []
        base = job.model.base_model
        if not base:
            found.append(Finding("provider.base_model", "provider=fireworks has no model id for this model",
                                 "set provider.base_model=accounts/fireworks/models/<id> (e.g. "
                                 "accounts/fireworks/models/qwen2p5-1p5b-instruct) or model.provider_models.fireworks"))
        elif "/" in str(base) and not str(base).startswith("accounts/"):
            found.append(Finding("provider.base_model", f"provider.base_model={base} is not a Fireworks model name",
                                 "use accounts/<account>/models/<id>, e.g. accounts/fireworks/models/"
                                 "qwen2p5-1p5b-instruct (https://fireworks.ai/models)"))
        rank = job.method.lora.rank
        if str(job.method.type) == "lora" and isinstance(rank, int) and rank > 0 and rank & (rank - 1):
            found.append(Finding("method.rank", f"method.rank={rank}: Fireworks trains LoRA ranks that are powers "
                                 "of two", "set method.rank to 4, 8, 16, 32, 64 or 128"))
        scheduler = job.optimizer.scheduler
        if str(scheduler.type) == "cosine" and scheduler.cycles is not None and scheduler.cycles != HALF_COSINE:
            found.append(Finding("optimizer.scheduler.cycles", f"optimizer.scheduler.cycles={scheduler.cycles}: "
                                 "Fireworks' cosine schedule anneals once from the peak (half a cycle)",
                                 "set optimizer.scheduler.cycles=0.5, or another scheduler"))
        if str(job.schedule.train_on_inputs) == "enabled":
            found.append(Finding("trainer.train_on_inputs", "Fireworks computes the loss on assistant turns only, "
                                 "so prompts cannot be trained on", "set trainer.train_on_inputs=auto"))
        if is_preference(job) and str(scheduler.type) != "cosine":
            found.append(Finding("optimizer.scheduler.type", f"optimizer.scheduler.type={scheduler.type} is "
                                 "dropped: Fireworks' DPO jobs run their own learning-rate schedule", error=False))
        if isinstance(job.schedule.evaluations, int) and job.schedule.evaluations > 1:
            found.append(Finding("trainer.evaluations", f"trainer.evaluations={job.schedule.evaluations} is "
                                 "dropped: Fireworks evaluates the validation dataset at its own cadence",
                                 error=False))
        return found

    def _warmup_steps(self, job: JobConfiguration, dataset: str, samples: int) -> int:
        ratio = float(job.optimizer.scheduler.warmup_ratio or 0.0)
        if ratio <= 0:
            return 0
        examples = self.examples.get(dataset) or examples_in(dataset)
        if not examples:
            raise ThinkerError(f"the number of examples in {dataset} is unknown, so warmup_ratio cannot become "
                               "Fireworks' warmup steps", f"provider={self.name}", "upload the data with this adapter first",
                               stage="train")
        steps = math.ceil(examples / max(samples, 1)) * int(job.schedule.epochs)
        return round(ratio * steps)

    # ------------------------------------------------------------------ status helpers

    def _events(self, job_id: str, remote: Any, provider_state: str) -> list[JobEvent]:
        """Cumulative milestones with stable ids: created, every state seen, every epoch begun, why it ended."""
        now = time.time()
        states = self._states.setdefault(job_id, {})
        # a DPO job has no update time, progress or top-level base model: those milestones are left out
        states.setdefault(provider_state, timestamp_of(getattr(remote, "update_time", None)) or now)
        epochs = self._epochs.setdefault(job_id, {})
        progress = getattr(remote, "job_progress", None)
        if progress is not None and progress.epoch is not None:
            for epoch in range(int(progress.epoch) + 1):
                epochs.setdefault(epoch, now)
        created = timestamp_of(remote.create_time) or min(states.values())
        base = getattr(remote, "base_model", None) or getattr(remote.training_config, "base_model", None)
        events = [JobEvent(f"{job_id}:created", created, f"job {job_id} created ({base})")]
        events += [JobEvent(f"{job_id}:state:{state}", when, f"state {state}") for state, when in states.items()]
        events += [JobEvent(f"{job_id}:epoch:{n}", when, f"epoch {n + 1} began") for n, when in epochs.items()]
        message = remote.status.message if remote.status else None
        if message and STATES.get(provider_state) in (JobState.failed, JobState.cancelled):
            level = "error" if STATES[provider_state] == JobState.failed else "warning"
            events.append(JobEvent(f"{job_id}:status:{provider_state}", states[provider_state], message, level))
        return sorted(events, key=lambda e: e.created_at)

    def _metrics(self, url: str | None) -> dict[int, dict[str, float]]:
        """Per-step metrics from the job's metrics file; none this poll when it cannot be read (the next poll
        reads the whole file again, so nothing is lost)."""
        if not url:
            return {}
        import httpx

        try:  # a signed URL: fetched without Fireworks credentials
            response = httpx.get(url, timeout=self.request_timeout, follow_redirects=True)
            response.raise_for_status()
        except httpx.HTTPError:
            return {}
        return parse_metrics(response.text)

    def _model_of(self, remote: Any, job_id: str) -> str:
        training = getattr(remote, "training_config", None)
        output = str(getattr(remote, "output_model", None) or getattr(training, "output_model", None) or job_id)
        return output if output.startswith("accounts/") else f"accounts/{self.account_id()}/models/{output}"

    # ------------------------------------------------------------------ client and errors

    def account_id(self) -> str:
        return os.environ.get(ACCOUNT_ENV, "").strip()

    def client_options(self, settings: dict[str, Any], stage: str) -> dict[str, Any]:
        import httpx

        if not self.account_id():
            raise ThinkerError(f"{ACCOUNT_ENV} is not set", f"provider={self.name}",
                               f"export {ACCOUNT_ENV}=<your Fireworks account id> (firectl whoami shows it)",
                               stage=stage)
        timeout = settings["timeout"]
        return {"account_id": self.account_id(), "timeout": httpx.Timeout(timeout, connect=min(10.0, timeout))}

    def refusal(self, error: Any, what: str, stage: str, model: str | None = None,
                fix: str | None = None) -> ThinkerError:
        if getattr(error, "status_code", None) == 403:  # the key is valid, but not for this account
            return ThinkerError(f"Fireworks denied the request to {what} (403): the key has no access to account "
                                f"{self.account_id()}", f"provider={self.name}, {ACCOUNT_ENV}",
                                f"set {ACCOUNT_ENV} to the account the key belongs to", stage=stage)
        return super().refusal(error, what, stage, model, fix)

    def _get_job(self, client: Any, job_id: str) -> Any:
        """The job, or None when Fireworks has no job with this id (404)."""
        from fireworks import NotFoundError

        def get() -> Any:
            try:
                return jobs_api(client, job_id).get(job_id)
            except NotFoundError:
                return None

        return self.call(get, f"look up job {job_id}")

    def _free_job_id(self, fingerprint: str, dpo: bool = False) -> str:
        with self.client() as client:
            for job_id in job_ids(fingerprint, dpo):
                if self._get_job(client, job_id) is None:
                    return job_id
        raise AssertionError("unreachable")  # pragma: no cover - find_job refuses first

    def _dataset_ready(self, client: Any, dataset_id: str, examples: int, filename: str) -> bool:
        """Create the dataset (or find the one an earlier upload of the same file made): True when it already
        holds the file, False when the file still has to be uploaded."""
        from fireworks import ConflictError

        def create_or_find() -> bool:
            try:
                client.datasets.create(dataset_id=dataset_id, dataset={
                    "user_uploaded": {}, "example_count": str(examples), "format": "CHAT", "display_name": filename})
                return False
            except ConflictError:
                return client.datasets.get(dataset_id).state == "READY"

        return self.call(create_or_find, f"create dataset {dataset_id}")

    def _deployment_name(self, deployment_id: str) -> str:
        return f"accounts/{self.account_id()}/deployments/{deployment_id}"


def job_ids(fingerprint: str, dpo: bool = False, attempts: int = 20):
    """thinker-<first 16 hex of the fingerprint>, then -2, -3, ... (Fireworks ids: lowercase, digits, '-');
    a DPO job's are thinker-dpo-<...>."""
    base = "thinker-" + (DPO_TAG if dpo else "") + (fingerprint_tag(fingerprint, 16) or "job")
    yield base
    for n in range(2, attempts + 1):
        yield f"{base}-{n}"


def is_dpo_job(job_id: str) -> bool:
    return job_id.startswith("thinker-" + DPO_TAG)


def jobs_api(client: Any, job_id: str) -> Any:
    """The SDK resource that holds this job: dpo_jobs for thinker-dpo-* ids, else supervised_fine_tuning_jobs."""
    return client.dpo_jobs if is_dpo_job(job_id) else client.supervised_fine_tuning_jobs


def dataset_id_of(data: bytes, examples: int, purpose: str) -> str:
    """Content-addressed (the same file is the same dataset) and carrying its example count, which translate()
    needs for the warmup steps in any later process: thinker-train-<sha256 prefix>-<n>ex."""
    kind = "val" if purpose == "validation" else "train"
    return f"thinker-{kind}-{hashlib.sha256(data).hexdigest()[:16]}-{examples}ex"


def examples_in(dataset: str) -> int | None:
    match = re.search(r"-(\d+)ex$", dataset)
    return int(match.group(1)) if match else None


def job_id_of(name: str | None) -> str | None:
    return name.rsplit("/", 1)[-1] if name else None


def output_model_id(suffix: str, job_id: str) -> str:
    """output.name, as a Fireworks model id, then the job's id (unique: a re-launch never clashes)."""
    lead = slug(suffix)
    tail = job_id.rsplit("/", 1)[-1]
    return f"{lead[:MODEL_ID_CHARS - len(tail) - 1].rstrip('-')}-{tail}" if lead else tail


def model_name(base_model: str) -> str:
    """A bare Fireworks model id (qwen2p5-1p5b-instruct) is one of Fireworks' own models."""
    return base_model if "/" in base_model else FIREWORKS_MODELS + base_model


def percent(progress: Any) -> float | None:
    return progress.percent / 100.0 if progress is not None and progress.percent is not None else None


def deployment_id_of(model: str) -> str:
    """A deterministic deployment id for a model (so a re-run finds the deployment it made)."""
    name = re.sub(r"[^a-z0-9-]", "-", model.rsplit("/", 1)[-1].lower()).strip("-")
    return (name if name.startswith("thinker-") else f"thinker-{name}")[:63].rstrip("-")


def lr_scheduler(job: JobConfiguration, decay_ratio: Any) -> dict[str, Any]:
    scheduler = job.optimizer.scheduler
    kind = str(scheduler.type)
    if kind in ("constant", "constant_with_warmup"):
        return {"constant": {}}
    knobs: dict[str, Any] = {"minLrRatio": float(scheduler.min_lr_ratio or 0.0)}
    if decay_ratio:
        knobs["decayRatio"] = float(decay_ratio)
    return {kind: knobs}


def parse_metrics(text: str) -> dict[int, dict[str, float]]:
    """Fireworks' metrics JSONL: one object per line with `step` and the values, flat or under `data`."""
    metrics: dict[int, dict[str, float]] = {}
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or not isinstance(record.get("step"), int | float):
            continue
        values = record.get("data") if isinstance(record.get("data"), dict) else record
        add_step_metrics(metrics, record["step"], values, METRICS.get, finite_number)
    return metrics

