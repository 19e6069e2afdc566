"""Together AI (provider=together): hosted LoRA and full fine-tuning through the official `together` SDK 3.x.

What the adapter maps, and why:
- the job's settings become `client.fine_tuning.create` kwargs one for one (translate); Together's
  per-model limits (rank, batch size, epochs, learning rate ...) come from its model-limits endpoint and
  are checked when the job is created, before anything is paid;
- Together jobs carry no metadata, so the config fingerprint travels in the model-name `suffix`
  (`thinker-<12 hex>`) and `find_job` lists the account's jobs and matches it;
- the create POST is sent once (SdkAdapter.create_once): a lost answer to the POST itself is
  CreateOutcomeUnknown; a failed limits or price look-up before it made nothing and is retried.

The SDK is imported inside methods only: capabilities, validate and translate work without it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from thinker.config.job_configuration import JobConfiguration
from thinker.config.ranges import Range
from thinker.errors import ThinkerError
from thinker.providers.adapter import JobEvent, JobState, JobStatus, UploadedFiles
from thinker.providers.capabilities import Capabilities, Finding, ParameterDefinition, PreferenceSupport
from thinker.providers.checks import CONSTANT_SCHEDULERS, default_of, is_preference
from thinker.providers.job_fields import (
    add_step_metrics,
    fingerprint_tag,
    is_number,
    live_words,
    options_of,
    slug,
    state_of,
    step_progress,
    timestamp_of,
    wandb_fields,
)
from thinker.providers.sdk_adapter import SdkAdapter, first_line

# Together's job states -> the universal ones (docs/decisions/0003-universal-job-configuration.md). cancel_requested already decides the outcome, so polling stops there.
STATES: dict[str, JobState] = {
    "pending": JobState.queued,
    "queued": JobState.queued,
    "running": JobState.running,
    "compressing": JobState.running,
    "uploading": JobState.running,
    "completed": JobState.succeeded,
    "error": JobState.failed,
    "user_error": JobState.failed,
    "cancel_requested": JobState.cancelled,
    "cancelled": JobState.cancelled,
}
# a job in one of these may be reattached to (queued, running or succeeded); failed/cancelled ones never
REATTACHABLE = live_words(STATES)
FAILURE_EVENTS = {"job_error", "job_user_error"}
SUFFIX_TAG = "thinker-"
MAX_SUFFIX = 40
WANDB_KEY_ENV = "WANDB_API_KEY"
FINGERPRINT_CHARS = 12  # 48 bits of the fingerprint: `thinker-` + 12 = 20 of Together's 40 suffix characters
TRAIN_ON_INPUTS: dict[str, bool | str] = {"auto": "auto", "enabled": True, "disabled": False}
# schedules Together runs as they are, and the two that are exactly its linear schedule with a floor of 1.0
NATIVE_SCHEDULERS = ("cosine", "linear")
# Together's metric names (W&B style, one row per logged step) -> the flow's names
METRIC_NAMES = {
    "train/loss": "train_loss",
    "eval/loss": "val_loss",
    "train/learning_rate": "learning_rate",
    "train/grad_norm": "grad_norm",
    "train/mean_token_accuracy": "train_accuracy",
    "eval/mean_token_accuracy": "val_accuracy",
}
STEP_KEYS = ("train/global_step", "eval/global_step", "global_step", "step")
EXAMPLE_MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"


class TogetherAdapter(SdkAdapter):
    """provider=together. Instance settings tests may lower: request_timeout (seconds), read_retries."""

    label, sdk_name, client_class = "Together", "together", "Together"
    keys_page = "https://api.together.ai/settings/api-keys"
    quote_key_refusal = True  # Together's 401 text names no part of the key

    # ------------------------------------------------------------------ capabilities and checks (no network)

    def capabilities(self) -> Capabilities:
        return Capabilities(
            provider=self.name,
            available=True,
            supported_methods=["lora", "full"],
            supported_optimizations=["sequence_packing"],  # Together's `packing` switch
            supported_precisions=["bf16"],
            supported_schedulers=[*NATIVE_SCHEDULERS, *CONSTANT_SCHEDULERS],
            # Together caps LoRA rank at 64 (16 on a few very large models: checked at create time)
            parameter_ranges={"method.rank": Range(1, 64, 8, "lora.rank", integer=True)},
            refused_keys={"trainer.max_steps": "provider=together trains whole epochs (n_epochs) and has no step "
                                               "limit: choose trainer.epochs"},
            custom_parameters={
                "max_batch_size": ParameterDefinition(
                    "boolean", "send batch_size='max': Together picks the largest batch the model's hardware "
                    "fits (trainer.batch_size is not sent)", default=False),
                "early_stopping_patience": ParameterDefinition(
                    "number", "stop when the validation loss has not improved for this many evaluations "
                    "(needs a validation split and trainer.evaluations >= patience + 2)", min=1, max=20),
            },
            serverless_inference=["lora"],
            integrations=["wandb"],  # its key: WANDB_API_KEY, added to the create request only
            integration_keys={"wandb": WANDB_KEY_ENV},
            output_suffix=True,
            upload_format="chat_messages_jsonl",
            # Together's preference fine-tuning: training_method=dpo with dpo_beta (no published bound above 0)
            preference=PreferenceSupport(methods=["lora", "full"], losses=["sigmoid"], beta_min=0.0),
            min_examples=1,
            max_file_bytes=int(50.1 * 2**30),  # the SDK's MAX_FILE_SIZE_GB
            learning_rate_note="optimizer.lr is sent as Together's learning_rate (the absolute peak rate; "
                               "Together's default is 1e-5); each model's range is checked at create time",
            notes=[
                f"provider.base_model is a Together model id, e.g. {EXAMPLE_MODEL}",
                "per-model limits (batch size, rank, epochs, checkpoints, evaluations, learning rate, "
                "sequence length) come from Together's model-limits endpoint, checked before the job is made",
                "the config fingerprint is the model-name suffix thinker-<12 hex>: a re-launch reattaches",
                "LoRA fine-tunes are sampled serverless where Together serves LoRA for the base model; a "
                "model it serves only on a dedicated endpoint is reported at eval with the page to start one",
                "optimizer.scheduler.type=constant/constant_with_warmup run as Together's linear schedule "
                "with min_lr_ratio=1.0 (constant after the warmup; constant has no warmup, as locally)",
                "trainer.save_total_limit=0 sends n_checkpoints=1: Together always keeps the final model",
                "objective=dpo is Together's preference fine-tuning (training_method=dpo, objective.beta as "
                "dpo_beta), LoRA or full; its DPO limits (batch size, sequence length) are checked at create",
            ],
        )

    def validate(self, job: JobConfiguration) -> list[Finding]:
        return super().validate(job) + self._together_findings(job)

    def _together_findings(self, job: JobConfiguration) -> list[Finding]:
        found: list[Finding] = []
        if not job.model.base_model:
            found.append(Finding("provider.base_model", "provider=together has no model id for this model",
                                 f"set provider.base_model=<a Together model id>, e.g. {EXAMPLE_MODEL}"))
        if str(job.method.type) == "lora":
            found += _lora_findings(job)
        return found + _scheduler_findings(job) + _schedule_findings(job)

    # ------------------------------------------------------------------ payload (no network)

    def translate(self, job: JobConfiguration, files: UploadedFiles) -> dict[str, Any]:
        """`client.fine_tuning.create` kwargs. `suffix` (the fingerprint) is added by create()."""
        schedule, optimizer = job.schedule, job.optimizer
        options = options_of(job)
        payload: dict[str, Any] = {
            "training_file": files.training_file_id,
            "model": job.model.base_model,
            "n_epochs": int(schedule.epochs),
            "n_checkpoints": max(1, int(schedule.checkpoints)),
            "n_evals": int(schedule.evaluations) if files.validation_file_id else 0,
            "batch_size": "max" if options.get("max_batch_size") is True else int(schedule.batch_size),
            "gradient_accumulation_steps": int(schedule.gradient_accumulation),
            "max_seq_length": int(schedule.sequence_length),
            "packing": "sequence_packing" in [str(o) for o in (job.optimizations or [])],
            "learning_rate": float(optimizer.learning_rate),
            **_scheduler_kwargs(job),
            "max_grad_norm": float(optimizer.max_gradient_norm),
            "weight_decay": float(optimizer.weight_decay),
            "random_seed": int(job.seed),
            **_training_method_kwargs(job),
            **_method_kwargs(job),
        }
        if files.validation_file_id:
            payload["validation_file"] = files.validation_file_id
        patience = options.get("early_stopping_patience")
        if patience is not None:
            payload.update(early_stopping_enabled=True, early_stopping_patience=int(patience))
        payload.update(wandb_fields(job, {"project": "wandb_project_name", "entity": "wandb_entity",
                                          "name": "wandb_name"}))
        payload.update(dict(job.passthrough or {}))  # provider.metadata: create() parameters, as they are
        return payload

    def job_suffix(self, fingerprint: str, name: str | None = None) -> str:
        """The model-name suffix that ties a Together job to the config that made it, after output.name's
        first characters when it is set (Together's suffix holds 40)."""
        tag = SUFFIX_TAG + fingerprint_tag(fingerprint, FINGERPRINT_CHARS)
        lead = slug(name or "")[:MAX_SUFFIX - len(tag) - 1]
        return f"{lead.rstrip('-')}-{tag}" if lead.rstrip("-") else tag

    # ------------------------------------------------------------------ SDK calls

    def upload(self, path: Path, purpose: str) -> str:
        """Upload train/validation JSONL as purpose fine-tune (the SDK checks the format, then uploads)."""
        from together import FileTypeError

        path = Path(path)
        try:
            response = self.request(lambda client: client.files.upload(file=path, purpose="fine-tune", check=True),
                                    f"upload {path.name}")
        except FileTypeError as error:
            raise ThinkerError(f"Together's file check refused {path.name} ({first_line(error)})",
                               f"provider=together, {purpose} file",
                               "check data.format and the prepared file", stage="train") from None
        return str(response.id)

    def find_job(self, job: JobConfiguration, fingerprint: str) -> str | None:
        suffix = self.job_suffix(fingerprint, job.output.suffix)
        listing = self.request(lambda client: client.fine_tuning.list(), "list fine-tuning jobs")
        mine = [j for j in listing.data or [] if _suffix_of(j) == suffix and str(j.status) in REATTACHABLE]
        if not mine:
            return None
        return str(max(mine, key=lambda j: timestamp_of(j.created_at) or 0.0).id)

    def create(self, payload: dict[str, Any], job: JobConfiguration, fingerprint: str) -> str:
        body = {**payload, "suffix": self.job_suffix(fingerprint, job.output.suffix)}
        if "wandb_project_name" in body:  # the key from the environment, in this request only (never recorded)
            body["wandb_api_key"] = self.integration_key("wandb")
        unknown = sorted(set(dict(job.passthrough or {})) - sdk_create_parameters())
        if unknown:
            raise ThinkerError(f"provider.metadata {', '.join(unknown)} is not a parameter of Together's "
                               "fine-tuning create call", "provider.metadata",
                               "use the names of together's client.fine_tuning.create()", stage="train")
        limits = self.request(lambda client: client.fine_tuning.model_limits(model_name=str(body["model"])),
                              f"read the fine-tuning limits of {body['model']}",
                              fix="set provider.base_model to a model Together fine-tunes "
                                  "(https://docs.together.ai/docs/fine-tuning-models)")
        _check_limits(body, limits)

        def send(client: Any) -> str:
            try:
                return str(client.fine_tuning.create(**body, model_limits=limits).id)
            except ValueError as error:  # the SDK's own checks against the model's limits
                raise ThinkerError(f"Together refuses this job: {first_line(error)}",
                                   f"provider=together, model {body['model']}",
                                   "change the setting it names (thinker providers capabilities together)",
                                   stage="train") from None

        return self.create_once(send)

    def create_may_have_landed(self, error: Any) -> bool:
        # the SDK looks up limits and price before its POST: a failure there made nothing
        return super().create_may_have_landed(error) and _is_create_post(error)

    def status(self, job_id: str) -> JobStatus:
        with self.client() as client:
            job = self.call(lambda: client.fine_tuning.retrieve(job_id), f"read job {job_id}")
            events = self.call(lambda: client.fine_tuning.list_events(job_id), f"read the events of {job_id}")
            events = events.data or []
            metrics = self._metrics(client, job_id)
        provider_state = str(job.status)
        state = state_of(STATES, provider_state)
        total = max((e.total_steps or 0 for e in events), default=0) or None
        progress = step_progress(state, max([*metrics, *(e.step or 0 for e in events)], default=0), total)
        return JobStatus(
            job_id=str(job.id), state=state, provider_state=provider_state, progress=progress,
            model_id=getattr(job, "x_model_output_name", None) if state == JobState.succeeded else None,
            error=_failure_text(provider_state, events) if state == JobState.failed else None,
            events=_events(events), metrics=metrics, total_steps=total, trained_tokens=job.token_count,
        )

    def cancel(self, job_id: str) -> None:
        self.request(lambda client: client.fine_tuning.cancel(job_id), f"cancel job {job_id}")

    # ------------------------------------------------------------------ helpers

    def client_options(self, settings: dict[str, Any], stage: str) -> dict[str, Any]:
        # the 3.x SDK's paths start with /v1; a base URL written for older SDKs (.../v1) would double it
        url = settings["base_url"]
        return {"base_url": re.sub(r"/v1/?$", "", url) if url else None}

    def refusal(self, error: Any, what: str, stage: str, model: str | None = None,
                fix: str | None = None) -> ThinkerError:
        if model and "non-serverless" in self.message_of(error).lower():
            return ThinkerError(f"Together serves {model} only on a dedicated endpoint",
                                "provider=together, evaluation",
                                f"start one at https://api.together.ai/models/{model} and evaluate again, or "
                                "train method=lora on a base model with serverless LoRA", stage=stage)
        return super().refusal(error, what, stage, model, fix)

    def _metrics(self, client: Any, job_id: str) -> dict[int, dict[str, float]]:
        try:
            rows = self.call(lambda: client.fine_tuning.list_metrics(job_id), f"read the metrics of {job_id}")
        except ThinkerError:
            return {}  # a job without metrics (older jobs): its state and events still tell the story
        return _step_metrics(rows.metrics or [])


# ---------------------------------------------------------------------- pure helpers


def _lora_findings(job: JobConfiguration) -> list[Finding]:
    found = []
    alpha, dropout = job.method.lora.alpha, job.method.lora.dropout
    if alpha is not None and not float(alpha).is_integer():
        found.append(Finding("method.alpha", f"method.alpha={alpha}: provider=together takes an integer "
                             "lora_alpha", "set an integer method.alpha"))
    if dropout is not None and float(dropout) >= 1.0:
        found.append(Finding("method.dropout", f"method.dropout={dropout} is outside what provider=together "
                             "accepts, [0, 1)", "set method.dropout below 1"))
    return found


def _scheduler_findings(job: JobConfiguration) -> list[Finding]:
    scheduler = job.optimizer.scheduler
    if str(scheduler.type) == "cosine" or scheduler.cycles == default_of("optimizer.scheduler.cycles"):
        return []
    return [Finding("optimizer.scheduler.cycles", f"optimizer.scheduler.cycles={scheduler.cycles} is dropped: "
                    "only the cosine schedule has cycles", error=False)]


def _schedule_findings(job: JobConfiguration) -> list[Finding]:
    found: list[Finding] = []
    evaluations = int(job.schedule.evaluations or 0)
    has_validation = float(job.datasets.validation_split or 0) > 0
    if evaluations > 0 and not has_validation:
        found.append(Finding("trainer.evaluations", f"trainer.evaluations={evaluations} is dropped: with "
                             "data.validation_split=0 there is no validation file", error=False))
    options = options_of(job)
    if options.get("max_batch_size") is True and job.schedule.batch_size != default_of("trainer.batch_size"):
        found.append(Finding("trainer.batch_size", f"trainer.batch_size={job.schedule.batch_size} is "
                             "dropped: provider.options.max_batch_size=true lets Together choose",
                             error=False))
    patience = options.get("early_stopping_patience")
    if is_number(patience):
        needed = int(patience) + 2  # one baseline evaluation, one warmup evaluation, then `patience`
        if not has_validation or evaluations < needed:
            found.append(Finding("provider.options.early_stopping_patience",
                                 f"early stopping with patience {int(patience)} needs a validation split and "
                                 f"trainer.evaluations >= {needed} (got {evaluations})",
                                 f"set trainer.evaluations={needed} or more with data.validation_split > 0, "
                                 "or remove the option"))
    return found


def _check_limits(body: dict[str, Any], limits: Any) -> None:
    """Together's per-model limits, named by the config key users set (before anything is paid)."""
    model = body["model"]
    training = limits.lora_training if body["lora"] else limits.full_training
    if training is None or (not body["lora"] and limits.supports_full_training is False):
        raise ThinkerError(f"Together offers no full fine-tuning of {model}",
                           "provider=together, method=full", "use method=lora", stage="train")
    dpo = body.get("training_method") == "dpo"  # DPO has its own batch and sequence limits
    checks: list[tuple[str, Any, float, float]] = [
        ("trainer.epochs", body["n_epochs"], 1, limits.max_num_epochs),
        ("trainer.save_total_limit", body["n_checkpoints"], 1, limits.max_num_checkpoints),
        ("trainer.evaluations", body["n_evals"], 0, limits.max_num_evals),
        ("optimizer.lr", body["learning_rate"], limits.min_learning_rate, limits.max_learning_rate),
        ("trainer.max_seq_length", body["max_seq_length"], limits.min_max_seq_length,
         limits.max_seq_length_dpo if dpo else limits.max_seq_length_sft),
    ]
    if body["batch_size"] != "max":
        checks.append(("trainer.batch_size", body["batch_size"], training.min_batch_size,
                       training.max_batch_size_dpo if dpo else training.max_batch_size))
    if body["lora"]:
        checks.append(("method.rank", body["lora_r"], 1, limits.lora_training.max_rank))
    for key, value, low, high in checks:
        if not low <= value <= high:
            allowed = f"[{low:g}, {high:g}]"
            raise ThinkerError(f"{key}={value} is outside what Together accepts for {model}, {allowed}",
                               f"provider=together, {key}", f"set {key} within {allowed}", stage="train")
    if body["lora"]:
        offered = list(limits.lora_training.target_modules or [])
        _check_modules(model, str(body["lora_trainable_modules"]), offered)


def _check_modules(model: str, modules: str, offered: list[str]) -> None:
    unknown = [m.strip() for m in modules.split(",") if m.strip() not in ("", "all-linear", *offered)]
    if offered and unknown:
        raise ThinkerError(f"method.target_modules {', '.join(unknown)} are not LoRA modules of {model}",
                           "provider=together, method.target_modules",
                           f"use all-linear or some of {', '.join(offered)}", stage="train")


def _scheduler_kwargs(job: JobConfiguration) -> dict[str, Any]:
    scheduler = job.optimizer.scheduler
    kind = str(scheduler.type)
    warmup, floor = float(scheduler.warmup_ratio), float(scheduler.min_lr_ratio)
    if kind == "cosine":
        return {"lr_scheduler_type": "cosine", "min_lr_ratio": floor,
                "scheduler_num_cycles": float(scheduler.cycles), "warmup_ratio": warmup}
    if kind == "linear":
        return {"lr_scheduler_type": "linear", "min_lr_ratio": floor, "warmup_ratio": warmup}
    # constant == a linear decay from the peak to 1.0 x the peak; `constant` has no warmup (as locally)
    return {"lr_scheduler_type": "linear", "min_lr_ratio": 1.0,
            "warmup_ratio": warmup if kind == "constant_with_warmup" else 0.0}


def _training_method_kwargs(job: JobConfiguration) -> dict[str, Any]:
    """SFT with its train_on_inputs, or DPO with its beta (the SDK refuses train_on_inputs for DPO)."""
    if is_preference(job):
        return {"training_method": "dpo", "dpo_beta": float(job.objective.beta)}
    return {"train_on_inputs": TRAIN_ON_INPUTS[str(job.schedule.train_on_inputs)], "training_method": "sft"}


def _method_kwargs(job: JobConfiguration) -> dict[str, Any]:
    if str(job.method.type) != "lora":
        return {"lora": False}
    lora = job.method.lora
    return {"lora": True, "lora_r": int(lora.rank), "lora_alpha": int(float(lora.alpha)),
            "lora_dropout": float(lora.dropout), "lora_trainable_modules": str(lora.trainable_modules)}


def sdk_create_parameters() -> set[str]:
    """The keyword parameters of the together SDK's fine-tuning create() (what provider.metadata may name)."""
    import inspect

    from together.resources.fine_tuning import FineTuningResource

    return set(inspect.signature(FineTuningResource.create).parameters) - {"self"}


def _suffix_of(job: Any) -> str | None:
    suffix = getattr(job, "suffix", None)
    if suffix:
        return str(suffix)
    # a listing without `suffix` still has it inside the output model name: <user>/<base>-<suffix>-<hash>
    name = str(getattr(job, "x_model_output_name", None) or "")
    match = re.search(rf"-({re.escape(SUFFIX_TAG)}[0-9a-z]{{{FINGERPRINT_CHARS}}})(?:-|$)", name)
    return match.group(1) if match else None


def _step_metrics(rows: list[Mapping[str, Any]]) -> dict[int, dict[str, float]]:
    """Together's rows (train and eval rows apart, each with its step) -> {step: {flow name: value}}."""
    metrics: dict[int, dict[str, float]] = {}
    for row in rows:
        step = next((row[k] for k in STEP_KEYS if is_number(row.get(k))), None)
        if step is None:
            continue
        add_step_metrics(metrics, step, row, _metric_name)
    return metrics


def _metric_name(key: str) -> str | None:
    if key in METRIC_NAMES:
        return METRIC_NAMES[key]
    prefix, _, name = key.partition("/")
    if not name or key in STEP_KEYS or name in ("epoch", "timestamp") or name.endswith(("_step", "_epoch")):
        return None
    return {"train": f"train_{name}", "eval": f"val_{name}"}.get(prefix)


def _events(events: list[Any]) -> list[JobEvent]:
    """Together's events have no id: one is made from the event's own fields (+ a repeat counter)."""
    seen: dict[str, int] = {}
    out = []
    for event in events:
        digest = hashlib.sha1(f"{event.created_at}|{event.type}|{event.message}".encode()).hexdigest()[:16]
        seen[digest] = seen.get(digest, 0) + 1
        level = str(event.level or "info")
        out.append(JobEvent(event_id=f"{digest}-{seen[digest]}", created_at=timestamp_of(event.created_at) or 0.0,
                            message=str(event.message),
                            level="error" if "error" in level else "warning" if "warn" in level else "info"))
    return out


def _failure_text(provider_state: str, events: list[Any]) -> str:
    for event in reversed(events):
        if str(event.type) in FAILURE_EVENTS or "error" in str(event.level or ""):
            return str(event.message)
    return f"Together ended the job with status {provider_state}"


def _is_create_post(error: Any) -> bool:
    """True when the failed request was the job POST itself (not the limits or price look-ups before it)."""
    try:
        request = error.request
    except Exception:  # noqa: BLE001 - an error without its request: assume the worst
        return True
    return request.method == "POST" and request.url.path.rstrip("/").endswith("/fine-tunes")
