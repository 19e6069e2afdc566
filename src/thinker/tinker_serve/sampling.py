"""Sampling: sampling sessions, the sampling thread, and generation with a KV cache.

A sampling session samples from fixed weights: a base model, a saved checkpoint (`tinker://...`), or the
snapshot a training client took with save_weights_and_get_sampling_client. Its model is a frozen copy, so
training the same run meanwhile never changes what the session samples from. Loaded models are kept in a
small LRU cache and reloaded from disk when needed again.

Generation semantics:
- `temperature` 0 is greedy; otherwise logits / temperature, then `top_k` (-1: off) and `top_p` (1: off);
  `seed` makes a request reproducible (a fresh random seed when absent);
- `stop`: None stops at the model's end-of-sequence token(s), `[]` never stops early, a string or a list of
  strings stops once the decoded sample contains one, a list of ints stops at any of those token ids; the
  returned tokens end with the token that completed the stop (`stop_reason` "stop"), or run to `max_tokens`
  (or the end of the context window when max_tokens is None) with `stop_reason` "length";
- `logprobs` of sampled tokens are log-softmax of the raw logits (temperature 1, no top-k/top-p), the same
  numbers a training client's forward pass gives for that sequence; `prompt_logprobs[0]` is None.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from thinker.tinker_serve import fields
from thinker.tinker_serve.engine import BaseModel, LoraSpec, adapter_model, load_adapter_state
from thinker.tinker_serve.errors import UserError
from thinker.tinker_serve.futures import FutureEntry, FutureStore
from thinker.tinker_serve.wire import SampledSequence, SampleOutput

log = logging.getLogger("thinker")

MAX_LOADED = 4  # adapter models kept in memory at once
EMPTY_TOPK = (0, -99999.0)  # the SDK's filler for a top-k cell with nothing in it


@dataclass(frozen=True)
class SamplerSource:
    """What a sampling session samples from: a base model, optionally with a saved adapter folder."""

    base: str
    adapter_dir: str | None = None
    spec: LoraSpec | None = None
    model_path: str | None = None  # the tinker:// path it was created from, if any
    version: int = 0  # the adapter file's mtime: a checkpoint overwritten in place is loaded again


@dataclass
class SamplingParams:
    max_tokens: int | None = None
    seed: int | None = None
    stop: Any = None
    temperature: float = 1.0
    top_k: int = -1
    top_p: float = 1.0

    @classmethod
    def from_request(cls, raw: dict[str, Any] | None) -> SamplingParams:
        raw = raw or {}
        if not isinstance(raw, dict):
            raise UserError("sampling_params must be an object (SamplingParams)")
        where = "sampling_params."
        params = cls(max_tokens=fields.integer(raw, "max_tokens", None, low=0, where=where),
                     seed=fields.seed(raw, where=where), stop=raw.get("stop"),
                     temperature=fields.number(raw, "temperature", 1.0, low=0, where=where),
                     top_k=fields.integer(raw, "top_k", -1, low=-1, where=where),
                     top_p=fields.number(raw, "top_p", 1.0, low=0, high=1, low_open=True, where=where))
        params.stops(())  # a stop of the wrong shape is refused here, not when sampling
        return params

    def stops(self, eos_ids: tuple[int, ...]) -> tuple[set[int], list[str]]:
        stop = self.stop
        if stop is None:
            return set(eos_ids), []
        if isinstance(stop, str):
            return set(), [stop]
        if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
            return set(), [s for s in stop if s]
        if isinstance(stop, list) and all(isinstance(s, int) and not isinstance(s, bool) for s in stop):
            return set(stop), []
        raise UserError("stop must be None, a string, a list of strings or a list of token ids")


def _choose(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> torch.Tensor:
    if params.temperature == 0:
        return logits.argmax(dim=-1)
    scaled = logits / params.temperature
    if 0 < params.top_k < scaled.shape[-1]:
        kth = torch.topk(scaled, params.top_k, dim=-1).values[:, -1:]
        scaled = scaled.masked_fill(scaled < kth, -math.inf)
    if params.top_p < 1:
        ordered, order = torch.sort(scaled, dim=-1, descending=True)
        probs = torch.softmax(ordered, dim=-1)
        drop = torch.cumsum(probs, dim=-1) - probs > params.top_p  # keeps the token that crosses top_p
        ordered = ordered.masked_fill(drop, -math.inf)
        scaled = torch.full_like(scaled, -math.inf).scatter(-1, order, ordered)
    probs = torch.softmax(scaled, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _topk_rows(logprobs: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    values, ids = torch.topk(logprobs, min(k, logprobs.shape[-1]), dim=-1)
    return ids.cpu().numpy().astype(np.int32), values.float().cpu().numpy()


def _empty_topk(rows: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return (np.full((rows, k), EMPTY_TOPK[0], dtype=np.int32), np.full((rows, k), EMPTY_TOPK[1], dtype=np.float32))


@torch.no_grad()
def generate(model: Any, base: BaseModel, prompt: list[int], num_samples: int, params: SamplingParams, *,
             prompt_logprobs: bool = False, prompt_logprobs_last_n: int | None = None, topk_prompt: int = 0,
             topk_sample: int = 0) -> SampleOutput:
    if not prompt:
        raise UserError("the prompt is empty")
    if num_samples < 1:
        raise UserError(f"num_samples must be 1 or more, got {num_samples}")
    if len(prompt) >= base.max_context_length:
        raise UserError(f"the prompt has {len(prompt)} tokens: {base.name}'s context is {base.max_context_length}")
    if min(prompt) < 0 or max(prompt) >= base.vocab_size:
        raise UserError(f"the prompt has token ids outside {base.name}'s vocabulary (0..{base.vocab_size - 1})")
    if prompt_logprobs_last_n is not None and not 1 <= prompt_logprobs_last_n <= len(prompt) - 1:
        raise UserError(f"prompt_logprobs_last_n must be between 1 and len(prompt) - 1 = {len(prompt) - 1}")
    room = base.max_context_length - len(prompt)
    max_tokens = room if params.max_tokens is None else min(params.max_tokens, room)
    stop_ids, stop_strings = params.stops(base.eos_ids)
    device = base.device
    seed = params.seed if params.seed is not None else int.from_bytes(os.urandom(8), "little")
    generator = torch.Generator(device=device).manual_seed(seed % (2**63))

    # one prefill of the prompt, its KV cache then repeated for the samples; the prompt's logits only when asked
    scored = bool(prompt_logprobs or topk_prompt)
    out = model(input_ids=torch.tensor([prompt], dtype=torch.long, device=device), use_cache=True,
                logits_to_keep=0 if scored else 1)
    past = out.past_key_values
    logits = out.logits[:, -1, :].float()
    if num_samples > 1:
        past.batch_repeat_interleave(num_samples)
        logits = logits.expand(num_samples, -1)
    result = SampleOutput(sequences=[])
    if scored:
        first = prompt_logprobs_last_n and len(prompt) - prompt_logprobs_last_n
        logp = torch.log_softmax(out.logits[0, :-1].float(), dim=-1)  # row j predicts prompt[j + 1]
        if prompt_logprobs:
            index = torch.tensor(prompt[1:], dtype=torch.long, device=device)[:, None]
            picked = logp.gather(-1, index).squeeze(-1).tolist()
            result.prompt_logprobs = [None] + [v if j + 1 >= (first or 0) else None for j, v in enumerate(picked)]
        if topk_prompt:
            ids_np, lp_np = _empty_topk(len(prompt), topk_prompt)
            rows_ids, rows_lp = _topk_rows(logp, topk_prompt)
            start = max(1, first or 1)
            ids_np[start:, : rows_ids.shape[1]] = rows_ids[start - 1:]
            lp_np[start:, : rows_lp.shape[1]] = rows_lp[start - 1:]
            result.topk_prompt = (ids_np, lp_np)

    tokens: list[list[int]] = [[] for _ in range(num_samples)]
    logprobs: list[list[float]] = [[] for _ in range(num_samples)]
    topks: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(num_samples)]
    reasons: list[str | None] = [None] * num_samples
    for step in range(max_tokens):
        logp = torch.log_softmax(logits, dim=-1)
        chosen = _choose(logits, params, generator)
        chosen_lp = logp.gather(-1, chosen[:, None]).squeeze(-1).tolist()
        chosen_ids = chosen.tolist()
        top = _topk_rows(logp, topk_sample) if topk_sample else None
        for i in range(num_samples):
            if reasons[i] is not None:
                continue
            token = int(chosen_ids[i])
            tokens[i].append(token)
            logprobs[i].append(float(chosen_lp[i]))
            if top is not None:
                topks[i].append((top[0][i], top[1][i]))
            if token in stop_ids or (stop_strings and _has_stop(base.tokenizer, tokens[i], stop_strings)):
                reasons[i] = "stop"
        if all(r is not None for r in reasons) or step == max_tokens - 1:
            break
        out = model(input_ids=chosen[:, None], past_key_values=past, use_cache=True, logits_to_keep=1)
        past = out.past_key_values
        logits = out.logits[:, -1, :].float()
    for i in range(num_samples):
        topk = None
        if topk_sample:
            k = min(topk_sample, base.vocab_size)
            topk = ((np.stack([t[0] for t in topks[i]]), np.stack([t[1] for t in topks[i]])) if topks[i]
                    else (np.zeros((0, k), np.int32), np.zeros((0, k), np.float32)))
        result.sequences.append(SampledSequence(tokens=tokens[i], logprobs=logprobs[i],
                                                stop_reason=reasons[i] or "length", topk=topk))
    return result


def _has_stop(tokenizer: Any, tokens: list[int], stop_strings: list[str]) -> bool:
    text = tokenizer.decode(tokens, skip_special_tokens=False)
    return any(s in text for s in stop_strings)


class SamplingService:
    """Sampling sessions and the thread that serves their requests, first come first served."""

    def __init__(self, bases: dict[str, BaseModel], futures: FutureStore):
        self.bases = bases
        self.futures = futures
        self.sessions: dict[str, SamplerSource] = {}
        self.client_counters: dict[str, int] = {}
        self._lock = threading.Lock()
        self._loaded: OrderedDict[SamplerSource, Any] = OrderedDict()
        self._queue: queue.Queue[tuple[FutureEntry | None, Callable[[], Any]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="tinker-serve sampling", daemon=True)
        self._thread.start()

    def add_session(self, sampling_session_id: str, source: SamplerSource) -> None:
        with self._lock:
            self.sessions[sampling_session_id] = source
            self.client_counters.setdefault(sampling_session_id, 0)

    def session(self, sampling_session_id: str) -> SamplerSource:
        with self._lock:
            source = self.sessions.get(sampling_session_id)
        if source is None:
            from thinker.tinker_serve.errors import NotFound

            raise NotFound(f"sampling session {sampling_session_id!r} does not exist on this server (it restarted?): "
                           "create a new sampling client")
        return source

    def drop_sessions(self, prefix: str, then: Callable[[set[SamplerSource]], None] | None = None) -> None:
        """Forget the sampling sessions whose ids start with `prefix`; `then(sources)` runs once they are gone."""
        with self._lock:
            dropped = {self.sessions.pop(i) for i in [i for i in self.sessions if i.startswith(prefix)]}
            for i in [i for i in self.client_counters if i.startswith(prefix)]:
                del self.client_counters[i]
        # the sampling thread owns the cache of loaded models: it drops theirs after the requests before it
        self._queue.put((None, lambda: self._forget(dropped, then)))

    def _forget(self, sources: set[SamplerSource], then: Callable[[set[SamplerSource]], None] | None) -> None:
        for source in sources:
            self._loaded.pop(source, None)
        if then is not None:
            then(sources)

    def join(self, sampling_session_id: str) -> int:
        self.session(sampling_session_id)
        with self._lock:
            self.client_counters[sampling_session_id] += 1
            return self.client_counters[sampling_session_id]

    def submit(self, entry: FutureEntry, job: Callable[[], Any]) -> None:
        self._queue.put((entry, job))

    def stop(self) -> None:
        self._queue.put(None)

    def model_for(self, source: SamplerSource) -> Any:
        """The frozen model of `source` (runs on the sampling thread)."""
        base = self.bases[source.base]
        if source.adapter_dir is None:
            return base.model
        if source in self._loaded:
            self._loaded.move_to_end(source)
            return self._loaded[source]
        from safetensors.torch import load_file

        from thinker.tinker_serve.checkpoints import ADAPTER_FILE

        assert source.spec is not None
        model = adapter_model(base, source.spec)
        load_adapter_state(model, load_file(os.path.join(source.adapter_dir, ADAPTER_FILE)))
        self._loaded[source] = model
        while len(self._loaded) > MAX_LOADED:
            self._loaded.popitem(last=False)
        return model

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            entry, job = item
            if entry is None:
                job()
            else:
                self.futures.run(entry, job)
