"""Fault injection for the tests: make the first N requests of a route fail.

    injector = FaultInjector("forward_backward=503x2,optim_step=429x1")

The first 2 requests to a route ending in /forward_backward answer 503 and the first optim_step answers 429
(with `Retry-After: 0`), before the request is read. SDKs retry both, so a client should see only the delay.
A route is the last part of its path (`asample`, `retrieve_future`, `create_model`, ...).

The tinker-serve server takes it as ASGI middleware (`start_with_faults`); the provider loopback apps
(tests/provider_servers) ask `app.state.faults.take(route)` in their handlers.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

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


class FaultMiddleware:
    """ASGI middleware: an armed route's next requests get the fault's status (a tinker-style JSON error)
    before the app sees them."""

    def __init__(self, app: Any, injector: FaultInjector):
        self.app, self.injector = app, injector

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            status = self.injector.take(scope["path"].rstrip("/").rsplit("/", 1)[-1])
            if status is not None:
                from starlette.responses import JSONResponse

                headers = {"Retry-After": "0"} if status == 429 else None
                response = JSONResponse({"error": "injected fault", "category": "server"}, status, headers)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def start_with_faults(*args: Any, faults: str = "", **kwargs: Any) -> Any:
    """`thinker.tinker_serve.server.start_in_thread` with a FaultInjector in front of its routes, as the
    server's `.faults` (arm it at run time with `server.faults.arm("optim_step=429x1")`)."""
    from starlette.middleware import Middleware

    from thinker.tinker_serve.server import start_in_thread

    injector = FaultInjector(faults)
    server = start_in_thread(*args, middleware=[Middleware(FaultMiddleware, injector=injector)], **kwargs)
    server.faults = injector
    return server
