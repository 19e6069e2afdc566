"""What stable_reinforce trains on: sequences sampled with `record_stability_info`, and datum provenance.

A sampling request with `record_stability_info: true` records, per returned `sequence_id`, its prompt, its
sampled tokens and the sampler's log-probability of each (the numbers the sampler drew with). A
`stable_reinforce` datum names, through its provenance (`Datum.with_provenance`), the sequence and position
behind each of its tokens; the server checks those claims against the record and takes q from it, so the
loss compares the trained policy with what the sampler really did, not with what the client sent.

As on Tinker: records belong to the session that sampled them and last one day after their last use in a
training request. The store is bounded (the oldest go first); a forgotten sequence is a clear error.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from thinker.tinker_serve.errors import UserError
from thinker.tinker_serve.wire import Datum, Span

TTL_S = 86400.0  # Tinker: trainable for one day after sampling, each training request restarting that day
MAX_RECORDS = 200_000  # sequences kept; a few hundred bytes each for the short sequences this server is for


@dataclass
class Record:
    session: str
    prompt: list[int]
    tokens: list[int]
    logprobs: list[float]
    used: float


def session_of(sampling_session_id: str | None) -> str | None:
    """The client session a sampling session (`<session>:sample:<n>`) belongs to."""
    if not sampling_session_id or ":sample:" not in sampling_session_id:
        return None
    return sampling_session_id.rsplit(":sample:", 1)[0]


class StabilityRecords:
    def __init__(self, ttl_s: float = TTL_S, max_records: int = MAX_RECORDS):
        self.ttl_s = ttl_s
        self.max_records = max_records
        self._records: OrderedDict[str, Record] = OrderedDict()
        self._lock = threading.Lock()

    def record(self, session: str, sequence_id: str, prompt: list[int], tokens: list[int],
               logprobs: list[float]) -> None:
        with self._lock:
            self._records[sequence_id] = Record(session, list(prompt), list(tokens), list(logprobs), time.time())
            self._records.move_to_end(sequence_id)
            while len(self._records) > self.max_records:
                self._records.popitem(last=False)

    def _get(self, session: str, sequence_id: str, where: str) -> Record:
        now = time.time()
        with self._lock:
            record = self._records.get(sequence_id)
            if record is not None and now - record.used > self.ttl_s:
                del self._records[sequence_id]
                record = None
            if record is None or record.session != session:
                raise UserError(f"{where} names sequence {sequence_id!r}, which this server has no stability record "
                                "of in this session: sample with record_stability_info=True (e.g. "
                                "save_weights_and_get_sampling_client(record_stability_info=True)) in the session "
                                "that trains, within a day")
            record.used = now
            self._records.move_to_end(sequence_id)
            return record

    def resolve(self, datum: Datum, session: str, i: int) -> dict[str, np.ndarray]:
        """The sampler's logprob of each target token and which targets were sampled, from `datum`'s provenance,
        after checking it: both span lists tile their fields, every named position exists, and input and sampled
        target tokens are the recorded ones. Prompt targets must carry no advantage (they were not sampled)."""
        if datum.target_spans is None or datum.input_spans is None:
            raise UserError(f"loss_fn 'stable_reinforce' needs provenance on every datum, and data[{i}] has none: "
                            "sample with record_stability_info=True and attach it with Datum.with_provenance(...) "
                            "(tinker-cookbook's rl.train does both), or train with another loss_fn")
        targets = np.asarray(datum.inputs["target_tokens"]).astype(np.int64).tolist()
        self._walk(datum.input_spans, datum.tokens, session, f"data[{i}].model_input_spans", check_prompt=True)
        q, sampled = self._walk(datum.target_spans, targets, session, f"data[{i}].loss_fn_input_spans",
                                check_prompt=False)
        advantages = np.asarray(datum.inputs["advantages"], dtype=np.float64)
        stray = np.flatnonzero((sampled == 0) & (advantages != 0))
        if stray.size:
            t = int(stray[0])
            raise UserError(f"data[{i}] has advantage {advantages[t]:g} at target position {t}, a prompt token: "
                            "stable_reinforce trains sampled tokens only, so give prompt positions advantage 0")
        return {"logprobs": q, "sampled": sampled}

    def _walk(self, spans: list[Span], tokens: list[int], session: str, where: str,
              check_prompt: bool) -> tuple[np.ndarray, np.ndarray]:
        total = sum(s.length for s in spans)
        if total != len(tokens):
            raise UserError(f"{where} cover {total} positions but the field has {len(tokens)}: the runs must tile "
                            "it exactly (Datum.with_provenance)")
        q = np.zeros(len(tokens), dtype=np.float32)
        sampled = np.zeros(len(tokens), dtype=np.float32)
        pos = 0
        for j, span in enumerate(spans):
            here = f"{where}[{j}]"
            record = self._get(session, span.sequence_id, here)
            source = record.tokens if span.kind == "sampled" else record.prompt
            if span.offset + span.length > len(source):
                raise UserError(f"{here} claims {span.kind} positions {span.offset}..{span.offset + span.length - 1} "
                                f"of sequence {span.sequence_id!r}, which has {len(source)} {span.kind} tokens")
            claimed = tokens[pos: pos + span.length]
            actual = source[span.offset: span.offset + span.length]
            if (span.kind == "sampled" or check_prompt) and claimed != actual:
                k = next(k for k, (a, b) in enumerate(zip(claimed, actual, strict=True)) if a != b)
                raise UserError(f"{here}: position {pos + k} holds token {claimed[k]}, but {span.kind} position "
                                f"{span.offset + k} of sequence {span.sequence_id!r} is token {actual[k]}")
            if span.kind == "sampled":
                q[pos: pos + span.length] = record.logprobs[span.offset: span.offset + span.length]
                sampled[pos: pos + span.length] = 1.0
            pos += span.length
        return q, sampled
