"""Run a FastAPI app on 127.0.0.1 in a thread, stop it and start it again on the same port (a dropped
connection while a client polls), and inject faults per route.

    with LoopbackServer(app) as server:          # a free port
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="sk-test", max_retries=2)
        server.faults.arm("create_job=503x2")    # the next 2 create_job requests answer 503 (Retry-After: 0)
        server.stop(); server.start()            # same port, same app state: the connection drops meanwhile

Handlers call `server.faults.take("<route>")` (support.faults.FaultInjector) and answer its status
with `fault_response(status)` before doing any work.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from support.faults import FaultInjector


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fault_response(status: int) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": {"message": f"injected fault {status}", "type": "server_error"}},
                        status_code=status, headers={"Retry-After": "0", "retry-after-ms": "0"})


class LoopbackServer:
    def __init__(self, app: Any, port: int | None = None):
        self.app = app
        self.port = port or free_port()
        self.faults: FaultInjector = getattr(app.state, "faults", None) or FaultInjector()
        app.state.faults = self.faults
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> LoopbackServer:
        import uvicorn

        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=f"loopback:{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"loopback server on port {self.port} did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True  # open keep-alive connections are cut, as a crash would
            if self._thread is not None:
                self._thread.join(timeout=10)
            self._server = None

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
