"""The server's state and operations, independent of HTTP: sessions, training models, sampling, checkpoints.

Operations on a training model become jobs on the model's SequencedWorker, run in the SDK's seq-id order;
each answers a FutureEntry the SDK retrieves later. A request whose seq id was seen before (a retried send
whose first answer was lost) gets the first request's future instead of running twice.

A request's fields are read strictly at the edge (thinker.tinker_serve.fields): a wrong type, a non-finite
number, a value out of bounds or a datum that cannot be decoded answers 400 at once, and nothing of it runs;
on a training model its seq id is used up all the same (as a failed future), or every later request of the
model would wait for it. Errors found while a request runs go into its future (the SDK raises them as
RequestFailedError); an unknown model or session answers 404 at once.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from thinker.tinker_serve import fields
from thinker.tinker_serve.checkpoints import (
    CheckpointRef,
    CheckpointStore,
    check_name,
    checkpoint_meta,
    iso,
    now,
    parse_checkpoint_id,
)
from thinker.tinker_serve.engine import AdamParams, BaseModel, LoraSpec, TrainingModel, check_datums
from thinker.tinker_serve.errors import NotFound, ServeError, UserError
from thinker.tinker_serve.futures import MAX_FINISHED, FutureEntry, FutureStore, SequencedWorker
from thinker.tinker_serve.sampling import SamplerSource, SamplingParams, SamplingService, generate
from thinker.tinker_serve.stability import StabilityRecords, session_of
from thinker.tinker_serve.wire import FwdBwdRequest, tokens_from_json

log = logging.getLogger("thinker")

MAX_SEEN = 2 * MAX_FINISHED  # (model id, seq id) -> request id, for requests sent twice
MAX_NUM_SAMPLES = 256  # samples of one prompt: they decode as one batch
MAX_TOPK = 100  # top-k logprobs per position
MAX_TTL_S = 10 * 365 * 86400  # a checkpoint's time to live: datetime arithmetic overflows far past this


@dataclass
class ModelSlot:
    model_id: str
    base: str
    spec: LoraSpec
    worker: SequencedWorker
    user_metadata: dict[str, Any] | None = None
    training: TrainingModel | None = None
    failed: str | None = None
    first_entry: str | None = None  # the create / create-from-checkpoint future, for duplicate requests
    last_request: float = field(default_factory=time.time)

    def require(self) -> TrainingModel:
        if self.training is None:
            raise UserError(f"model {self.model_id} could not be created ({self.failed or 'still creating'}): "
                            "create a new training client")
        self.last_request = time.time()
        return self.training


class TinkerService:
    def __init__(self, bases: dict[str, BaseModel], store: CheckpointStore, futures: FutureStore,
                 tokenizer_dirs: dict[str, str]):
        self.bases = bases
        self.store = store
        self.futures = futures
        self.tokenizer_dirs = tokenizer_dirs
        self.sampling = SamplingService(bases, futures)
        self.stability = StabilityRecords()  # sequences sampled with record_stability_info (stable_reinforce)
        self.models: dict[str, ModelSlot] = {}
        self.sessions: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, int], str] = {}
        store.clear_ephemeral()

    def stop(self) -> None:
        self.sampling.stop()
        for slot in list(self.models.values()):
            slot.worker.stop()

    # ---------------------------------------------------------- service

    def capabilities(self) -> dict[str, Any]:
        return {"supported_models": [
            {"model_name": b.name, "max_context_length": b.max_context_length, "trainable": True, "sampleable": True}
            for b in self.bases.values()
        ]}

    def served_base(self, name: str | None) -> BaseModel:
        if name in self.bases:
            return self.bases[name]  # type: ignore[index]
        served = ", ".join(self.bases)
        raise UserError(f"base model {name!r} is not served by this thinker tinker-serve (serving: {served}); "
                        f"use one of those, or restart the server with --models {served},{name}")

    def create_session(self, body: dict[str, Any]) -> dict[str, Any]:
        session_id = str(uuid.uuid4())
        with self._lock:
            self.sessions[session_id] = {"created": time.time(), "user_metadata": body.get("user_metadata"),
                                         "finished": None}
        return {"type": "create_session", "session_id": session_id}

    def heartbeat(self, session_id: str) -> dict[str, Any]:
        # any session id is welcome: a client keeps its session across a restart of this server
        with self._lock:
            self.sessions.setdefault(session_id, {"created": time.time(), "user_metadata": None, "finished": None})
        return {"type": "session_heartbeat"}

    def finish_session(self, session_id: str, body: dict[str, Any]) -> None:
        """ServiceClient.close(): the session's models and samplers are unloaded (their checkpoints stay)."""
        with self._lock:
            record = self.sessions.setdefault(session_id, {"created": time.time(), "user_metadata": None})
            record.setdefault("finished", None)
            record["finished"] = record["finished"] or (body.get("reason") or {}).get("type", "success")
            slots = [m for i, m in self.models.items() if i.startswith(f"{session_id}:train:")]
            for slot in slots:
                del self.models[slot.model_id]
        for slot in slots:
            slot.worker.stop(drain=True)  # requests already sent still run and answer
        self.sampling.drop_sessions(f"{session_id}:sample:", then=self._delete_snapshots)

    def _delete_snapshots(self, sources: set[SamplerSource]) -> None:
        """Delete the on-disk snapshots of save_weights_and_get_sampling_client (never a named checkpoint)."""
        ephemeral = (self.store.root / "ephemeral").resolve()
        for source in sources:
            if source.adapter_dir is not None and Path(source.adapter_dir).resolve().parent == ephemeral:
                shutil.rmtree(source.adapter_dir, ignore_errors=True)

    # ---------------------------------------------------------- models

    def _slot(self, model_id: str) -> ModelSlot:
        with self._lock:
            slot = self.models.get(model_id)
        if slot is None:
            hint = ("its run is on disk but the model is not in memory (the server restarted, or its session was "
                    "closed): continue with ServiceClient.create_training_client_from_state(<a saved tinker:// path>)"
                    if (self.store.run_dir(model_id) / "run.json").is_file() else "create a training client first")
            raise NotFound(f"model {model_id!r} is not loaded on this server; {hint}")
        return slot

    def _new_model(self, model_id: str, base: str, spec: LoraSpec, user_metadata: dict[str, Any] | None,
                   kind: str, setup: Callable[[ModelSlot], dict[str, Any]]) -> FutureEntry:
        """Register a model and run its creation as seq id 0; duplicates get the first request's future."""
        with self._lock:
            existing = self.models.get(model_id)
            if existing is not None and existing.first_entry is not None:
                entry = self.futures.get(existing.first_entry)
                if entry is not None:
                    return entry
            entry = self.futures.create(kind)
            slot = ModelSlot(model_id, base, spec, SequencedWorker(model_id), user_metadata, first_entry=entry.request_id)
            if existing is not None:
                existing.worker.stop()
            self.models[model_id] = slot

        def job() -> None:
            def create() -> dict[str, Any]:
                try:
                    slot.training = TrainingModel(model_id, self.bases[base], spec)
                    result = setup(slot)
                except BaseException as exc:
                    slot.training, slot.failed = None, str(exc)
                    raise
                self._write_run(slot)
                return result

            self.futures.run(entry, create)

        slot.worker.submit(0, job)
        return entry

    def create_model(self, body: dict[str, Any]) -> dict[str, Any]:
        model_id = _model_id(body)
        spec = LoraSpec.from_request(body.get("lora_config"))
        try:
            base = self.served_base(body.get("base_model"))
            _check_optimizer(body.get("optimizer_config"))
        except ServeError as exc:
            entry = self.futures.create("create_model")
            self.futures.fail(entry, str(exc), exc.category)
            return {"request_id": entry.request_id, "model_id": model_id}
        spec.check_fits(base)
        entry = self._new_model(model_id, base.name, spec, body.get("user_metadata"), "create_model",
                                lambda slot: {"type": "create_model", "model_id": model_id})
        return {"request_id": entry.request_id, "model_id": model_id}

    def get_info(self, model_id: str) -> dict[str, Any]:
        slot = self._slot(model_id)
        base = self.bases[slot.base]
        return {
            "type": "get_info",
            "model_id": model_id,
            "model_data": {"arch": base.arch, "model_name": base.name, "tokenizer_id": self.tokenizer_dirs[base.name]},
            "is_lora": True,
            "lora_rank": slot.spec.rank,
            "model_name": base.name,
            "optimizer_config": {"type": "adamw"},
        }

    def _enqueue(self, model_id: str, seq_id: int | None, kind: str, fn: Callable[[ModelSlot], Any]) -> FutureEntry:
        slot = self._slot(model_id)
        seq = slot.worker.assign(seq_id)
        with self._lock:
            seen = self._seen.get((model_id, seq))
            entry = self.futures.get(seen) if seen else None
            if entry is not None:
                return entry
            entry = self.futures.create(kind)
            self._seen[(model_id, seq)] = entry.request_id
            if len(self._seen) > MAX_SEEN:  # forget seq ids whose futures the store has dropped
                self._seen = {k: v for k, v in self._seen.items() if self.futures.get(v) is not None}
        slot.worker.submit(seq, lambda: self.futures.run(entry, lambda: fn(slot)))
        return entry

    def refuse(self, model_id: str, seq_id: int | None, kind: str, error: ServeError) -> NoReturn:
        """Answer `error` at once for a request refused at the edge; on a loaded model its seq id is used up
        (a failed future, also what a resend of it gets), so the model's later requests do not wait for it."""
        with self._lock:
            loaded = model_id in self.models
        if loaded and seq_id is not None:
            self._enqueue(model_id, seq_id, kind, lambda _slot: _raise(error))
        raise error

    def _read(self, body: dict[str, Any], kind: str, read: Callable[[], Any]) -> tuple[str, int | None, Any]:
        """(model id, seq id, read()): the fields of a request on a training model, refused as a whole."""
        model_id, seq_id = _model_and_seq(body)
        try:
            return model_id, seq_id, read()
        except UserError as exc:
            self.refuse(model_id, seq_id, kind, exc)

    def forward_backward(self, req: FwdBwdRequest) -> FutureEntry:
        kind = "forward" if req.forward_only else "forward_backward"
        if req.error is not None:
            self.refuse(req.model_id, req.seq_id, kind, UserError(req.error))
        try:  # sequence lengths, token ids, loss inputs and config against the model's base, before anything runs
            check_datums(req.data, self.bases[self._slot(req.model_id).base], req.loss_fn, req.loss_fn_config)
            if req.loss_fn == "stable_reinforce":
                session = req.model_id.rsplit(":train:", 1)[0]
                for i, d in enumerate(req.data):
                    d.stability = self.stability.resolve(d, session, i)
        except UserError as exc:
            self.refuse(req.model_id, req.seq_id, kind, exc)

        def run(slot: ModelSlot) -> Any:
            model = slot.require()
            return model.forward_backward(req.data, req.loss_fn, req.loss_fn_config, backward=not req.forward_only)

        return self._enqueue(req.model_id, req.seq_id, kind, run)

    def optim_step(self, body: dict[str, Any]) -> FutureEntry:
        model_id, seq_id, params = self._read(body, "optim_step", lambda: AdamParams.from_request(body))

        def run(slot: ModelSlot) -> Any:
            return {"metrics": slot.require().optim_step(params)}

        return self._enqueue(model_id, seq_id, "optim_step", run)

    def save_weights(self, body: dict[str, Any]) -> FutureEntry:
        model_id, seq_id, (ttl, overwrite) = self._read(body, "save_weights", lambda: (
            _ttl(body), fields.boolean(body, "overwrite", False)))

        def run(slot: ModelSlot) -> Any:
            model = slot.require()
            name = check_name(str(body.get("path") or f"state-{model.steps:06d}"))
            ref = CheckpointRef(slot.model_id, "weights", name)
            meta = checkpoint_meta(ref, base_model=slot.base, lora=slot.spec.to_dict(), steps=model.steps,
                                   user_metadata=body.get("user_metadata"), ttl_seconds=ttl)
            self.store.save(self.store.folder(ref), model.adapter_state(), model.model.peft_config["default"], meta,
                            optimizer=model.optimizer_state(), overwrite=overwrite)
            self._write_run(slot)
            return {"type": "save_weights", "path": ref.tinker_path}

        return self._enqueue(model_id, seq_id, "save_weights", run)

    def save_weights_for_sampler(self, body: dict[str, Any]) -> FutureEntry:
        model_id, seq_id, (sampling_seq, ttl) = self._read(body, "save_weights_for_sampler", lambda: (
            fields.integer(body, "sampling_session_seq_id", None, low=0), _ttl(body)))

        def run(slot: ModelSlot) -> Any:
            model = slot.require()
            name = body.get("path")
            if name is None and sampling_seq is None:
                raise UserError("save_weights_for_sampler needs a name (path) or a sampling_session_seq_id")
            if name is not None:
                ref = CheckpointRef(slot.model_id, "sampler_weights", check_name(str(name)))
                folder, path, sampling_session_id = self.store.folder(ref), ref.tinker_path, None
            else:
                session_id = slot.model_id.rsplit(":train:", 1)[0]
                sampling_session_id = f"{session_id}:sample:{sampling_seq}"
                ref = CheckpointRef(slot.model_id, "sampler_weights", "ephemeral")
                folder, path = self.store.ephemeral_folder(sampling_session_id), None
            meta = checkpoint_meta(ref, base_model=slot.base, lora=slot.spec.to_dict(), steps=model.steps,
                                   user_metadata=body.get("user_metadata"), ttl_seconds=ttl)
            meta["tinker_path"] = path  # None for the snapshot of save_weights_and_get_sampling_client
            self.store.save(folder, model.adapter_state(), model.model.peft_config["default"], meta)
            if sampling_session_id is not None:
                self.sampling.add_session(sampling_session_id, _source(slot.base, folder, slot.spec, None))
            self._write_run(slot)
            return {"type": "save_weights_for_sampler", "path": path, "sampling_session_id": sampling_session_id}

        return self._enqueue(model_id, seq_id, "save_weights_for_sampler", run)

    def load_weights(self, body: dict[str, Any]) -> FutureEntry:
        path = str(body.get("path", ""))
        if body.get("session_id") is not None:  # create a model from a checkpoint: its seq id 0
            model_id, optimizer = _model_id(body), fields.boolean(body, "optimizer", False)
            try:
                checkpoint = self.store.resolve(path)
                base = self.served_base(body.get("base_model") or checkpoint.meta.get("base_model"))
                if base.name != checkpoint.meta.get("base_model"):
                    raise UserError(f"{path} was trained on {checkpoint.meta.get('base_model')!r}, not {base.name!r}")
                if not optimizer:
                    _check_optimizer(body.get("optimizer_config"))
                spec = LoraSpec.from_request(checkpoint.meta.get("lora"))
            except ServeError as exc:
                entry = self.futures.create("load_weights")
                self.futures.fail(entry, str(exc), exc.category)
                return entry

            def setup(slot: ModelSlot) -> dict[str, Any]:
                _restore(slot.require(), checkpoint, optimizer)
                return {"type": "load_weights", "path": path, "model_id": model_id}

            return self._new_model(model_id, base.name, spec, body.get("user_metadata"), "load_weights", setup)

        model_id, seq_id, optimizer = self._read(body, "load_weights", lambda: fields.boolean(body, "optimizer", False))

        def run(slot: ModelSlot) -> Any:
            model = slot.require()
            checkpoint = self.store.resolve(path)
            saved = dataclasses.replace(LoraSpec.from_request(checkpoint.meta.get("lora")), seed=slot.spec.seed)
            if checkpoint.meta.get("base_model") != slot.base or saved != slot.spec:  # the init seed may differ
                raise UserError(f"{path} was saved from a different base model or LoRA configuration than "
                                f"{slot.model_id}: create a training client from it instead "
                                "(ServiceClient.create_training_client_from_state)")
            _restore(model, checkpoint, optimizer)
            return {"type": "load_weights", "path": path, "model_id": slot.model_id}

        return self._enqueue(model_id, seq_id, "load_weights", run)

    def _write_run(self, slot: ModelSlot) -> None:
        base = self.bases[slot.base]
        self.store.write_run({
            "training_run_id": slot.model_id,
            "base_model": base.name,
            "model_owner": "local",
            "is_lora": True,
            "lora_rank": slot.spec.rank,
            "lora": slot.spec.to_dict(),
            "user_metadata": {str(k): str(v) for k, v in (slot.user_metadata or {}).items()} or None,
        } | self._run_times(slot.model_id))

    def _run_times(self, model_id: str) -> dict[str, Any]:
        try:
            created = self.store.read_run(model_id).get("created")
        except NotFound:
            created = None
        return {"created": created or iso(now()), "last_request_time": iso(now())}

    # ---------------------------------------------------------- sampling

    def create_sampling_session(self, body: dict[str, Any]) -> dict[str, Any]:
        session_id = fields.text(body, "session_id", "")
        sampling_session_id = f"{session_id}:sample:{fields.integer(body, 'sampling_session_seq_id', 0, low=0)}"
        self.sampling.add_session(sampling_session_id, self._sampler_source(body.get("model_path"),
                                                                            body.get("base_model")))
        return {"type": "create_sampling_session", "sampling_session_id": sampling_session_id}

    def _sampler_source(self, model_path: str | None, base_model: str | None) -> SamplerSource:
        if model_path:
            checkpoint = self.store.resolve(model_path)
            base = self.served_base(checkpoint.meta.get("base_model"))
            return _source(base.name, checkpoint.folder, LoraSpec.from_request(checkpoint.meta.get("lora")), model_path)
        if base_model:
            return SamplerSource(self.served_base(base_model).name)
        raise UserError("a sampling client needs a model_path (tinker://...) or a base_model")

    def get_sampler(self, sampling_session_id: str) -> dict[str, Any]:
        source = self.sampling.session(sampling_session_id)
        return {"sampler_id": sampling_session_id, "base_model": source.base, "model_path": source.model_path}

    def asample(self, body: dict[str, Any]) -> tuple[FutureEntry, list[str]]:
        num_samples = fields.integer(body, "num_samples", 1, low=1, high=MAX_NUM_SAMPLES)
        topk_prompt = fields.integer(body, "topk_prompt_logprobs", 0, low=0, high=MAX_TOPK)
        topk_sample = fields.integer(body, "topk_sample_logprobs", 0, low=0, high=MAX_TOPK)
        last_n = fields.integer(body, "prompt_logprobs_last_n", None, low=0)
        prompt_logprobs = fields.boolean(body, "prompt_logprobs", False)
        record_stability = fields.boolean(body, "record_stability_info", False)
        prompt = tokens_from_json(body.get("prompt"), "prompt")
        params = SamplingParams.from_request(body.get("sampling_params"))
        entry = self.futures.create("sample")
        sequence_ids = [f"{entry.request_id}:{i}" for i in range(num_samples)]
        entry.extra["sequence_ids"] = sequence_ids
        try:
            if body.get("sampling_session_id"):
                source = self.sampling.session(str(body["sampling_session_id"]))
            else:
                source = self._sampler_source(body.get("model_path"), body.get("base_model"))
            if body.get("target_prompt_logprobs") is not None or body.get("prompt_alt_tokens_k"):
                raise UserError("target_prompt_logprobs and prompt_alt_tokens_k are not supported by thinker "
                                "tinker-serve: use include_prompt_logprobs / topk_prompt_logprobs")
            session = session_of(body.get("sampling_session_id"))
            if record_stability and session is None:
                raise UserError("record_stability_info needs a sampling client of a session (the records belong "
                                "to it): create it with ServiceClient / TrainingClient, e.g. "
                                "save_weights_and_get_sampling_client(record_stability_info=True)")
        except ServeError as exc:
            self.futures.fail(entry, str(exc), exc.category)
            return entry, sequence_ids

        def job() -> Any:
            out = generate(self.sampling.model_for(source), self.bases[source.base], prompt, num_samples, params,
                           prompt_logprobs=prompt_logprobs, prompt_logprobs_last_n=last_n,
                           topk_prompt=topk_prompt, topk_sample=topk_sample)
            if record_stability:  # before the result is answered: the client trains on it only after that
                for sequence_id, seq in zip(sequence_ids, out.sequences, strict=True):
                    self.stability.record(session, sequence_id, prompt, seq.tokens, seq.logprobs or [])
            return out

        self.sampling.submit(entry, job)
        return entry, sequence_ids

    # ---------------------------------------------------------- REST: runs and checkpoints

    def training_run(self, model_id: str) -> dict[str, Any]:
        record = self.store.read_run(model_id)
        checkpoints = self.store.list_checkpoints(model_id)
        last = {t: next((c.api() for c in reversed(checkpoints) if c.ref.checkpoint_type == t), None)
                for t in ("training", "sampler")}
        with self._lock:
            slot = self.models.get(model_id)
        last_request = iso(now()) if slot is None else iso(_utc(slot.last_request))
        return {
            "training_run_id": model_id,
            "base_model": record.get("base_model"),
            "model_owner": record.get("model_owner", "local"),
            "is_lora": True,
            "corrupted": False,
            "lora_rank": record.get("lora_rank"),
            "last_request_time": record.get("last_request_time") if slot is None else last_request,
            "last_checkpoint": last["training"],
            "last_sampler_checkpoint": last["sampler"],
            "user_metadata": record.get("user_metadata"),
        }

    def training_runs(self, limit: int, offset: int) -> dict[str, Any]:
        runs = self.store.list_runs()
        page = [self.training_run(r["training_run_id"]) for r in runs[offset: offset + limit]]
        return {"training_runs": page, "cursor": {"offset": offset, "limit": limit, "total_count": len(runs)}}

    def checkpoints(self, model_id: str) -> dict[str, Any]:
        self.store.read_run(model_id)
        return {"checkpoints": [c.api() for c in self.store.list_checkpoints(model_id)]}

    def user_checkpoints(self, limit: int, offset: int) -> dict[str, Any]:
        found = [c for run in self.store.list_runs() for c in self.store.list_checkpoints(run["training_run_id"])]
        found.sort(key=lambda c: str(c.meta.get("time", "")), reverse=True)
        return {"checkpoints": [c.api() for c in found[offset: offset + limit]],
                "cursor": {"offset": offset, "limit": limit, "total_count": len(found)}}

    def delete_checkpoint(self, model_id: str, checkpoint_id: str) -> None:
        self.store.delete(parse_checkpoint_id(model_id, checkpoint_id))

    def weights_info(self, tinker_path: str) -> dict[str, Any]:
        meta = self.store.resolve(tinker_path).meta
        lora = LoraSpec.from_request(meta.get("lora"))
        return {"base_model": meta.get("base_model"), "is_lora": True, "lora_rank": lora.rank,
                "train_unembed": lora.train_unembed, "train_mlp": lora.train_mlp, "train_attn": lora.train_attn,
                "optimizer_config": {"type": "adamw"}}


