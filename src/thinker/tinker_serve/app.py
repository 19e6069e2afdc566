"""The HTTP routes of the tinker protocol (SDK 0.38) and the API-key check.

Every request needs an `X-API-Key` that starts with `tml-` (or, when THINKER_SERVE_API_KEYS lists keys, one
of those); otherwise 401 with a JSON error. Keys are compared, never logged. Routes the SDK has but this
server does not implement (external weights, publishing, custom losses on the server, ...) answer 404
with an `error` saying so.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from thinker.tinker_serve import wire
from thinker.tinker_serve.errors import PayloadTooLarge, ServeError, UserError
from thinker.tinker_serve.futures import FutureEntry
from thinker.tinker_serve.service import TinkerService

log = logging.getLogger("thinker")

KEYS_ENV = "THINKER_SERVE_API_KEYS"
KEY_PREFIX = "tml-"
OPEN_PATHS = {"/api/v1/healthz"}

# The flags /api/v1/client/config resolves for the SDK (tinker.types.ClientConfigResponse): plain API keys,
# uncompressed protobuf forward_backward bodies, per-request future polling, losses run client-side.
CLIENT_CONFIG = {
    "pjwt_auth_enabled": False,
    "credential_default_source": "api_key",
    "proto_compress_fwdbwd": False,
    "parallel_fwdbwd_chunks": True,
    "sample_use_retrieve_futures": False,
    "custom_loss_server_side": False,
    "sample_join_sampling_session": False,
}


def _error(status: int, message: str, category: str = "user", headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "category": category}, status_code=status, headers=headers)


def key_accepted(key: str | None, allowed: set[str] | None) -> bool:
    if not key:
        return False
    if allowed:
        return any(hmac.compare_digest(key.encode(), k.encode()) for k in allowed)
    return key.startswith(KEY_PREFIX) and len(key) > len(KEY_PREFIX)


def create_app(service: TinkerService, *, api_keys: set[str] | None = None,
               long_poll_s: float = 20.0) -> FastAPI:
    state = {"stopping": False}

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        service.futures.bind_loop(asyncio.get_running_loop())
        yield
        state["stopping"] = True

    app = FastAPI(title="thinker tinker-serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.tinker = state

    @app.middleware("http")
    async def gate(request: Request, call_next: Any) -> Response:
        path = request.url.path
        if path not in OPEN_PATHS and not key_accepted(request.headers.get("x-api-key"), api_keys):
            which = f"one of the keys in {KEYS_ENV}" if api_keys else f"a key that starts with {KEY_PREFIX}"
            return _error(401, f"missing or rejected X-API-Key: this thinker tinker-serve accepts {which} "
                               "(pass api_key= to tinker.ServiceClient, or set TINKER_API_KEY)")
        return await call_next(request)

    @app.exception_handler(ServeError)
    async def serve_error(_request: Request, exc: ServeError) -> JSONResponse:
        return _error(exc.status, str(exc), exc.category)

    async def body_json(request: Request) -> dict[str, Any]:
        raw = await read_body(request)
        try:
            body = json.loads(raw or b"{}")
        except (ValueError, RecursionError) as exc:
            raise UserError(f"the request body is not JSON: {str(exc)[:200]}") from exc
        if not isinstance(body, dict):
            raise UserError("the request body must be a JSON object")
        return body

    def future(entry: FutureEntry, **extra: Any) -> dict[str, Any]:
        return {"request_id": entry.request_id, **extra}

    # ---------------------------------------------------------- service, session, telemetry

    @app.get("/api/v1/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok"}

    @app.post("/api/v1/client/config")
    async def client_config() -> dict[str, Any]:
        return dict(CLIENT_CONFIG)

    @app.post("/api/v1/client/dynamic_config")
    async def client_dynamic_config() -> dict[str, Any]:
        return {}

    @app.get("/api/v1/get_server_capabilities")
    async def capabilities() -> dict[str, Any]:
        return service.capabilities()

    @app.post("/api/v1/create_session")
    async def create_session(request: Request) -> dict[str, Any]:
        return service.create_session(await body_json(request))

    @app.post("/api/v1/session_heartbeat")
    async def session_heartbeat(request: Request) -> dict[str, Any]:
        return service.heartbeat(str((await body_json(request)).get("session_id", "")))

    @app.post("/api/v1/sessions/{session_id}/finish")
    async def finish_session(session_id: str, request: Request) -> dict[str, Any]:
        service.finish_session(session_id, await body_json(request))
        return {}

    @app.post("/api/v1/telemetry")
    async def telemetry(request: Request) -> dict[str, Any]:
        await read_body(request)  # accepted and dropped: nothing leaves this machine
        return {"status": "accepted"}

    # ---------------------------------------------------------- training

    @app.post("/api/v1/create_model")
    async def create_model(request: Request) -> dict[str, Any]:
        return service.create_model(await body_json(request))

    @app.post("/api/v1/get_info")
    async def get_info(request: Request) -> dict[str, Any]:
        return service.get_info(str((await body_json(request)).get("model_id", "")))

    @app.post("/api/v1/forward_backward")
    async def forward_backward(request: Request) -> dict[str, Any]:
        raw = wire.decompress(await read_body(request), request.headers.get("content-encoding"))
        if wire.PROTOBUF in request.headers.get("content-type", ""):
            req = wire.fwdbwd_request_from_proto(raw)
        else:
            req = wire.fwdbwd_request_from_json(_json_object(raw), forward_only=False)
        return future(service.forward_backward(req), model_id=req.model_id)

    @app.post("/api/v1/forward")
    async def forward(request: Request) -> dict[str, Any]:
        req = wire.fwdbwd_request_from_json(await body_json(request), forward_only=True)
        return future(service.forward_backward(req), model_id=req.model_id)

    @app.post("/api/v1/optim_step")
    async def optim_step(request: Request) -> dict[str, Any]:
        body = await body_json(request)
        return future(service.optim_step(body), model_id=body.get("model_id"))

    @app.post("/api/v1/save_weights")
    async def save_weights(request: Request) -> dict[str, Any]:
        body = await body_json(request)
        return future(service.save_weights(body), model_id=body.get("model_id"))

    @app.post("/api/v1/save_weights_for_sampler")
    async def save_weights_for_sampler(request: Request) -> dict[str, Any]:
        body = await body_json(request)
        return future(service.save_weights_for_sampler(body), model_id=body.get("model_id"))

    @app.post("/api/v1/load_weights")
    async def load_weights(request: Request) -> dict[str, Any]:
        return future(service.load_weights(await body_json(request)))

    # ---------------------------------------------------------- sampling

    @app.post("/api/v1/create_sampling_session")
    async def create_sampling_session(request: Request) -> dict[str, Any]:
        return service.create_sampling_session(await body_json(request))

    @app.post("/api/v1/join_sampling_session")
    async def join_sampling_session(request: Request) -> dict[str, Any]:
        sampling_session_id = str((await body_json(request)).get("sampling_session_id", ""))
        return {"type": "join_sampling_session", "client_counter": service.sampling.join(sampling_session_id)}

    @app.get("/api/v1/samplers/{sampling_session_id}")
    async def get_sampler(sampling_session_id: str) -> dict[str, Any]:
        return service.get_sampler(sampling_session_id)

    @app.post("/api/v1/asample")
    async def asample(request: Request) -> dict[str, Any]:
        entry, sequence_ids = service.asample(await body_json(request))
        return future(entry, sample_sequence_ids=sequence_ids)

    @app.post("/api/v1/cancel_future")
    async def cancel_future() -> dict[str, Any]:
        return {}  # samples are short here; a cancelled one runs to its end and is never retrieved

    # ---------------------------------------------------------- futures

    @app.post("/api/v1/retrieve_future")
    async def retrieve_future(request: Request) -> Response:
        request_id = str((await body_json(request)).get("request_id", ""))
        entry = service.futures.get(request_id) if state["stopping"] else (
            await service.futures.wait(request_id, long_poll_s))
        if entry is None:
            return _error(404, f"future {request_id!r} is unknown to this server (it restarted?): send the request again")
        if not entry.done:
            return JSONResponse({"type": "try_again", "request_id": request_id, "queue_state": "active"})
        if entry.error is not None:
            return JSONResponse({"error": entry.error, "category": entry.category})
        result = entry.result
        proto = wire.PROTOBUF in request.headers.get("accept", "")
        if isinstance(result, wire.FwdBwdOutput):
            if proto:
                return Response(wire.fwdbwd_output_proto(result), media_type=wire.PROTOBUF)
            return JSONResponse(wire.fwdbwd_output_json(result))
        if isinstance(result, wire.SampleOutput):
            if proto:
                return Response(wire.sample_output_proto(result), media_type=wire.PROTOBUF)
            return JSONResponse(wire.sample_output_json(result, entry.extra.get("sequence_ids", [])))
        return JSONResponse(result)

    # ---------------------------------------------------------- REST: training runs and checkpoints

    @app.get("/api/v1/training_runs")
    async def training_runs(limit: int = 20, offset: int = 0) -> dict[str, Any]:
        return service.training_runs(limit, offset)

    @app.get("/api/v1/training_runs/{model_id}")
    async def training_run(model_id: str) -> dict[str, Any]:
        return service.training_run(model_id)

    @app.get("/api/v1/training_runs/{model_id}/checkpoints")
    async def checkpoints(model_id: str) -> dict[str, Any]:
        return service.checkpoints(model_id)

    @app.delete("/api/v1/training_runs/{model_id}/checkpoints/{checkpoint_id:path}")
    async def delete_checkpoint(model_id: str, checkpoint_id: str) -> dict[str, Any]:
        service.delete_checkpoint(model_id, checkpoint_id)
        return {}

    @app.get("/api/v1/checkpoints")
    async def user_checkpoints(limit: int = 100, offset: int = 0) -> dict[str, Any]:
        return service.user_checkpoints(limit, offset)

    @app.post("/api/v1/weights_info")
    async def weights_info(request: Request) -> dict[str, Any]:
        return service.weights_info(str((await body_json(request)).get("tinker_path", "")))

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def not_implemented(path: str) -> JSONResponse:
        return _error(404, f"/{path} is not implemented by thinker tinker-serve (a local server for LoRA training "
                           "and sampling): this feature needs the hosted Tinker service")

    return app


async def read_body(request: Request) -> bytes:
    """The raw body, read no further than wire.MAX_BODY_BYTES (413 past it, declared or sent)."""
    limit = wire.MAX_BODY_BYTES
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the request body has {declared} bytes; this server takes at most {limit}")
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise PayloadTooLarge(f"the request body has more than {limit} bytes, this server's bound")
        parts.append(part)
    return b"".join(parts)


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, RecursionError) as exc:
        raise UserError(f"the request body is neither a ForwardBackwardRequest protobuf nor JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise UserError("the request body must be a JSON object")
    return body

