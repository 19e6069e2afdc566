"""A loopback server for the parts of OpenAI's API that thinker's adapter calls, following the published shapes
(openai/openai-openapi `openapi.yaml`, which the `openai` SDK is generated from):

- POST /v1/files (multipart: `file`, `purpose`) -> a `file` object; fine-tune files must be chat JSONL;
- POST /v1/fine_tuning/jobs -> a `fine_tuning.job` (unknown model or file: 400 `invalid_request_error`);
- GET /v1/fine_tuning/jobs (`after`, `limit`, `metadata[k]=v` deep-object filter), newest first;
- GET /v1/fine_tuning/jobs/{id}; POST /v1/fine_tuning/jobs/{id}/cancel;
- GET /v1/fine_tuning/jobs/{id}/events (newest first, `after` cursor; `type: metrics` events carry `data`
  {step, total_steps, train_loss, train_mean_token_accuracy, valid_loss, valid_mean_token_accuracy,
  full_valid_loss, full_valid_mean_token_accuracy});
- GET /v1/fine_tuning/jobs/{id}/checkpoints; POST /v1/chat/completions (a fixed answer; every request recorded).

Every route checks `Authorization: Bearer <KEY>` (else OpenAI's 401 `invalid_api_key` body) after answering an
armed fault (`server.faults.arm("create_job=503x1")`; routes: upload_file, create_job, list_jobs, retrieve_job,
cancel_job, list_events, list_checkpoints, chat_completions).

A job moves on each time it is retrieved (polled): validating_files -> queued -> running (one metrics event per
step) -> succeeded with `fine_tuned_model`; with `fail=True` it fails while validating its files.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from .loopback import fault_response

KEY = "sk-thinker-loopback-0123456789abcdef"
ORGANIZATION = "org-thinker-loopback"
ANSWER = "loopback answer"
# OpenAI's supervised fine-tuning models (the model-optimization guide); `ft:` ids of earlier jobs also train
FINE_TUNABLE = ("gpt-4.1-2025-04-14", "gpt-4.1-mini-2025-04-14", "gpt-4.1-nano-2025-04-14", "gpt-4o-2024-08-06",
                "gpt-4o-mini-2024-07-18", "gpt-3.5-turbo-0125")
FAILURE = ("invalid_training_file", "The job failed due to an invalid training file. Training file has 3 "
           "example(s), but must have at least 10 examples.")
ROUTE_OF_PATH = {"files": "upload_file", "cancel": "cancel_job", "events": "list_events",
                 "checkpoints": "list_checkpoints", "completions": "chat_completions"}


def client_env(url: str) -> dict[str, str]:
    """What points the `openai` SDK (and thinker's provider=openai) at the server started at `url`."""
    return {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": f"{url}/v1"}


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def metrics_at(step: int, steps: int) -> dict[str, float | int]:
    """The metrics event data of `step`: deterministic, so tests assert exact values. The full validation set
    is scored at the end of the (single) epoch, as OpenAI does at each epoch end."""
    data: dict[str, float | int] = {"step": step, "total_steps": steps, "train_loss": round(2.0 - 0.25 * step, 4),
                                    "train_mean_token_accuracy": round(0.5 + 0.1 * step, 4),
                                    "valid_loss": round(2.1 - 0.25 * step, 4),
                                    "valid_mean_token_accuracy": round(0.45 + 0.1 * step, 4)}
    if step == steps:
        data.update(full_valid_loss=round(2.05 - 0.25 * step, 4), full_valid_mean_token_accuracy=0.9)
    return data


@dataclass
class Job:
    body: dict[str, Any]  # the fine_tuning.job object as the API returns it
    events: list[dict[str, Any]] = field(default_factory=list)  # oldest first
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    polls: int = 0


@dataclass
class OpenAIState:
    steps: int = 4
    fail: bool = False
    create_delay_s: float = 0.0
    jobs: dict[str, Job] = field(default_factory=dict)  # insertion order = creation order
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> file object + "content" bytes
    chat_requests: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)
    chat_bodies: list[dict[str, Any]] = field(default_factory=list)
    create_bodies: list[dict[str, Any]] = field(default_factory=list)
    ids: Any = field(default_factory=itertools.count)

    def new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self.ids):06d}"

    def add_event(self, job: Job, message: str, level: str = "info", data: dict | None = None,
                  kind: str = "message") -> None:
        job.events.append({"object": "fine_tuning.job.event", "id": f"ftevent-{job.body['id']}-{len(job.events)}",
                           "created_at": int(time.time()), "level": level, "message": message,
                           "data": data, "type": kind})

    def advance(self, job: Job) -> None:
        """One poll's worth of progress (the server's clock is the client's polling)."""
        body = job.body
        if body["status"] in ("succeeded", "failed", "cancelled"):
            return
        job.polls += 1
        if job.polls == 1:
            body["status"] = "validating_files"
            self.add_event(job, f"Validating training file: {body['training_file']}")
        elif self.fail:
            code, message = FAILURE
            body.update(status="failed", finished_at=int(time.time()),
                        error={"code": code, "message": message, "param": "training_file"})
            self.add_event(job, message, level="error")
        elif job.polls == 2:
            body["status"] = "queued"
            self.add_event(job, "Files validated, moving job to queued state")
        elif job.polls - 2 <= self.steps:
            step = job.polls - 2
            if step == 1:
                body.update(status="running", estimated_finish=int(time.time()) + 60)
                self.add_event(job, "Fine-tuning job started")
            data = metrics_at(step, self.steps)
            self.add_event(job, f"Step {step}/{self.steps}: training loss={data['train_loss']:.2f}",
                           data=data, kind="metrics")
        else:
            self.succeed(job)

    def succeed(self, job: Job) -> None:
        body = job.body
        suffix = body.get("user_provided_suffix") or ""
        model = f"ft:{body['model']}:{ORGANIZATION}:{suffix}:{body['id'][-8:]}"
        result_file = self.new_id("file-results")
        body.update(status="succeeded", fine_tuned_model=model, finished_at=int(time.time()),
                    estimated_finish=None, trained_tokens=1234 * self.steps, result_files=[result_file])
        job.checkpoints.append({"object": "fine_tuning.job.checkpoint", "id": f"ftckpt_{body['id'][-8:]}",
                                "created_at": int(time.time()), "fine_tuning_job_id": body["id"],
                                "fine_tuned_model_checkpoint": f"{model}:ckpt-step-{self.steps}",
                                "step_number": self.steps, "metrics": metrics_at(self.steps, self.steps)})
        self.add_event(job, f"New fine-tuned model created: {model}")
        self.add_event(job, "The job has successfully completed")

    def known_model(self, model: str) -> bool:
        finished = {j.body["fine_tuned_model"] for j in self.jobs.values() if j.body["fine_tuned_model"]}
        return model in FINE_TUNABLE or model in finished