def _model_id(body: dict[str, Any]) -> str:
    """The id of the model a create request makes: its session and its seq id in the session."""
    session_id = fields.text(body, "session_id", "")
    return f"{session_id}:train:{fields.integer(body, 'model_seq_id', 0, low=0)}"


def _model_and_seq(body: dict[str, Any]) -> tuple[str, int | None]:
    return fields.text(body, "model_id", ""), fields.integer(body, "seq_id", None, low=0)


def _ttl(body: dict[str, Any]) -> int | None:
    return fields.integer(body, "ttl_seconds", None, low=1, high=MAX_TTL_S)


def _raise(error: BaseException) -> NoReturn:
    raise error


def _check_optimizer(config: Any) -> None:
    kind = (config or {}).get("type", "adamw") if isinstance(config, dict) else "adamw"
    if kind != "adamw":
        raise UserError(f"optimizer {kind!r} is not supported by thinker tinker-serve: use the default AdamW")


def _source(base: str, folder: Path, spec: LoraSpec, model_path: str | None) -> SamplerSource:
    from thinker.tinker_serve.checkpoints import ADAPTER_FILE

    # the file's mtime is part of the key: an overwritten checkpoint is loaded again, not served from cache
    version = (folder / ADAPTER_FILE).stat().st_mtime_ns
    return SamplerSource(base, adapter_dir=str(folder), spec=spec, model_path=model_path, version=version)


def _restore(model: TrainingModel, checkpoint: Any, optimizer: bool) -> None:
    model.load_adapter_state(checkpoint.adapter())
    if optimizer and not checkpoint.has_optimizer:
        raise UserError(f"{checkpoint.ref.tinker_path} has no optimizer state (sampler weights): load it without "
                        "the optimizer, or load a tinker://.../weights/<name> checkpoint")
    model.load_optimizer_state(checkpoint.optimizer() if optimizer else None)
    model.steps = int(checkpoint.meta.get("optimizer_steps", 0)) if optimizer else 0


def _utc(timestamp: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, UTC)
