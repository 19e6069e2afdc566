"""Fault injection, a documented testing aid: make the first N requests of a route fail.

    THINKER_SERVE_FAULTS="forward_backward=503x2,optim_step=429x1"   (or --faults with the same text)

The first 2 requests to /api/v1/forward_backward answer 503 and the first optim_step answers 429 (with
`Retry-After: 0`), before the request is read. The tinker SDK retries both, so a client should see only the
delay. A route is the last part of its path (`asample`, `retrieve_future`, `create_model`, ...).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

ENV = "THINKER_SERVE_FAULTS"
_ITEM = re.compile(r"^\s*([a-z0-9_/]+)\s*=\s*(\d{3})\s*x\s*(\d+)\s*$")


@dataclass
class Fault:
    status: int
    remaining: int


def parse_faults(text: str | None) -> dict[str, Fault]:
    """`route=STATUSxN,...` -> {route: Fault}. Raises ValueError with the offending item."""
    faults: dict[str, Fault] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        match = _ITEM.match(item)
        if match is None:
            raise ValueError(f"fault {item.strip()!r} is not route=STATUSxCOUNT (e.g. forward_backward=503x2)")
        route, status, count = match.group(1).strip("/").rsplit("/", 1)[-1], int(match.group(2)), int(match.group(3))
        if not 400 <= status <= 599:
            raise ValueError(f"fault {item.strip()!r}: the status must be an HTTP error (400-599)")
        faults[route] = Fault(status, count)
    return faults


class FaultInjector:
    """Thread-safe countdown of injected failures per route."""

    def __init__(self, text: str | None = None):
        self._lock = threading.Lock()
        self._faults = parse_faults(text)
        self.injected: dict[str, int] = {}

    def arm(self, text: str) -> None:
        """Add (or replace) faults at run time: tests reuse one server."""
        faults = parse_faults(text)
        with self._lock:
            self._faults.update(faults)

    def take(self, route: str) -> int | None:
        """The status to answer for this request of `route`, or None to serve it normally."""
        with self._lock:
            fault = self._faults.get(route)
            if fault is None or fault.remaining <= 0:
                return None
            fault.remaining -= 1
            self.injected[route] = self.injected.get(route, 0) + 1
            return fault.status

    def remaining(self, route: str) -> int:
        with self._lock:
            fault = self._faults.get(route)
            return fault.remaining if fault else 0