def page(items: list[dict[str, Any]], after: str | None, limit: int) -> dict[str, Any]:
    """A cursor page (items already in API order): the items after the one with id `after`."""
    start = 0
    if after:
        ids = [item["id"] for item in items]
        start = ids.index(after) + 1 if after in ids else len(items)
    chunk = items[start:start + limit]
    return {"object": "list", "data": chunk, "has_more": start + limit < len(items)}


def metadata_filter(query: Any) -> dict[str, str] | None:
    """`metadata[k]=v` pairs (OpenAPI deepObject style) from the query string; None when there are none."""
    pairs = {key[len("metadata["):-1]: value for key, value in query.multi_items()
             if key.startswith("metadata[") and key.endswith("]")}
    return pairs or None


def multipart_fields(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """name -> (filename, bytes) of a multipart/form-data body (the stdlib parser: no python-multipart)."""
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        fields[str(name)] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return fields


def chat_jsonl_problem(content: bytes, method: str = "any") -> str | None:
    """A fine-tune file's first problem: each example is a chat (`messages`) for supervised jobs, a preference
    pair (`input.messages`, `preferred_output`, `non_preferred_output`: OpenAI's DPO guide) for dpo jobs; at
    upload either shape passes (OpenAI checks the file against the method when the job validates its files)."""
    for number, line in enumerate(content.decode("utf-8", "replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            return f"Invalid file format. Line {number} is not valid JSON."
        chat = isinstance(row, dict) and isinstance(row.get("messages"), list)
        if method == "dpo" or (method == "any" and not chat and isinstance(row, dict) and "input" in row):
            if (problem := preference_problem(row)) is not None:
                return f"Invalid file format. Example {number}: {problem}"
        elif not chat:
            return f"Invalid file format. Example {number}: missing 'messages' list."
    return None


def preference_problem(row: Any) -> str | None:
    source = row.get("input") if isinstance(row, dict) else None
    if not isinstance(source, dict) or not isinstance(source.get("messages"), list) or not source["messages"]:
        return "missing 'input.messages' list."
    for side in ("preferred_output", "non_preferred_output"):
        replies = row.get(side)
        if not isinstance(replies, list) or not replies or any(
                not isinstance(m, dict) or m.get("role") != "assistant" or not m.get("content") for m in replies):
            return f"'{side}' must be a list of assistant messages."
    if row["preferred_output"] == row["non_preferred_output"]:
        return "'preferred_output' and 'non_preferred_output' are the same."
    return None


def create_app(*, steps: int = 4, fail: bool = False, create_delay_s: float = 0.0) -> FastAPI:
    app = FastAPI()
    state = OpenAIState(steps=steps, fail=fail, create_delay_s=create_delay_s)
    app.state.api = state

    def refusal(request: Request, route: str) -> JSONResponse | None:
        """An armed fault first (before any work), then OpenAI's 401 for a wrong or missing key."""
        faults = getattr(request.app.state, "faults", None)
        status = faults.take(route) if faults is not None else None
        if status is not None:
            return fault_response(status)
        header = request.headers.get("authorization", "")
        if header != f"Bearer {KEY}":
            given = header.removeprefix("Bearer ").strip()
            shown = f"{given[:3]}{'*' * 10}{given[-4:]}" if len(given) > 7 else "(none)"
            return JSONResponse(error_body(f"Incorrect API key provided: {shown}. You can find your API key at "
                                           "https://platform.openai.com/account/api-keys.",
                                           code="invalid_api_key"), status_code=401)
        return None

    def not_found(job_id: str) -> JSONResponse:
        return JSONResponse(error_body(f"Could not find fine-tune: {job_id}", param="fine_tuning_job_id",
                                       code="fine_tune_not_found"), status_code=404)

    def bad_request(message: str, param: str | None, code: str | None = None) -> JSONResponse:
        return JSONResponse(error_body(message, param=param, code=code), status_code=400)

    @app.post("/v1/files")
    async def upload_file(request: Request):
        if (refused := refusal(request, "upload_file")) is not None:
            return refused
        fields = multipart_fields(request.headers.get("content-type", ""), await request.body())
        purpose = fields.get("purpose", (None, b""))[1].decode()
        filename, content = fields.get("file", (None, b""))
        if "file" not in fields or not purpose:
            return bad_request("Missing required parameter: 'file' and 'purpose'.", "file")
        if purpose == "fine-tune":
            if not str(filename).endswith(".jsonl"):
                return bad_request("Invalid file format for Fine-Tuning API. Must be .jsonl", "file")
            if (problem := chat_jsonl_problem(content)) is not None:
                return bad_request(problem, "file")
        file_id = state.new_id("file-")
        state.files[file_id] = {"id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                                "filename": filename, "purpose": purpose, "status": "processed",
                                "status_details": None, "expires_at": None, "content": content}
        return {k: v for k, v in state.files[file_id].items() if k != "content"}

    @app.post("/v1/fine_tuning/jobs")
    async def create_job(request: Request):
        if (refused := refusal(request, "create_job")) is not None:
            return refused
        body = await request.json()
        state.create_bodies.append(body)
        model = body.get("model")
        if not state.known_model(str(model)):
            return bad_request(f"Model {model} is not available for fine-tuning or does not exist.", "model",
                               "model_not_available")
        for param in ("training_file", "validation_file"):
            if body.get(param) is not None and body[param] not in state.files:
                return bad_request(f"Invalid file ID: {body[param]}", param, "invalid_file_id")
        method = body.get("method") or {"type": "supervised", "supervised": {}}
        kind = method.get("type", "supervised")
        if kind not in ("supervised", "dpo"):
            return bad_request(f"Invalid method type: {kind}", "method.type")
        if kind == "dpo" and not str(model).startswith(("gpt-4.1-", "ft:gpt-4.1-")):
            return bad_request(f"Model {model} does not support DPO fine-tuning.", "model", "model_not_available")
        hyper = dict((method.get(kind, {}) or {}).get("hyperparameters") or {})
        for param in ("training_file", "validation_file"):
            if body.get(param) is not None and (problem := chat_jsonl_problem(
                    state.files[body[param]]["content"], kind)) is not None:
                return bad_request(problem, param, "invalid_file_format")
        beta = hyper.get("beta", "auto")
        if beta != "auto" and not (isinstance(beta, int | float) and 0 < beta <= 2):
            return bad_request(f"Invalid hyperparameter beta: {beta} (must be 'auto' or in (0, 2])",
                               "method.dpo.hyperparameters.beta")
        for name, low, high in (("n_epochs", 1, 50), ("batch_size", 1, 256)):
            value = hyper.get(name, "auto")
            if value != "auto" and not (isinstance(value, int) and low <= value <= high):
                return bad_request(f"Invalid hyperparameter {name}: {value} (must be 'auto' or {low}-{high})",
                                   f"method.supervised.hyperparameters.{name}")
        rate = hyper.get("learning_rate_multiplier", "auto")
        if rate != "auto" and not (isinstance(rate, int | float) and rate > 0):
            return bad_request(f"Invalid hyperparameter learning_rate_multiplier: {rate}",
                               "method.supervised.hyperparameters.learning_rate_multiplier")
        job_id = state.new_id("ftjob-")
        full_hyper = {"n_epochs": hyper.get("n_epochs", "auto"), "batch_size": hyper.get("batch_size", "auto"),
                      "learning_rate_multiplier": rate}
        job = Job({"object": "fine_tuning.job", "id": job_id, "model": model, "created_at": int(time.time()),
                   "finished_at": None, "fine_tuned_model": None, "organization_id": ORGANIZATION,
                   "result_files": [], "status": "validating_files", "validation_file": body.get("validation_file"),
                   "training_file": body["training_file"], "hyperparameters": full_hyper,
                   "trained_tokens": None, "integrations": [], "seed": body.get("seed") or 42,
                   "estimated_finish": None, "error": None, "metadata": body.get("metadata"),
                   "user_provided_suffix": body.get("suffix"),
                   "method": {"type": kind, kind: {"hyperparameters": {
                       **full_hyper, **({"beta": beta} if kind == "dpo" else {})}}}})
        state.jobs[job_id] = job
        state.add_event(job, f"Created fine-tuning job: {job_id}")
        if state.create_delay_s:
            await asyncio.sleep(state.create_delay_s)  # the job exists; the answer comes too late for the client
        return job.body

    @app.get("/v1/fine_tuning/jobs")
    async def list_jobs(request: Request):
        if (refused := refusal(request, "list_jobs")) is not None:
            return refused
        wanted = metadata_filter(request.query_params)
        jobs = [j.body for j in reversed(state.jobs.values())]  # newest first
        if request.query_params.get("metadata") == "null":
            jobs = [b for b in jobs if not b["metadata"]]
        elif wanted:
            jobs = [b for b in jobs if all((b["metadata"] or {}).get(k) == v for k, v in wanted.items())]
        return page(jobs, request.query_params.get("after"), int(request.query_params.get("limit", 20)))

    @app.get("/v1/fine_tuning/jobs/{job_id}")
    async def retrieve_job(job_id: str, request: Request):
        if (refused := refusal(request, "retrieve_job")) is not None:
            return refused
        if job_id not in state.jobs:
            return not_found(job_id)
        state.advance(state.jobs[job_id])
        return state.jobs[job_id].body

    @app.post("/v1/fine_tuning/jobs/{job_id}/cancel")
    async def cancel_job(job_id: str, request: Request):
        if (refused := refusal(request, "cancel_job")) is not None:
            return refused
        if job_id not in state.jobs:
            return not_found(job_id)
        job = state.jobs[job_id]
        if job.body["status"] in ("succeeded", "failed", "cancelled"):
            return bad_request(f"Job {job_id} has already {job.body['status']}; it cannot be cancelled.", None)
        job.body.update(status="cancelled", finished_at=int(time.time()))
        state.add_event(job, "Fine-tuning job cancelled")
        return job.body

    @app.get("/v1/fine_tuning/jobs/{job_id}/events")
    async def list_events(job_id: str, request: Request):
        if (refused := refusal(request, "list_events")) is not None:
            return refused
        if job_id not in state.jobs:
            return not_found(job_id)
        events = list(reversed(state.jobs[job_id].events))  # newest first, as the API lists them
        return page(events, request.query_params.get("after"), int(request.query_params.get("limit", 20)))

    @app.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
    async def list_checkpoints(job_id: str, request: Request):
        if (refused := refusal(request, "list_checkpoints")) is not None:
            return refused
        if job_id not in state.jobs:
            return not_found(job_id)
        items = list(reversed(state.jobs[job_id].checkpoints))
        listed = page(items, request.query_params.get("after"), int(request.query_params.get("limit", 10)))
        ids = [c["id"] for c in listed["data"]]
        return {**listed, "first_id": ids[0] if ids else None, "last_id": ids[-1] if ids else None}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        if (refused := refusal(request, "chat_completions")) is not None:
            return refused
        body = await request.json()
        model = str(body.get("model"))
        state.chat_requests.append((model, body.get("messages")))
        state.chat_bodies.append(body)
        if not state.known_model(model):
            return JSONResponse(error_body(f"The model `{model}` does not exist or you do not have access to it.",
                                           code="model_not_found"), status_code=404)
        return {"id": state.new_id("chatcmpl-"), "object": "chat.completion", "created": int(time.time()),
                "model": model, "system_fingerprint": None,
                "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                             "message": {"role": "assistant", "content": ANSWER, "refusal": None}}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}

    return app
