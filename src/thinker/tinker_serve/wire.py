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

from thinker.tinker_serve import fields
from thinker.tinker_serve.errors import PayloadTooLarge, UserError

PROTOBUF = "application/x-protobuf"
MAX_BODY_BYTES = 64 * 2**20  # a request body, decompressed; the SDK sends forward_backward in ~5 MB chunks
MAX_TENSOR_VALUES = 2**24  # one loss input, dense: a sparse tensor's declared shape cannot ask for more


@dataclass(frozen=True)
class Span:
    """A run of a datum's provenance (`Datum.with_provenance`): `length` positions that are positions
    [offset, offset + length) of a sampled sequence's prompt ("prompt") or of its sampled tokens ("sampled")."""

    kind: str
    sequence_id: str
    offset: int
    length: int


@dataclass
class Datum:
    """One sequence of a forward_backward request: its input tokens and its loss inputs (dense arrays).

    `input_spans` / `target_spans` are its provenance (tiling the input tokens / the target tokens), None when
    it has none; `stability` is what the sampler recorded for its targets (sampler logprobs, sampled-token mask),
    filled in by the server from the provenance for stable_reinforce."""

    tokens: list[int]
    inputs: dict[str, np.ndarray] = field(default_factory=dict)
    input_spans: list[Span] | None = None
    target_spans: list[Span] | None = None
    stability: dict[str, np.ndarray] | None = None


@dataclass
class FwdBwdRequest:
    model_id: str
    seq_id: int | None
    loss_fn: str
    loss_fn_config: dict[str, float | str]
    data: list[Datum]
    forward_only: bool
    # what could not be decoded: the request is refused (400), and its seq id used up all the same, or every
    # later request of the model would wait for it (TinkerService.refuse)
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


