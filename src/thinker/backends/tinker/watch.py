"""Waiting on the Tinker SDK without hanging on a service that is gone.

The SDK retries a refused connection forever (backoff up to 30 s, then session-heartbeat warnings), so a
future of a service that died and stays down never resolves. Every wait of the training loop goes through
ServiceWatch: the result is awaited in slices, and between slices the service's `/api/v1/healthz` is asked.
When it does not answer (twice, a second apart), the wait is abandoned with ServiceLost, which says since
when the service has been silent; the loop's recovery then gives it the rest of `backend.options.recover_s`
to come back (docs/backends/tinker.md, "Faults"). A slow step of a live service only costs a probe per slice.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable
from typing import Any

SLICE_S = 5.0  # how long a result is awaited between two probes of the service
PROBE_TIMEOUT_S = 5.0


class ServiceLost(Exception):
    """The service stopped answering while a result was awaited; `silent_since` is a time.monotonic()."""

    def __init__(self, url: str, silent_since: float):
        super().__init__(f"{url} stopped answering")
        self.silent_since = silent_since


def answers(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """True when something answers at `url` (any HTTP answer but a 5xx from a proxy in front of nothing)."""
    import httpx

    try:
        return httpx.get(f"{url}/api/v1/healthz", timeout=timeout_s).status_code < 500
    except httpx.HTTPError:
        return False


class ServiceWatch:
    def __init__(self, url: str, slice_s: float = SLICE_S):
        self.url = url
        self.slice_s = slice_s
        self.last_answer = time.monotonic()

    def result(self, future: Any) -> Any:
        """`future.result()` (an SDK future, or a concurrent.futures.Future), or ServiceLost."""
        while True:
            try:
                value = future.result(timeout=self.slice_s)
            except concurrent.futures.TimeoutError:
                if _done(future):
                    raise  # the operation itself timed out: not a wait of ours
                if self.answering():
                    continue
                _cancel(future)
                raise ServiceLost(self.url, self.last_answer) from None
            self.last_answer = time.monotonic()
            return value

    def answering(self) -> bool:
        for attempt in range(2):  # twice, a second apart: one slow answer is not a lost service
            if attempt:
                time.sleep(1.0)
            if answers(self.url):
                self.last_answer = time.monotonic()
                return True
        return False

    def call(self, fn: Callable[[], Any]) -> Any:
        """fn() for a synchronous SDK call (its own waits have no deadline), on a daemon thread: one that
        never returns does not keep the process from exiting."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread as it is
                future.set_exception(exc)

        threading.Thread(target=run, name="tinker sdk call", daemon=True).start()
        return self.result(future)


def _concurrent(future: Any) -> concurrent.futures.Future[Any] | None:
    if isinstance(future, concurrent.futures.Future):
        return future
    inner = getattr(future, "future", None)  # the SDK's APIFuture wraps one
    return inner() if callable(inner) else None


def _done(future: Any) -> bool:
    inner = _concurrent(future)
    return inner is not None and inner.done()


def _cancel(future: Any) -> None:
    """Stop the SDK from polling a service that is gone (best effort: it may already be running)."""
    inner = _concurrent(future)
    if inner is not None:
        inner.cancel()
