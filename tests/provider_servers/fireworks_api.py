"""A loopback server following Fireworks AI's published Gateway REST API for what thinker's adapter calls
through the `fireworks-ai` SDK (https://docs.fireworks.ai/api-reference; the SDK's request params and response
models are generated from the same OpenAPI spec):

- datasets: POST /v1/accounts/{a}/datasets ({"datasetId", "dataset"}), GET .../datasets/{id},
  POST .../datasets/{id}:upload (multipart, field "file"; the dataset becomes READY);
- supervised fine-tuning jobs: POST .../supervisedFineTuningJobs?supervisedFineTuningJobId=<id> (409
  ALREADY_EXISTS for a taken id), GET .../supervisedFineTuningJobs (pageSize/pageToken pagination and simple
  AIP-160 `field="value"` filters joined by AND), GET .../supervisedFineTuningJobs/{id}, POST ...:cancel;
- the job's metrics file: `metricsFileSignedUrl` points at GET /signed/metrics/{id}.jsonl (a signed URL, no key);
- deployments: POST .../deployments?deploymentId=<id>, GET .../deployments/{id}, DELETE .../deployments/{id};
- chat completions: POST /v1/chat/completions (the path the SDK calls when its base URL is overridden) and
  /inference/v1/chat/completions (the public one); a fine-tuned model answers only through a deployment
  (`<model>#<deployment name>`), as on Fireworks.

A job moves on each time it is read (GET): CREATING -> VALIDATING -> RUNNING, one step (one metrics line, one
`jobProgress` update) per read for `steps` reads -> COMPLETED with its output model, or FAILED with a
`status.message` when the app was made with `fail=True`. Errors use the grpc-gateway body Fireworks' control plane
answers with ({"code", "message", "details"}); inference errors the OpenAI-style {"error": {...}}.

Every handler first answers an armed fault (`server.faults.arm("get_job=503x2")`); route names: create_dataset,
get_dataset, upload_dataset, create_job, list_jobs, get_job, cancel_job, metrics_file, create_deployment,
get_deployment, delete_deployment, chat_completions.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from provider_servers.loopback import fault_response

ACCOUNT = "thinker-test"
API_KEY = "fw-loopback-key-5f2c9a"
CANNED_ANSWER = "CLAIM[c1]: fireworks loopback answer"
FAILURE = "training failed at step 2: loss became NaN (check the learning rate)"
# google.rpc.Code numbers the grpc-gateway error body carries
CODES = {400: 3, 401: 16, 403: 7, 404: 5, 409: 6}


def client_env(url: str) -> dict[str, str]:
    """The environment that points the fireworks SDK (and thinker's adapter) at the loopback server."""
    return {"FIREWORKS_API_KEY": API_KEY, "FIREWORKS_ACCOUNT_ID": ACCOUNT, "FIREWORKS_BASE_URL": url}


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class FireworksApi:
    """The server's state: what tests assert on."""

    steps: int = 4
    fail: bool = False
    create_delay_s: float = 0.0
    account: str = ACCOUNT
    key: str = API_KEY
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)  # job id -> the job as the API returns it
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # dataset id -> dataset + uploaded content
    chat_requests: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)  # (model, messages)
    chat_params: list[dict[str, Any]] = field(default_factory=list)  # every chat request's body
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    created_bodies: list[dict[str, Any]] = field(default_factory=list)  # every accepted create-job body
    metrics: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # job id -> metrics lines
    reads: dict[str, int] = field(default_factory=dict)  # job id -> GETs so far


def error(status: int, message: str) -> Any:
    return JSONResponse({"code": CODES.get(status, 2), "message": message, "details": []}, status_code=status)


def inference_error(status: int, message: str, code: str) -> Any:
    return JSONResponse({"error": {"object": "error", "type": "invalid_request_error", "code": code,
                                   "message": message}}, status_code=status)