def decompress(body: bytes, content_encoding: str | None, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body as sent, zstd-decoded when its Content-Encoding says so, at most `limit` bytes either way.

    Decoded as a stream that stops one byte past the limit: a small body that expands to gigabytes is refused
    with 413 instead of filling the memory."""
    if len(body) > limit:
        raise PayloadTooLarge(f"the request body has {len(body)} bytes; this server takes at most {limit}")
    if (content_encoding or "").strip().lower() != "zstd":
        return body
    import zstandard

    try:
        with zstandard.ZstdDecompressor().stream_reader(body, read_across_frames=True) as reader:
            parts: list[bytes] = []
            size = 0
            while size <= limit and (part := reader.read(limit + 1 - size)):
                parts.append(part)
                size += len(part)
        raw = b"".join(parts)
    except zstandard.ZstdError as exc:
        raise UserError(f"the request body is not valid zstd (Content-Encoding: zstd): {exc}") from exc
    if len(raw) > limit:
        raise PayloadTooLarge(f"the request body decompresses to more than {limit} bytes, this server's bound: "
                              "send smaller requests (fewer datums per forward_backward)")
    return raw


# ---------------------------------------------------------------- protobuf requests


def _np_dtype(pb: Any, dtype: int) -> np.dtype:
    table = {pb.DTYPE_FLOAT32: np.float32, pb.DTYPE_INT64: np.int64, pb.DTYPE_INT32: np.int32}
    if dtype not in table:
        raise UserError(f"tensor dtype {dtype} is not supported (send float32 or int64 tensors)")
    return np.dtype(table[dtype])


def _shape(shape: Any, name: str) -> list[int]:
    if not isinstance(shape, (list, tuple)) or any(isinstance(n, bool) or not isinstance(n, int) or n < 0
                                                   for n in shape):
        raise UserError(f"loss_fn_inputs[{name!r}].shape must be a list of non-negative integers")
    if math.prod(shape) > MAX_TENSOR_VALUES:
        raise UserError(f"loss_fn_inputs[{name!r}] has shape {list(shape)}: more than this server's "
                        f"{MAX_TENSOR_VALUES} values per tensor")
    return list(shape)


def _numeric(array: np.ndarray, name: str) -> np.ndarray:
    """Numbers only, and finite: one NaN weight or advantage would poison every weight at the next optim_step."""
    if array.dtype.kind not in "iuf":
        raise UserError(f"loss_fn_inputs[{name!r}] must hold numbers, not {array.dtype}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise UserError(f"loss_fn_inputs[{name!r}] has NaN or infinite values")
    return array


def _frombuffer(buffer: bytes, dtype: Any, name: str) -> np.ndarray:
    try:
        return np.frombuffer(buffer, dtype=dtype)
    except ValueError as exc:
        raise UserError(f"loss_fn_inputs[{name!r}] is not a whole number of {np.dtype(dtype)} values") from exc


def _tensor_from_proto(pb: Any, msg: Any, name: str) -> np.ndarray:
    dtype = _np_dtype(pb, msg.dtype)
    shape = _shape([int(s) for s in msg.shape], name)
    if msg.WhichOneof("encoding") == "sparse_csr":
        csr = msg.sparse_csr
        values = _frombuffer(csr.values, dtype, name)
        crow = _frombuffer(csr.crow_indices, np.int64, name)
        col = _frombuffer(csr.col_indices, np.int64, name)
        return _densify(values, crow, col, shape, name)
    array = _numeric(_frombuffer(msg.dense, dtype, name).copy(), name)
    if shape:
        if math.prod(shape) != array.size:
            raise UserError(f"loss_fn_inputs[{name!r}] has {array.size} values for shape {shape}")
        array = array.reshape(shape)
    return array


def _densify(values: np.ndarray, crow: np.ndarray, col: np.ndarray, shape: list[int], name: str) -> np.ndarray:
    shape = _shape(shape, name)
    _numeric(values, name)
    valid = len(shape) == 2 and len(crow) == shape[0] + 1 and len(col) == len(values)
    # row pointers from 0 to the number of values, never decreasing; column indices inside the shape
    valid = valid and int(crow[0]) == 0 and int(crow[-1]) == len(values) and bool((np.diff(crow) >= 0).all())
    valid = valid and (len(col) == 0 or (int(col.min()) >= 0 and int(col.max()) < shape[1]))
    if not valid:
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

    def decode(request: FwdBwdRequest) -> None:
        config: dict[str, Any] = {k: float(v) for k, v in msg.loss_fn_config.items()}
        for key, value in msg.loss_fn_config_v2.items():  # v2 wins when both are set
            config[key] = value.text if value.WhichOneof("value") == "text" else float(value.number)
        request.loss_fn, request.loss_fn_config = msg.loss_fn, loss_fn_config(config)
        request.forward_only = bool(msg.forward_only)
        request.data = [Datum(tokens=_chunks_to_tokens(pb, d.model_input),
                              inputs={name: _tensor_from_proto(pb, t, name) for name, t in d.loss_fn_inputs.items()},
                              input_spans=_spans_from_proto(d.model_input_spans, f"data[{i}].model_input_spans"),
                              target_spans=_spans_from_proto(d.loss_fn_input_spans,
                                                             f"data[{i}].loss_fn_input_spans"))
                        for i, d in enumerate(msg.data)]

    return _decoded(msg.model_id, int(msg.seq_id), False, decode)


MAX_SPAN = 2**31  # a span's offset or length: more than any sequence


def _span(kind: str, sequence_id: Any, offset: Any, length: Any, where: str) -> Span:
    if not isinstance(sequence_id, str) or not sequence_id:
        raise UserError(f"{where} needs a non-empty sequence_id")
    values = []
    for name, value in (("offset", offset), ("length", length)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_SPAN:
            raise UserError(f"{where}.{name} must be a whole number from 0, got {value!r}")
        values.append(value)
    return Span(kind, sequence_id, values[0], values[1])


def _spans_from_proto(spans: Any, where: str) -> list[Span] | None:
    """Provenance runs (ProvenanceSpan: prompt_tokens | sampled_tokens); None for a datum without provenance."""
    if not len(spans):
        return None
    out = []
    for j, span in enumerate(spans):
        arm = span.WhichOneof("span")
        if arm is None:
            raise UserError(f"{where}[{j}] is neither prompt_tokens nor sampled_tokens")
        run = getattr(span, arm)
        out.append(_span("prompt" if arm == "prompt_tokens" else "sampled", run.sequence_id, int(run.offset),
                         int(run.length), f"{where}[{j}]"))
    return out


def spans_from_json(spans: Any, where: str) -> list[Span] | None:
    """The JSON form of the same runs: [{"prompt_tokens" | "sampled_tokens": {sequence_id, offset, length}}]."""
    if spans is None:
        return None
    if not isinstance(spans, list):
        raise UserError(f"{where} must be a list of provenance spans")
    out = []
    for j, span in enumerate(spans):
        arms = [k for k in ("prompt_tokens", "sampled_tokens") if isinstance(span, dict) and k in span]
        if len(arms) != 1 or not isinstance(span[arms[0]], dict):
            raise UserError(f"{where}[{j}] must be an object with one of prompt_tokens or sampled_tokens")
        run = span[arms[0]]
        out.append(_span("prompt" if arms[0] == "prompt_tokens" else "sampled", run.get("sequence_id"),
                         run.get("offset", 0), run.get("length"), f"{where}[{j}]"))
    return out or None


def _decoded(model_id: str, seq_id: int | None, forward_only: bool, decode: Any) -> FwdBwdRequest:
    """The request as far as `decode` gets: what it cannot decode becomes `error`, under the model and seq id."""
    request = FwdBwdRequest(model_id=model_id, seq_id=seq_id, loss_fn="", loss_fn_config={}, data=[],
                            forward_only=forward_only)
    try:
        decode(request)
    except UserError as exc:
        request.error = str(exc)
    return request


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
        tokens.extend(fields.integers(chunk.get("tokens", []), f"{where} tokens"))
    return tokens


def _json_array(values: Any, dtype: Any, name: str, what: str) -> np.ndarray:
    try:
        return _numeric(np.asarray(values, dtype=dtype), name)
    except (TypeError, ValueError, OverflowError) as exc:
        raise UserError(f"loss_fn_inputs[{name!r}]{what} must be a list of numbers") from exc


def tensor_from_json(obj: Any, name: str) -> np.ndarray:
    if isinstance(obj, list):
        array = _json_array(obj, None, name, "")  # a bare list, as curl might send
        _shape(list(array.shape), name)
        return array
    if not isinstance(obj, dict) or "data" not in obj:
        raise UserError(f"loss_fn_inputs[{name!r}] must be a TensorData object")
    dtype = np.dtype(np.int64 if obj.get("dtype") == "int64" else np.float32)
    values = _json_array(obj["data"], dtype, name, ".data")
    shape = obj.get("shape")
    if obj.get("sparse_crow_indices") is not None:
        return _densify(values, _json_array(obj["sparse_crow_indices"], np.int64, name, ".sparse_crow_indices"),
                        _json_array(obj.get("sparse_col_indices") or [], np.int64, name, ".sparse_col_indices"),
                        _shape(shape or [], name), name)
    if shape:
        shape = _shape(shape, name)
        if math.prod(shape) != values.size:
            raise UserError(f"loss_fn_inputs[{name!r}] has {values.size} values for shape {shape}")
        values = values.reshape(shape)
    return values


def loss_fn_config(config: Any) -> dict[str, float | str]:
    """Numbers (finite) or strings, by name: PPO's clip thresholds and the like."""
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise UserError("loss_fn_config must be an object of numbers and strings")
    return {str(k): v if isinstance(v, str) else fields.number(config, k, where="loss_fn_config.")
            for k, v in config.items()}


def fwdbwd_request_from_json(body: dict[str, Any], forward_only: bool) -> FwdBwdRequest:
    """The JSON shapes of ForwardBackwardRequest (`forward_backward_input`) and ForwardRequest (`forward_input`)."""

    def decode(request: FwdBwdRequest) -> None:
        fb = body.get("forward_backward_input") or body.get("forward_input")
        if not isinstance(fb, dict):
            raise UserError("the request needs forward_backward_input (or forward_input) with data and loss_fn")
        data = fb.get("data") or []
        if not isinstance(data, list):
            raise UserError("forward_backward_input.data must be a list of Datum objects")
        request.loss_fn, request.loss_fn_config = fields.text(fb, "loss_fn", ""), loss_fn_config(fb.get("loss_fn_config"))
        request.forward_only = forward_only or fields.boolean(body, "forward_only", False)
        request.data = [Datum(tokens=tokens_from_json(d.get("model_input"), f"data[{i}].model_input"),
                              inputs={k: tensor_from_json(v, k) for k, v in _loss_inputs(d, i).items()},
                              input_spans=spans_from_json(d.get("model_input_spans"), f"data[{i}].model_input_spans"),
                              target_spans=spans_from_json(d.get("loss_fn_input_spans"),
                                                           f"data[{i}].loss_fn_input_spans"))
                        for i, d in enumerate(_datums(data))]

    return _decoded(fields.text(body, "model_id", ""), fields.integer(body, "seq_id", None, low=0), forward_only, decode)


def _datums(data: list[Any]) -> list[dict[str, Any]]:
    for i, d in enumerate(data):
        if not isinstance(d, dict):
            raise UserError(f"data[{i}] must be a Datum object")
    return data


def _loss_inputs(datum: dict[str, Any], i: int) -> dict[str, Any]:
    inputs = datum.get("loss_fn_inputs") or {}
    if not isinstance(inputs, dict):
        raise UserError(f"data[{i}].loss_fn_inputs must be an object of tensors")
    return inputs


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
