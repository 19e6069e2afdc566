"""Futures and ordering: how a request's result gets back to the SDK, and when a request runs.

Every operation answers at once with `{"request_id": ...}`; the SDK then long-polls `retrieve_future` until
the result is there. `FutureStore` holds the results; a poll waits on the future's asyncio event (set from
the worker thread through the server's event loop) for up to `long_poll_s`, then answers `try_again`.

`SequencedWorker` is one thread per training model. The SDK numbers a model's requests (`seq_id`: create or
create-from-checkpoint is 0, then 1, 2, ...) and they must run in that order: the SDK may deliver them out of
order (it sends the chunks of one forward_backward in parallel, the first one last, and retries failed
sends), so a request waits here until every earlier seq id has run.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from thinker.tinker_serve.errors import ServeError

log = logging.getLogger("thinker")

# completed futures kept for retrieval (the SDK may retrieve twice when a response is lost); oldest dropped
MAX_FINISHED = 20_000


@dataclass
class FutureEntry:
    request_id: str
    kind: str  # the operation, for logs and errors
    created: float = field(default_factory=time.time)
    done: bool = False
    result: Any = None  # a dict (JSON) or a wire.FwdBwdOutput / wire.SampleOutput
    error: str | None = None
    category: str = "server"
    event: asyncio.Event | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. sample sequence ids


class FutureStore:
    """request_id -> FutureEntry. Resolved from any thread; waited on from the server's event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, FutureEntry] = OrderedDict()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._finished = 0

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def create(self, kind: str, **extra: Any) -> FutureEntry:
        entry = FutureEntry(request_id=f"{kind}-{uuid.uuid4().hex[:16]}", kind=kind, extra=dict(extra))
        with self._lock:
            self._entries[entry.request_id] = entry
        return entry

    def get(self, request_id: str) -> FutureEntry | None:
        with self._lock:
            return self._entries.get(request_id)

    def resolve(self, entry: FutureEntry, result: Any) -> None:
        self._finish(entry, result=result)

    def fail(self, entry: FutureEntry, message: str, category: str = "server") -> None:
        self._finish(entry, error=message, category=category)

    def run(self, entry: FutureEntry, fn: Callable[[], Any]) -> None:
        """Run `fn` and resolve the entry with its result, or fail it with the error's message."""
        try:
            result = fn()
        except ServeError as exc:
            self.fail(entry, str(exc), exc.category)
        except Exception as exc:  # a bug or a torch error: the server keeps serving, the request fails
            log.exception("tinker-serve: %s %s failed", entry.kind, entry.request_id)
            self.fail(entry, f"{type(exc).__name__}: {exc}", "server")
        else:
            self.resolve(entry, result)

    def _finish(self, entry: FutureEntry, **fields: Any) -> None:
        with self._lock:
            for key, value in fields.items():
                setattr(entry, key, value)
            entry.done = True
            event = entry.event
            self._finished += 1
            if self._finished > MAX_FINISHED:
                self._evict()
        if event is not None and self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the loop has closed: the server is stopping
                pass

    def _evict(self) -> None:
        for request_id in [rid for rid, e in self._entries.items() if e.done][: MAX_FINISHED // 10]:
            del self._entries[request_id]
            self._finished -= 1

    async def wait(self, request_id: str, timeout: float) -> FutureEntry | None:
        """The entry once done, or still pending after `timeout` seconds; None if unknown."""
        with self._lock:
            entry = self._entries.get(request_id)
            if entry is None or entry.done:
                return entry
            if entry.event is None:
                entry.event = asyncio.Event()
            event = entry.event
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        return entry

    def wake_all(self) -> None:
        """Release every long poll (shutdown): they answer try_again."""
        with self._lock:
            events = [e.event for e in self._entries.values() if e.event is not None]
        if self._loop is not None:
            for event in events:
                self._loop.call_soon_threadsafe(event.set)


class SequencedWorker:
    """A thread that runs submitted jobs in seq-id order, waiting for gaps to fill."""

    def __init__(self, name: str, next_seq: int = 0):
        self.name = name
        self._cond = threading.Condition()
        self._heap: list[tuple[int, int, Callable[[], None]]] = []
        self._tiebreak = itertools.count()
        self._next = next_seq
        self._highest = next_seq - 1
        self._stopped = False
        self._draining = False
        self._thread = threading.Thread(target=self._loop, name=f"tinker-serve {name}", daemon=True)
        self._thread.start()

    def assign(self, seq_id: int | None) -> int:
        """The seq id a request runs at: its own, or (None: a client that does not number) the next free one."""
        with self._cond:
            return self._highest + 1 if seq_id is None else int(seq_id)

    def submit(self, seq_id: int, job: Callable[[], None]) -> None:
        with self._cond:
            self._highest = max(self._highest, seq_id)
            heapq.heappush(self._heap, (seq_id, next(self._tiebreak), job))
            self._cond.notify_all()

    def stop(self, drain: bool = False) -> None:
        """Stop the thread: at once, or (`drain`) once every job that can run has run."""
        with self._cond:
            if drain:
                self._draining = True
            else:
                self._stopped = True
            self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and not (self._heap and self._heap[0][0] <= self._next):
                    if self._draining:
                        return
                    self._cond.wait()
                if self._stopped:
                    return
                seq_id, _, job = heapq.heappop(self._heap)
                self._next = max(self._next, seq_id + 1)
            try:
                job()
            except Exception:  # jobs resolve their own futures; this only guards the thread
                log.exception("tinker-serve: a job of %s failed outside its future", self.name)