def create_app(*, steps: int = 4, fail: bool = False, create_delay_s: float = 0.0) -> FastAPI:
    app = FastAPI()
    api = FireworksApi(steps=steps, fail=fail, create_delay_s=create_delay_s)
    app.state.api = api
    prefix = "/v1/accounts/{account}"

    def refused(request: Request, route: str, account: str | None = None) -> Any:
        """An armed fault, a missing/wrong key (401) or another account (403); None: serve the request."""
        faults = getattr(request.app.state, "faults", None)
        status = faults.take(route) if faults is not None else None
        if status is not None:
            return fault_response(status)
        if request.headers.get("authorization") != f"Bearer {api.key}":
            if route == "chat_completions":
                return inference_error(401, "The API key you provided is invalid.", "UNAUTHORIZED")
            return error(401, "unauthenticated: invalid API key")
        if account is not None and account != api.account:
            return error(403, f"permission denied: the key cannot access account {account}")
        return None

    # ------------------------------------------------------------------ datasets

    @app.post(prefix + "/datasets")
    async def create_dataset(account: str, request: Request):
        if (answer := refused(request, "create_dataset", account)) is not None:
            return answer
        body = await request.json()
        dataset_id = body.get("datasetId")
        if not dataset_id or "dataset" not in body:
            return error(400, "datasetId and dataset are required")
        if dataset_id in api.files:
            return error(409, f"dataset accounts/{account}/datasets/{dataset_id} already exists")
        spec = body["dataset"]
        api.files[dataset_id] = {"dataset": {
            "name": f"accounts/{account}/datasets/{dataset_id}", "displayName": spec.get("displayName", ""),
            "createTime": now(), "state": "UPLOADING", "exampleCount": spec.get("exampleCount", "0"),
            "format": spec.get("format", "FORMAT_UNSPECIFIED"), "userUploaded": spec.get("userUploaded", {})},
            "content": None, "filename": None}
        return api.files[dataset_id]["dataset"]

    @app.get(prefix + "/datasets/{dataset_id}")
    async def get_dataset(account: str, dataset_id: str, request: Request):
        if (answer := refused(request, "get_dataset", account)) is not None:
            return answer
        if dataset_id not in api.files:
            return error(404, f"dataset {dataset_id} not found")
        return api.files[dataset_id]["dataset"]

    @app.post(prefix + "/datasets/{dataset_id}:upload")
    async def upload_dataset(account: str, dataset_id: str, request: Request):
        if (answer := refused(request, "upload_dataset", account)) is not None:
            return answer
        if dataset_id not in api.files:
            return error(404, f"dataset {dataset_id} not found")
        parts = multipart(request.headers.get("content-type", ""), await request.body())
        if "file" not in parts:
            return error(400, "multipart field 'file' is required")
        filename, content = parts["file"]
        problem = check_chat_jsonl(content)
        if problem:
            return error(400, f"invalid dataset: {problem}")
        entry = api.files[dataset_id]
        entry.update(content=content, filename=filename)
        entry["dataset"].update(state="READY", exampleCount=str(len(content.splitlines())), updateTime=now())
        return {"id": dataset_id, "bytes": len(content), "createdAt": 0, "filename": filename, "object": "file",
                "purpose": "fine-tune"}

    # ------------------------------------------------------------------ supervised fine-tuning jobs

    @app.post(prefix + "/supervisedFineTuningJobs")
    async def create_job(account: str, request: Request):
        if (answer := refused(request, "create_job", account)) is not None:
            return answer
        body = await request.json()
        job_id = request.query_params.get("supervisedFineTuningJobId") or f"job{len(api.jobs) + 1:06d}"
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", job_id):
            return error(400, f"invalid job id {job_id!r}")
        if job_id in api.jobs:
            return error(409, f"supervisedFineTuningJob accounts/{account}/supervisedFineTuningJobs/{job_id} "
                              "already exists")
        problem = check_job_body(api, body)
        if problem:
            return error(400, problem)
        job = {**body, "name": f"accounts/{account}/supervisedFineTuningJobs/{job_id}", "state": "JOB_STATE_CREATING",
               "createTime": now(), "updateTime": now(), "createdBy": "loopback@thinker.test",
               "outputModel": model_path(account, body.get("outputModel") or job_id)}
        api.jobs[job_id] = job
        api.created_bodies.append(body)
        api.reads[job_id] = 0
        api.metrics[job_id] = []
        if api.create_delay_s:  # the job exists; the answer comes late (a client with a shorter timeout loses it)
            await asyncio.sleep(api.create_delay_s)
        return job

    @app.get(prefix + "/supervisedFineTuningJobs")
    async def list_jobs(account: str, request: Request):
        if (answer := refused(request, "list_jobs", account)) is not None:
            return answer
        try:
            clauses = parse_filter(request.query_params.get("filter", ""))
        except ValueError as problem:
            return error(400, str(problem))
        rows = [j for _, j in sorted(api.jobs.items()) if all(str(j.get(k)) == v for k, v in clauses)]
        size = min(int(request.query_params.get("pageSize") or 50), 200)
        start = int(request.query_params.get("pageToken") or 0)
        page = rows[start:start + size]
        token = str(start + size) if start + size < len(rows) else ""
        return {"supervisedFineTuningJobs": page, "nextPageToken": token, "totalSize": len(rows)}

    @app.get(prefix + "/supervisedFineTuningJobs/{job_id}")
    async def get_job(account: str, job_id: str, request: Request):
        if (answer := refused(request, "get_job", account)) is not None:
            return answer
        if job_id not in api.jobs:
            return error(404, f"supervisedFineTuningJob {job_id} not found")
        advance(api, job_id, str(request.base_url))
        return api.jobs[job_id]

    @app.post(prefix + "/supervisedFineTuningJobs/{job_id}:cancel")
    async def cancel_job(account: str, job_id: str, request: Request):
        if (answer := refused(request, "cancel_job", account)) is not None:
            return answer
        if job_id not in api.jobs:
            return error(404, f"supervisedFineTuningJob {job_id} not found")
        job = api.jobs[job_id]
        if job["state"] in ("JOB_STATE_COMPLETED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"):
            return error(400, f"job {job_id} is {job['state']} and cannot be cancelled")
        job.update(state="JOB_STATE_CANCELLED", updateTime=now(),
                   status={"code": "CANCELLED", "message": "cancelled by the user"})
        return {}

    # ------------------------------------------------------------------ DPO jobs (Fireworks' DPO API)

    @app.post(prefix + "/dpoJobs")
    async def create_dpo_job(account: str, request: Request):
        if (answer := refused(request, "create_job", account)) is not None:
            return answer
        body = await request.json()
        job_id = request.query_params.get("dpoJobId") or f"dpo{len(api.jobs) + 1:06d}"
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", job_id):
            return error(400, f"invalid job id {job_id!r}")
        if job_id in api.jobs:
            return error(409, f"dpoJob accounts/{account}/dpoJobs/{job_id} already exists")
        problem = check_dpo_body(api, body)
        if problem:
            return error(400, problem)
        training = dict(body["trainingConfig"])
        training["outputModel"] = model_path(account, training.get("outputModel") or job_id)
        job = {**body, "trainingConfig": training, "name": f"accounts/{account}/dpoJobs/{job_id}",
               "state": "JOB_STATE_CREATING", "createTime": now(), "createdBy": "loopback@thinker.test"}
        api.jobs[job_id] = job
        api.created_bodies.append(body)
        api.reads[job_id] = 0
        api.metrics[job_id] = []
        return job

    # before /dpoJobs/{job_id}, which would match the ':verb' path too
    @app.get(prefix + "/dpoJobs/{job_id}:getMetricsFileEndpoint")
    async def dpo_metrics_endpoint(account: str, job_id: str, request: Request):
        if (answer := refused(request, "get_job", account)) is not None:
            return answer
        if job_id not in api.jobs:
            return error(404, f"dpoJob {job_id} not found")
        return {"signedUrl": f"{request.base_url}signed/metrics/{job_id}.jsonl?X-Goog-Signature=loopback"}

    @app.get(prefix + "/dpoJobs/{job_id}")
    async def get_dpo_job(account: str, job_id: str, request: Request):
        if (answer := refused(request, "get_job", account)) is not None:
            return answer
        if job_id not in api.jobs or "trainingConfig" not in api.jobs[job_id]:
            return error(404, f"dpoJob {job_id} not found")
        advance(api, job_id, str(request.base_url))
        # the DPO API's job has no metrics URL, progress or update time of its own (getMetricsFileEndpoint)
        return {k: v for k, v in api.jobs[job_id].items()
                if k not in ("metricsFileSignedUrl", "jobProgress", "updateTime")}

    @app.post(prefix + "/dpoJobs/{job_id}:cancel")
    async def cancel_dpo_job(account: str, job_id: str, request: Request):
        return await cancel_job(account, job_id, request)

    @app.get("/signed/metrics/{job_id}.jsonl")
    async def metrics_file(job_id: str, request: Request):
        faults = getattr(request.app.state, "faults", None)
        if faults is not None and (status := faults.take("metrics_file")) is not None:
            return fault_response(status)
        if job_id not in api.metrics:
            return PlainTextResponse("NoSuchKey", status_code=404)
        return PlainTextResponse("".join(json.dumps(line) + "\n" for line in api.metrics[job_id]))

    # ------------------------------------------------------------------ deployments

    @app.post(prefix + "/deployments")
    async def create_deployment(account: str, request: Request):
        if (answer := refused(request, "create_deployment", account)) is not None:
            return answer
        body = await request.json()
        deployment_id = request.query_params.get("deploymentId") or f"dep{len(api.deployments) + 1:04d}"
        if deployment_id in api.deployments:
            return error(409, f"deployment {deployment_id} already exists")
        base = body.get("baseModel", "")
        if not (base.startswith("accounts/fireworks/models/") or model_of_completed_job(api, base)):
            return error(404, f"model {base} not found")
        api.deployments[deployment_id] = {
            **body, "name": f"accounts/{account}/deployments/{deployment_id}", "state": "CREATING",
            "createTime": now(), "reads": 0}
        return public(api.deployments[deployment_id])

    @app.get(prefix + "/deployments/{deployment_id}")
    async def get_deployment(account: str, deployment_id: str, request: Request):
        if (answer := refused(request, "get_deployment", account)) is not None:
            return answer
        deployment = api.deployments.get(deployment_id)
        if deployment is None:
            return error(404, f"deployment {deployment_id} not found")
        deployment["reads"] += 1
        if deployment["state"] == "CREATING" and deployment["reads"] >= 2:
            deployment.update(state="READY", replicaCount=1)
        return public(deployment)

    @app.delete(prefix + "/deployments/{deployment_id}")
    async def delete_deployment(account: str, deployment_id: str, request: Request):
        if (answer := refused(request, "delete_deployment", account)) is not None:
            return answer
        if api.deployments.pop(deployment_id, None) is None:
            return error(404, f"deployment {deployment_id} not found")
        return {}

    # ------------------------------------------------------------------ inference

    async def chat(request: Request):
        if (answer := refused(request, "chat_completions")) is not None:
            return answer
        body = await request.json()
        model, messages = body.get("model", ""), body.get("messages", [])
        api.chat_requests.append((model, messages))
        api.chat_params.append(body)
        base, _, deployment = model.partition("#")
        if deployment:
            served = api.deployments.get(deployment.rsplit("/", 1)[-1])
            if served is None or served["state"] != "READY" or served.get("baseModel") != base:
                return inference_error(404, f"Model {model} not found, inaccessible, and/or not deployed",
                                       "NOT_FOUND")
        elif not base.startswith("accounts/fireworks/models/"):  # a fine-tune is served only by a deployment
            return inference_error(404, f"Model {model} not found, inaccessible, and/or not deployed", "NOT_FOUND")
        return {"id": f"chatcmpl-{len(api.chat_requests)}", "object": "chat.completion", "created": 0, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": CANNED_ANSWER},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 8, "completion_tokens": 6, "total_tokens": 14}}

    app.post("/v1/chat/completions")(chat)
    app.post("/inference/v1/chat/completions")(chat)
    return app


# ---------------------------------------------------------------------- job progression


def advance(api: FireworksApi, job_id: str, base_url: str) -> None:
    """One read moves the job on: CREATING -> VALIDATING -> RUNNING (a step per read) -> COMPLETED / FAILED."""
    job = api.jobs[job_id]
    state = job["state"]
    if state not in ("JOB_STATE_CREATING", "JOB_STATE_VALIDATING", "JOB_STATE_RUNNING"):
        return
    api.reads[job_id] += 1
    job["updateTime"] = now()
    if state == "JOB_STATE_CREATING":
        job["state"] = "JOB_STATE_VALIDATING"
        return
    done = len(api.metrics[job_id])
    if api.fail and done >= 1:
        job.update(state="JOB_STATE_FAILED", status={"code": "INTERNAL", "message": FAILURE}, completedTime=now())
        return
    if done >= api.steps:
        job.update(state="JOB_STATE_COMPLETED", completedTime=now(), jobProgress={"percent": 100,
                   "epoch": int(job.get("epochs") or 1) - 1})
        return
    step = done + 1
    settings = job.get("trainingConfig") or job  # a DPO job keeps its training settings under trainingConfig
    epochs = int(settings.get("epochs") or 1)
    api.metrics[job_id].append({"step": step, "timestamp": now(), "train/loss": 2.0 - 0.25 * step,
                                "eval/loss": 2.5 - 0.25 * step, "train/learning_rate": float(settings["learningRate"]),
                                "train/epoch": (step - 1) * epochs // api.steps})
    job.update(state="JOB_STATE_RUNNING", jobProgress={"percent": 100 * step // api.steps,
                                                       "epoch": (step - 1) * epochs // api.steps},
               metricsFileSignedUrl=f"{base_url}signed/metrics/{job_id}.jsonl?X-Goog-Signature=loopback")


def model_path(account: str, model: str) -> str:
    return model if model.startswith("accounts/") else f"accounts/{account}/models/{model}"


def model_of_completed_job(api: FireworksApi, model: str) -> bool:
    return any((j.get("trainingConfig") or j)["outputModel"] == model and j["state"] == "JOB_STATE_COMPLETED"
               for j in api.jobs.values())


def public(deployment: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in deployment.items() if k != "reads"}


# ---------------------------------------------------------------------- request checks


def check_job_body(api: FireworksApi, body: dict[str, Any]) -> str | None:
    """What Fireworks refuses at create (400 INVALID_ARGUMENT), for the fields the adapter sends."""
    dataset = body.get("dataset", "")
    if not dataset:
        return "dataset is required"
    for key in ("dataset", "evaluationDataset"):
        name = body.get(key)
        if name:
            entry = api.files.get(name.rsplit("/", 1)[-1])
            if entry is None or entry["dataset"]["name"] != name or entry["dataset"]["state"] != "READY":
                return f"{key} {name} not found or not ready"
    if bool(body.get("baseModel")) == bool(body.get("warmStartFrom")):
        return "exactly one of baseModel or warmStartFrom must be set"
    if "gradientAccumulationSteps" in body:
        return "gradientAccumulationSteps is not supported by Training V2: use batchSizeSamples"
    scheduler = body.get("lrScheduler")
    if scheduler is not None and (not isinstance(scheduler, dict) or len(scheduler) != 1
                                  or next(iter(scheduler)) not in ("constant", "linear", "cosine")):
        return "lrScheduler must set exactly one of constant, linear or cosine"
    for key in ("epochs", "loraRank", "maxContextLength", "batchSizeSamples"):
        if key in body and (not isinstance(body[key], int) or body[key] <= 0):
            return f"{key} must be a positive integer"
    return None


def check_dpo_body(api: FireworksApi, body: dict[str, Any]) -> str | None:
    """What Fireworks' DPO API refuses at create: the dataset must hold preference rows, trainingConfig the
    same settings as SFT's, lossConfig DPO (or ORPO) with 0 < beta < 0.5."""
    training = body.get("trainingConfig")
    if not isinstance(training, dict):
        return "trainingConfig is required"
    problem = check_job_body(api, {"dataset": body.get("dataset", ""), **training})
    if problem:
        return problem
    entry = api.files.get(str(body["dataset"]).rsplit("/", 1)[-1])
    if any("preferred_output" not in json.loads(line) for line in entry["content"].splitlines() if line.strip()):
        return f"dataset {body['dataset']} has no preference pairs (input, preferred_output, non_preferred_output)"
    loss = body.get("lossConfig") or {"method": "DPO"}
    if loss.get("method") not in ("DPO", "ORPO"):
        return f"lossConfig.method {loss.get('method')} is not a preference loss"
    beta = (loss.get("dpo") or {}).get("beta")
    if beta is not None and not (isinstance(beta, int | float) and 0 < beta < 0.5):
        return f"lossConfig.dpo.beta must be > 0 and < 0.5, got {beta}"
    return None


def check_chat_jsonl(content: bytes) -> str | None:
    lines = [line for line in content.splitlines() if line.strip()]
    if len(lines) < 3:
        return f"{len(lines)} examples; at least 3 are required"
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except ValueError:
            return f"line {number} is not JSON"
        if isinstance(row, dict) and "preferred_output" in row:  # a DPO dataset (docs: DPO fine-tuning)
            if not isinstance((row.get("input") or {}).get("messages"), list) or not row.get("non_preferred_output"):
                return f"line {number} is not a preference pair (input.messages, preferred/non_preferred_output)"
            continue
        if not isinstance(row, dict) or not isinstance(row.get("messages"), list) or not row["messages"]:
            return f"line {number} has no messages array"
    return None


def multipart(content_type: str, body: bytes) -> dict[str, tuple[str, bytes]]:
    """multipart/form-data fields -> (filename, bytes), parsed with the standard library."""
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[name] = (part.get_filename() or "", part.get_payload(decode=True) or b"")
    return fields


def parse_filter(text: str) -> list[tuple[str, str]]:
    """The AIP-160 subset the server answers: `field="value"` (or `field = "value"`) clauses joined by AND."""
    clauses = []
    for clause in filter(None, (c.strip() for c in re.split(r"\s+AND\s+", text.strip()))):
        match = re.fullmatch(r'([A-Za-z_.]+)\s*=\s*"([^"]*)"', clause)
        if match is None:
            raise ValueError(f"unsupported filter {clause!r}")
        clauses.append((match.group(1), match.group(2)))
    return clauses
