"""The wire formats of the tinker SDK, decoded into plain Python / numpy and encoded back.

What the SDK (0.38) sends and accepts:
- every request is JSON except `forward_backward`, which is the protobuf `ForwardBackwardRequest` of
  tinker/proto/tinker_public_pb2 (`Content-Type: application/x-protobuf`, zstd-compressed with
  `Content-Encoding: zstd` when the server's client config asks for it; this server does not, but accepts it);
- a future whose result is a `ForwardBackwardOutput` or a `SampleResponse` is retrieved with
  `Accept: application/x-protobuf` and the SDK refuses JSON for those two types, so they are encoded as
  protobuf (JSON is still answered to a client that does not ask for protobuf, e.g. curl);
- everything else is JSON shaped like the SDK's pydantic types.

Tensors arrive dense or sparse CSR (the SDK sparsifies 2-D `target_tokens` / `weights`); both become dense
numpy arrays here. Only token chunks are supported as model input: image and audio chunks are refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from thinker.tinker_serve.errors import UserError

PROTOBUF = "application/x-protobuf"


@dataclass
class Datum:
    """One sequence of a forward_backward request: its input tokens and its loss inputs (dense arrays)."""

    tokens: list[int]
    inputs: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class FwdBwdRequest:
    model_id: str
    seq_id: int | None
    loss_fn: str
    loss_fn_config: dict[str, float | str]
    data: list[Datum]
    forward_only: bool
    # a datum that cannot be decoded fails the request's future, not the HTTP call: its seq id must still be
    # filled, or every later request of the model would wait for it
    error: str | None = None


@dataclass
class FwdBwdOutput:
    """Per-datum output arrays (`logprobs`, `elementwise_loss`, ...) and the batch's metrics."""

    outputs: list[dict[str, np.ndarray]]
    metrics: dict[str, float]
    output_type: str = "ArrayRecord"


@dataclass
class SampledSequence:
    tokens: list[int]
    logprobs: list[float] | None
    stop_reason: str  # "stop" | "length"
    topk: tuple[np.ndarray, np.ndarray] | None = None  # (token ids [n, k], logprobs [n, k])


@dataclass
class SampleOutput:
    sequences: list[SampledSequence]
    prompt_logprobs: list[float | None] | None = None
    topk_prompt: tuple[np.ndarray, np.ndarray] | None = None


def _pb() -> Any:
    from tinker.proto import tinker_public_pb2

    return tinker_public_pb2


def decompress(body: bytes, content_encoding: str | None) -> bytes:
    if (content_encoding or "").strip().lower() == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(body)
    return body


# ---------------------------------------------------------------- protobuf requests


def _np_dtype(pb: Any, dtype: int) -> np.dtype:
    table = {pb.DTYPE_FLOAT32: np.float32, pb.DTYPE_INT64: np.int64, pb.DTYPE_INT32: np.int32}
    if dtype not in table:
        raise UserError(f"tensor dtype {dtype} is not supported (send float32 or int64 tensors)")
    return np.dtype(table[dtype])


def _tensor_from_proto(pb: Any, msg: Any, name: str) -> np.ndarray:
    dtype = _np_dtype(pb, msg.dtype)
    shape = [int(s) for s in msg.shape]
    if msg.WhichOneof("encoding") == "sparse_csr":
        csr = msg.sparse_csr
        values = np.frombuffer(csr.values, dtype=dtype)
        crow = np.frombuffer(csr.crow_indices, dtype=np.int64)
        col = np.frombuffer(csr.col_indices, dtype=np.int64)
        return _densify(values, crow, col, shape, name)
    array = np.frombuffer(msg.dense, dtype=dtype).copy()
    if shape:
        if math.prod(shape) != array.size:
            raise UserError(f"loss_fn_inputs[{name!r}] has {array.size} values for shape {shape}")
        array = array.reshape(shape)
    return array


def _densify(values: np.ndarray, crow: np.ndarray, col: np.ndarray, shape: list[int], name: str) -> np.ndarray:
    if len(shape) != 2 or len(crow) != shape[0] + 1 or len(col) != len(values):
        raise UserError(f"loss_fn_inputs[{name!r}] is not a valid sparse CSR tensor of shape {shape}")
    dense = np.zeros(shape, dtype=values.dtype)
    for row in range(shape[0]):
        start, end = int(crow[row]), int(crow[row + 1])
        dense[row, col[start:end]] = values[start:end]
    return dense


