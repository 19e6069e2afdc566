"""A loopback Together AI API: what the `together` 3.x SDK calls for fine-tuning and chat, in the shapes of
Together's published API (the SDK's generated types are that spec): https://docs.together.ai/reference

- files: POST /v1/files (multipart form: purpose, file_name, file_type, checksum) answers 302 with `Location`
  (a presigned upload URL, here /storage/<id> on this server) and `X-Together-File-Id`; the SDK PUTs the bytes
  there, then POST /v1/files/<id>/preprocess answers the FileResponse; GET /v1/files/<id>;
- fine-tunes: GET /v1/fine-tunes/models/limits?model_name=, POST /v1/fine-tunes/estimate-price,
  POST /v1/fine-tunes, GET /v1/fine-tunes (all jobs, {"data": [...]}: the API has no filter or pages),
  GET /v1/fine-tunes/<id>, POST /v1/fine-tunes/<id>/cancel, GET /v1/fine-tunes/<id>/events,
  GET /v1/fine-tunes/<id>/metrics (rows keyed train/global_step, train/loss, eval/loss ...),
  GET /v1/fine-tunes/<id>/checkpoints;
- POST /v1/chat/completions: a canned answer; every request's model and messages are recorded.

A job advances one stage each time it is retrieved: pending -> queued -> running (one event and one metrics
row per step, `steps` polls) -> uploading -> completed with its model_output_name; `fail=True` ends it in
`error` half way. Errors use Together's body {"error": {"message", "type", "code"}}; a missing or wrong key
gets its 401.
Fault routes (server.faults.arm("<route>=503x2")): upload_file, put_file, preprocess_file, retrieve_file,
model_limits, estimate_price, create_job, list_jobs, retrieve_job, cancel_job, list_events, list_metrics,
list_checkpoints, chat_completions.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from .loopback import fault_response

API_KEY = "together-loopback-key-8f3a"
USER = "thinker-tester"
CANNED_ANSWER = "CLAIM[c1]: loopback answer"
# models the server fine-tunes (Together ids), with their LoRA rank caps; base models served serverless
MODELS = {
    "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference": 64,
    "Qwen/Qwen2.5-1.5B-Instruct": 64,
    "Qwen/Qwen3-0.6B": 64,
}
SERVERLESS_BASES = set(MODELS)
FINISHED = {"completed", "error", "user_error", "cancelled"}


def client_env(url: str) -> dict[str, str]:
    """The variables that point the together SDK at this server (3.x paths start with /v1 themselves)."""
    return {"TOGETHER_API_KEY": API_KEY, "TOGETHER_BASE_URL": url}


@dataclass
class TogetherState:
    steps: int = 4
    fail: bool = False
    create_delay_s: float = 0.0
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    file_bytes: dict[str, bytes] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    metrics: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    create_requests: list[dict[str, Any]] = field(default_factory=list)
    chat_requests: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)
    chat_bodies: list[dict[str, Any]] = field(default_factory=list)
    counter: Any = field(default_factory=lambda: itertools.count(1))

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self.counter):08d}-loop"


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def error(status: int, message: str, code: str | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
    return JSONResponse(body, status_code=status)


def create_app(*, steps: int = 4, fail: bool = False, create_delay_s: float = 0.0) -> FastAPI:
    app = FastAPI()
    api = TogetherState(steps=steps, fail=fail, create_delay_s=create_delay_s)
    app.state.api = api

    def guard(request: Request, route: str, auth: bool = True) -> Response | None:
        """Injected fault first (before any work), then the key."""
        faults = getattr(request.app.state, "faults", None)
        status = faults.take(route) if faults is not None else None
        if status is not None:
            return fault_response(status)
        if auth and request.headers.get("authorization") != f"Bearer {API_KEY}":
            return error(401, "Invalid API key provided. You can find your API key at "
                         "https://api.together.xyz/settings/api-keys.", code="invalid_api_key")
        return None

    # ------------------------------------------------------------------ files

    @app.post("/v1/files")
    async def upload_file(request: Request):
        if (refused := guard(request, "upload_file")) is not None:
            return refused
        form = parse_form(request.headers.get("content-type", ""), await request.body())
        if form.get("purpose") != "fine-tune" or form.get("file_type") not in ("jsonl", "parquet", "csv"):
            return error(400, f"invalid purpose or file_type: {form.get('purpose')}, {form.get('file_type')}")
        file_id = api.new_id("file")
        api.files[file_id] = {"id": file_id, "bytes": 0, "created_at": int(time.time()),
                              "filename": form.get("file_name", ""), "FileType": form["file_type"],
                              "object": "file", "purpose": form["purpose"], "processing_status": "PENDING",
                              "checksum": form.get("checksum")}
        location = f"{str(request.base_url).rstrip('/')}/storage/{file_id}?signature=loopback"
        return Response(status_code=302, headers={"Location": location, "X-Together-File-Id": file_id})

    @app.put("/storage/{file_id}")
    async def put_file(file_id: str, request: Request):
        if (refused := guard(request, "put_file", auth=False)) is not None:  # presigned: no key
            return refused
        if file_id not in api.files or request.query_params.get("signature") != "loopback":
            return Response(status_code=403, content=b"<Error><Code>AccessDenied</Code></Error>")
        api.file_bytes[file_id] = await request.body()
        return Response(status_code=200)

    @app.post("/v1/files/{file_id}/preprocess")
    async def preprocess_file(file_id: str, request: Request):
        if (refused := guard(request, "preprocess_file")) is not None:
            return refused
        if file_id not in api.file_bytes:
            return error(404, f"File {file_id} not found")
        content = api.file_bytes[file_id]
        lines = [json.loads(line) for line in content.decode().splitlines() if line.strip()]
        # Together's formats (the SDK's DatasetFormat): conversation rows, or OpenAI-style preference rows
        preference = bool(lines) and all(isinstance(row.get("input"), dict) and "preferred_output" in row
                                         and "non_preferred_output" in row for row in lines)
        valid = preference or all(isinstance(row.get("messages"), list) for row in lines)
        report = {"valid": valid, "dataset_format": "PREFERENCE_OPENAI" if preference else "CONVERSATION",
                  "nlines": len(lines), "file_id": file_id}
        api.files[file_id].update(bytes=len(content), validation_report=report,
                                  processing_status="COMPLETED" if valid else "INVALID_FORMAT")
        return public_file(api.files[file_id])

    @app.get("/v1/files/{file_id}")
    async def retrieve_file(file_id: str, request: Request):
        if (refused := guard(request, "retrieve_file")) is not None:
            return refused
        if file_id not in api.files:
            return error(404, f"File {file_id} not found")
        return public_file(api.files[file_id])

    # ------------------------------------------------------------------ fine-tunes

    @app.get("/v1/fine-tunes/models/limits")
    async def model_limits(request: Request):
        if (refused := guard(request, "model_limits")) is not None:
            return refused
        name = request.query_params.get("model_name", "")
        if name not in MODELS:
            return error(404, f"Model {name} is not available for fine-tuning", code="model_not_available")
        return limits_for(name)

    @app.post("/v1/fine-tunes/estimate-price")
    async def estimate_price(request: Request):
        if (refused := guard(request, "estimate_price")) is not None:
            return refused
        body = await request.json()
        tokens = float(len(api.file_bytes.get(body.get("training_file", ""), b"")) // 4)
        return {"estimation_available": True, "allowed_to_proceed": True, "user_limit": 100.0,
                "estimated_train_token_count": tokens * body.get("n_epochs", 1),
                "estimated_eval_token_count": 0.0, "estimated_total_price": 0.01}

    @app.post("/v1/fine-tunes")
    async def create_job(request: Request):
        if (refused := guard(request, "create_job")) is not None:
            return refused
        body = await request.json()
        for key in ("training_file", "validation_file"):
            if body.get(key) and body[key] not in api.files:
                return error(400, f"{key} {body[key]} does not exist")
        if body.get("model") not in MODELS:
            return error(400, f"Model {body.get('model')} is not available for fine-tuning")
        method = body.get("training_method") or {"method": "sft"}
        kind = method.get("method")
        wanted = "PREFERENCE_OPENAI" if kind == "dpo" else "CONVERSATION"
        for key in ("training_file", "validation_file"):
            found = (api.files.get(body.get(key) or "", {}).get("validation_report") or {}).get("dataset_format")
            if body.get(key) and found != wanted:
                return error(400, f"{key} is {found} data, but training_method {kind} needs {wanted} data")
        if kind == "dpo" and not (isinstance(method.get("dpo_beta"), int | float) and method["dpo_beta"] > 0):
            return error(400, f"dpo_beta must be a positive number, got {method.get('dpo_beta')}")
        api.create_requests.append(body)
        job = new_job(api, body)
        if api.create_delay_s:
            await asyncio.sleep(api.create_delay_s)  # the job exists; its answer comes late (or never)
        return truncated(job)

    @app.get("/v1/fine-tunes")
    async def list_jobs(request: Request):
        if (refused := guard(request, "list_jobs")) is not None:
            return refused
        return {"data": [truncated(job) for job in api.jobs.values()]}

    @app.get("/v1/fine-tunes/{job_id}")
    async def retrieve_job(job_id: str, request: Request):
        if (refused := guard(request, "retrieve_job")) is not None:
            return refused
        if job_id not in api.jobs:
            return error(404, f"Fine-tune job {job_id} not found")
        advance(api, job_id)
        return {**api.jobs[job_id], "events": api.events[job_id]}

    @app.post("/v1/fine-tunes/{job_id}/cancel")
    async def cancel_job(job_id: str, request: Request):
        if (refused := guard(request, "cancel_job")) is not None:
            return refused
        job = api.jobs.get(job_id)
        if job is None:
            return error(404, f"Fine-tune job {job_id} not found")
        if job["status"] in FINISHED:
            return error(400, f"Fine-tune job {job_id} is {job['status']} and cannot be cancelled")
        set_status(api, job_id, "cancel_requested")
        add_event(api, job_id, "cancel_requested", "Cancel requested by the user")
        return truncated(job)

    @app.get("/v1/fine-tunes/{job_id}/events")
    async def list_events(job_id: str, request: Request):
        if (refused := guard(request, "list_events")) is not None:
            return refused
        if job_id not in api.jobs:
            return error(404, f"Fine-tune job {job_id} not found")
        return {"data": api.events[job_id]}

    @app.get("/v1/fine-tunes/{job_id}/metrics")
    async def list_metrics(job_id: str, request: Request):
        if (refused := guard(request, "list_metrics")) is not None:
            return refused
        if job_id not in api.jobs:
            return error(404, f"Fine-tune job {job_id} not found")
        return {"metrics": api.metrics[job_id]}

    @app.get("/v1/fine-tunes/{job_id}/checkpoints")
    async def list_checkpoints(job_id: str, request: Request):
        if (refused := guard(request, "list_checkpoints")) is not None:
            return refused
        job = api.jobs.get(job_id)
        if job is None:
            return error(404, f"Fine-tune job {job_id} not found")
        if job["status"] != "completed":
            return {"data": []}
        return {"data": [{"checkpoint_type": "Final", "created_at": job["updated_at"], "step": api.steps,
                          "path": f"s3://loopback/{job_id}/final", "checkpoint": "adapter"
                          if job["training_type"]["type"] == "Lora" else "model"}]}

    # ------------------------------------------------------------------ chat

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        if (refused := guard(request, "chat_completions")) is not None:
            return refused
        body = await request.json()
        model = str(body.get("model"))
        api.chat_requests.append((model, body.get("messages", [])))
        api.chat_bodies.append(body)
        job = next((j for j in api.jobs.values() if j["model_output_name"] == model), None)
        if job is not None and job["status"] == "completed" and job["training_type"]["type"] != "Lora":
            return error(400, f"Unable to access non-serverless model {model}. Please visit "
                         f"https://api.together.ai/models/{model} to create and start a new dedicated "
                         "endpoint for the model.", code="model_not_available")
        if model not in SERVERLESS_BASES and (job is None or job["status"] != "completed"):
            return error(404, f"Unable to access model {model}. Please visit https://api.together.ai/models "
                         "to view the list of supported models.", code="model_not_available")
        return {"id": f"chatcmpl-{len(api.chat_requests)}", "object": "chat.completion",
                "created": int(time.time()), "model": model, "prompt": [],
                "choices": [{"index": 0, "finish_reason": "stop", "seed": body.get("seed"),
                             "message": {"role": "assistant", "content": CANNED_ANSWER}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 6, "total_tokens": 16}}

    return app


# ---------------------------------------------------------------------- job life cycle


def new_job(api: TogetherState, body: dict[str, Any]) -> dict[str, Any]:
    job_id = api.new_id("ft")
    stamp = now_iso()
    digest = hashlib.sha1(job_id.encode()).hexdigest()[:8]
    base = str(body["model"]).split("/")[-1]
    output = f"{USER}/{base}-{body['suffix']}-{digest}" if body.get("suffix") else f"{USER}/{base}-{digest}"
    api.jobs[job_id] = {
        "id": job_id, "status": "pending", "user_id": USER, "owner_address": f"{USER}@example.com",
        "created_at": stamp, "updated_at": stamp, "started_at": None, "model": body["model"],
        "model_output_name": output, "suffix": body.get("suffix"), "training_file": body["training_file"],
        "validation_file": body.get("validation_file") or None, "n_epochs": body.get("n_epochs"),
        "n_checkpoints": body.get("n_checkpoints"), "n_evals": body.get("n_evals"),
        "batch_size": body.get("batch_size"), "learning_rate": body.get("learning_rate"),
        "lr_scheduler": body.get("lr_scheduler"), "warmup_ratio": body.get("warmup_ratio"),
        "max_grad_norm": body.get("max_grad_norm"), "weight_decay": body.get("weight_decay"),
        "training_type": body.get("training_type") or {"type": "Lora", "lora_r": 64, "lora_alpha": 128},
        "training_method": body.get("training_method"), "random_seed": body.get("random_seed"),
        "packing": body.get("packing"), "max_seq_length": body.get("max_seq_length"),
        "token_count": 0, "total_price": 0, "epochs_completed": 0, "queue_depth": 0,
    }
    api.events[job_id] = []
    api.metrics[job_id] = []
    add_event(api, job_id, "job_pending", "Fine tune request created")
    return api.jobs[job_id]


def advance(api: TogetherState, job_id: str) -> None:
    """One stage further per retrieve (the loopback stand-in for time passing)."""
    job = api.jobs[job_id]
    status = job["status"]
    if status == "cancel_requested":
        set_status(api, job_id, "cancelled")
        add_event(api, job_id, "job_stopped", "Job was cancelled")
    elif status == "pending":
        set_status(api, job_id, "queued")
    elif status == "queued":
        set_status(api, job_id, "running", started_at=now_iso())
        add_event(api, job_id, "training_start", "Training started")
    elif status == "running":
        run_step(api, job_id)
    elif status == "uploading":
        set_status(api, job_id, "completed")
        add_event(api, job_id, "model_upload_complete", "Model upload complete")
        add_event(api, job_id, "job_complete", f"Job finished at {now_iso()}")


def run_step(api: TogetherState, job_id: str) -> None:
    job = api.jobs[job_id]
    step = job["epochs_completed"] + 1
    job["epochs_completed"] = step
    job["token_count"] = 1000 * step
    api.metrics[job_id].append({"train/global_step": step, "train/loss": round(2.0 - 0.25 * step, 4),
                                "train/learning_rate": 1e-5, "train/grad_norm": 0.5,
                                "train/epoch": float(step)})
    if job.get("validation_file"):
        api.metrics[job_id].append({"train/global_step": step, "eval/loss": round(2.1 - 0.25 * step, 4)})
    add_event(api, job_id, "epoch_complete", f"Epoch completed, at step {step}", step=step,
              total_steps=api.steps)
    if api.fail and step >= max(1, api.steps // 2):
        set_status(api, job_id, "error")
        add_event(api, job_id, "job_error", "Training failed: CUDA out of memory at step "
                  f"{step}", level="error")
    elif step >= api.steps:
        set_status(api, job_id, "uploading")
        add_event(api, job_id, "training_complete", "Training completed")


def set_status(api: TogetherState, job_id: str, status: str, **fields: Any) -> None:
    api.jobs[job_id].update(status=status, updated_at=now_iso(), **fields)


def add_event(api: TogetherState, job_id: str, kind: str, message: str, level: str = "info",
              **fields: Any) -> None:
    api.events[job_id].append({"object": "fine-tune-event", "created_at": now_iso(), "type": kind,
                               "message": message, "level": level, **fields})


def truncated(job: dict[str, Any]) -> dict[str, Any]:
    """FinetuneResponseTruncated: what create, list and cancel answer (no events)."""
    keep = ("id", "status", "user_id", "owner_address", "created_at", "updated_at", "started_at", "model",
            "model_output_name", "suffix", "training_file", "validation_file", "n_epochs", "n_checkpoints",
            "n_evals", "batch_size", "learning_rate", "lr_scheduler", "warmup_ratio", "max_grad_norm",
            "weight_decay", "training_type", "training_method", "random_seed", "packing", "max_seq_length",
            "token_count", "total_price")
    return {k: job[k] for k in keep}


def public_file(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "checksum"}


def limits_for(model: str) -> dict[str, Any]:
    return {
        "model_name": model, "default_gradient_accumulation_steps": 1, "max_learning_rate": 1.0,
        "min_learning_rate": 1e-8, "max_num_checkpoints": 10, "max_num_epochs": 20, "max_num_evals": 20,
        "max_seq_length_dpo": 16384, "max_seq_length_sft": 32768, "min_max_seq_length": 512,
        "merge_output_lora": True, "supports_full_training": True, "supports_reasoning": False,
        "supports_tools": True, "supports_vision": False,
        "lora_training": {"default_rank": 64, "max_rank": MODELS[model], "min_batch_size": 8,
                          "max_batch_size": 32, "max_batch_size_dpo": 16,
                          "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                             "down_proj"]},
        "full_training": {"min_batch_size": 8, "max_batch_size": 16, "max_batch_size_dpo": 8},
    }


def parse_form(content_type: str, body: bytes) -> dict[str, str]:
    """multipart/form-data fields (no python-multipart here: the stdlib MIME parser reads them)."""
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[str(name)] = str(part.get_content()).strip()
    return fields