def _chunks_to_tokens(pb: Any, chunks: Any) -> list[int]:
    tokens: list[int] = []
    for chunk in chunks:
        kind = chunk.WhichOneof("chunk")
        if kind != "encoded_text":
            raise UserError(f"model_input chunks of type {kind!r} are not supported by thinker tinker-serve "
                            "(text models only): send token chunks (ModelInput.from_ints)")
        tokens.extend(int(t) for t in np.frombuffer(chunk.encoded_text.tokens, dtype=np.int32))
    return tokens


def fwdbwd_request_from_proto(body: bytes) -> FwdBwdRequest:
    pb = _pb()
    msg = pb.ForwardBackwardRequest()
    try:
        msg.ParseFromString(body)
    except Exception as exc:  # protobuf's DecodeError
        raise UserError(f"the forward_backward body is not a ForwardBackwardRequest protobuf: {exc}") from exc
    config: dict[str, float | str] = {k: float(v) for k, v in msg.loss_fn_config.items()}
    for key, value in msg.loss_fn_config_v2.items():  # v2 wins when both are set
        config[key] = value.text if value.WhichOneof("value") == "text" else float(value.number)
    data, error = _decode_all(lambda: [
        Datum(tokens=_chunks_to_tokens(pb, d.model_input),
              inputs={name: _tensor_from_proto(pb, t, name) for name, t in d.loss_fn_inputs.items()})
        for d in msg.data
    ])
    return FwdBwdRequest(model_id=msg.model_id, seq_id=int(msg.seq_id), loss_fn=msg.loss_fn,
                         loss_fn_config=config, data=data, forward_only=bool(msg.forward_only), error=error)


def _decode_all(decode: Any) -> tuple[list[Datum], str | None]:
    try:
        return decode(), None
    except UserError as exc:
        return [], str(exc)


# ---------------------------------------------------------------- JSON requests


def tokens_from_json(model_input: Any, where: str = "model_input") -> list[int]:
    if not isinstance(model_input, dict) or not isinstance(model_input.get("chunks"), list):
        raise UserError(f"{where} must be a ModelInput object with a list of chunks")
    tokens: list[int] = []
    for chunk in model_input["chunks"]:
        kind = chunk.get("type", "encoded_text") if isinstance(chunk, dict) else None
        if kind != "encoded_text":
            raise UserError(f"{where} chunks of type {kind!r} are not supported by thinker tinker-serve "
                            "(text models only): send token chunks (ModelInput.from_ints)")
        tokens.extend(int(t) for t in chunk.get("tokens", []))
    return tokens


def tensor_from_json(obj: Any, name: str) -> np.ndarray:
    if isinstance(obj, list):
        return np.asarray(obj)
    if not isinstance(obj, dict) or "data" not in obj:
        raise UserError(f"loss_fn_inputs[{name!r}] must be a TensorData object")
    dtype = np.dtype(np.int64 if obj.get("dtype") == "int64" else np.float32)
    values = np.asarray(obj["data"], dtype=dtype)
    shape = obj.get("shape")
    if obj.get("sparse_crow_indices") is not None:
        return _densify(values, np.asarray(obj["sparse_crow_indices"], dtype=np.int64),
                        np.asarray(obj.get("sparse_col_indices") or [], dtype=np.int64), list(shape or []), name)
    if shape:
        if math.prod(shape) != values.size:
            raise UserError(f"loss_fn_inputs[{name!r}] has {values.size} values for shape {shape}")
        values = values.reshape(shape)
    return values


def fwdbwd_request_from_json(body: dict[str, Any], forward_only: bool) -> FwdBwdRequest:
    """The JSON shapes of ForwardBackwardRequest (`forward_backward_input`) and ForwardRequest (`forward_input`)."""
    fb = body.get("forward_backward_input") or body.get("forward_input")
    if not isinstance(fb, dict):
        raise UserError("the request needs forward_backward_input (or forward_input) with data and loss_fn")
    data, error = _decode_all(lambda: [
        Datum(tokens=tokens_from_json(d.get("model_input"), f"data[{i}].model_input"),
              inputs={k: tensor_from_json(v, k) for k, v in (d.get("loss_fn_inputs") or {}).items()})
        for i, d in enumerate(fb.get("data") or [])
    ])
    seq_id = body.get("seq_id")
    return FwdBwdRequest(model_id=str(body.get("model_id", "")), seq_id=None if seq_id is None else int(seq_id),
                         loss_fn=str(fb.get("loss_fn", "")), loss_fn_config=dict(fb.get("loss_fn_config") or {}),
                         data=data, forward_only=forward_only or bool(body.get("forward_only", False)), error=error)


# ---------------------------------------------------------------- responses


def _tensor_json(array: np.ndarray) -> dict[str, Any]:
    dtype = "int64" if np.issubdtype(array.dtype, np.integer) else "float32"
    return {"data": array.reshape(-1).tolist(), "dtype": dtype, "shape": list(array.shape)}


def fwdbwd_output_proto(out: FwdBwdOutput) -> bytes:
    """One ArrayRecord holding every datum: per field the datums' values back to back, with byte offsets."""
    pb = _pb()
    msg = pb.ForwardBackwardOutput(loss_fn_output_type=out.output_type)
    for key, value in out.metrics.items():
        msg.metrics[key] = float(value)
    if out.outputs:
        record = msg.loss_fn_outputs.add()
        record.type_tag = out.output_type
        record.num_datums = len(out.outputs)
        for name in out.outputs[0]:
            arrays = [np.ascontiguousarray(o[name]) for o in out.outputs]
            integer = np.issubdtype(arrays[0].dtype, np.integer)
            np_dtype = np.int64 if integer else np.float32
            arrays = [a.astype(np_dtype, copy=False) for a in arrays]
            tensor = record.fields[name]
            tensor.dtype = pb.DTYPE_INT64 if integer else pb.DTYPE_FLOAT32
            tensor.trailing_shape.extend(list(arrays[0].shape[1:]))
            tensor.data = b"".join(a.tobytes() for a in arrays)
            tensor.offsets = np.cumsum([0] + [a.nbytes for a in arrays], dtype=np.int64).tobytes()
    return msg.SerializeToString()


def fwdbwd_output_json(out: FwdBwdOutput) -> dict[str, Any]:
    return {
        "loss_fn_output_type": out.output_type,
        "loss_fn_outputs": [{k: _tensor_json(v) for k, v in o.items()} for o in out.outputs],
        "metrics": dict(out.metrics),
    }


def _topk_proto(pb: Any, target: Any, topk: tuple[np.ndarray, np.ndarray]) -> None:
    ids, logprobs = topk
    target.token_ids = np.ascontiguousarray(ids, dtype=np.int32).tobytes()
    target.logprobs = np.ascontiguousarray(logprobs, dtype=np.float32).tobytes()
    target.length, target.k = int(ids.shape[0]), int(ids.shape[1]) if ids.ndim == 2 else 0


def sample_output_proto(out: SampleOutput) -> bytes:
    pb = _pb()
    msg = pb.SampleResponse()
    for seq in out.sequences:
        s = msg.sequences.add()
        s.stop_reason = pb.STOP_REASON_STOP if seq.stop_reason == "stop" else pb.STOP_REASON_LENGTH
        s.tokens = np.asarray(seq.tokens, dtype=np.int32).tobytes()
        if seq.logprobs is not None:
            s.logprobs = np.asarray(seq.logprobs, dtype=np.float32).tobytes()
        if seq.topk is not None:
            _topk_proto(pb, s.topk_sampled_logprobs, seq.topk)
    if out.prompt_logprobs is not None:
        values = [math.nan if v is None else v for v in out.prompt_logprobs]
        msg.prompt_logprobs = np.asarray(values, dtype=np.float32).tobytes()
    if out.topk_prompt is not None:
        _topk_proto(pb, msg.topk_prompt_logprobs, out.topk_prompt)
    return msg.SerializeToString()


def sample_output_json(out: SampleOutput, sequence_ids: list[str]) -> dict[str, Any]:
    result: dict[str, Any] = {
        "type": "sample",
        "sequences": [
            {"stop_reason": s.stop_reason, "tokens": list(s.tokens), "logprobs": s.logprobs, "sequence_id": sid}
            for s, sid in zip(out.sequences, sequence_ids, strict=True)
        ],
    }
    if out.prompt_logprobs is not None:
        result["prompt_logprobs"] = out.prompt_logprobs
    return result
