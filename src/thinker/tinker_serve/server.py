"""Start and stop a tinker-serve server: in the foreground (the CLI), in a thread, or as a subprocess.

    from thinker.tinker_serve.server import start_in_thread, spawn

    with start_in_thread(models=["tiny-qwen"], state_dir=tmp_path) as server:   # a free port on 127.0.0.1
        client = tinker.ServiceClient(base_url=server.base_url, api_key="tml-test")

    with spawn(models=["tiny-qwen"], state_dir=tmp_path) as proc:               # `thinker tinker-serve` process
        ...; proc.kill()                                                         # SIGKILL, as a crash would

The order at startup: the model options compose (an unknown name fails at once), the port is bound (a port
in use fails before any loading), the models load, then the server answers and says so in one line:
`[thinker] tinker-serve: http://127.0.0.1:8000 serving tiny-qwen (state in models/tinker-serve)`.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thinker.errors import ThinkerError

log = logging.getLogger("thinker")

DEFAULT_STATE_DIR = Path("models") / "tinker-serve"
DEFAULT_MODELS = ("tiny-qwen",)
READY_PREFIX = "[thinker] tinker-serve: "
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass
class ServeOptions:
    models: Sequence[str] = DEFAULT_MODELS
    state_dir: Path = DEFAULT_STATE_DIR
    host: str = "127.0.0.1"
    port: int = 8000
    device: str = "auto"  # auto | cpu | cuda
    dtype: str | None = None  # fp32 | bf16; None: fp32 on cpu, bf16 on cuda
    api_keys: set[str] | None = None  # None: $THINKER_SERVE_API_KEYS (comma-separated); empty: any tml- key
    long_poll_s: float = 20.0  # how long retrieve_future waits for a result before answering try_again
    # ASGI middleware around the routes (starlette.middleware.Middleware, the last one outermost): a hook for
    # embedding the server, e.g. the tests put their fault injection in front of it (tests/support/faults.py)
    middleware: Sequence[Any] = ()


def parse_models(text: str | Iterable[str]) -> list[str]:
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n and n.strip()]
    if not names:
        raise ThinkerError("no model to serve", "--models", "name at least one model option, e.g. --models tiny-qwen")
    return list(dict.fromkeys(names))


def api_keys_from_env() -> set[str] | None:
    from thinker.tinker_serve.app import KEYS_ENV

    keys = {k.strip() for k in os.environ.get(KEYS_ENV, "").split(",") if k.strip()}
    return keys or None


def compose_models(names: Sequence[str]) -> dict[str, Any]:
    """{name: cfg.model} for each model option; an unknown name is a ThinkerError listing the known ones."""
    from hydra.errors import MissingConfigException

    from thinker.launch.app import compose_config

    configs: dict[str, Any] = {}
    for name in names:
        try:
            configs[name] = compose_config([f"model={name}"]).model
        except MissingConfigException as exc:
            raise ThinkerError(f"unknown model {name!r}", f"--models {','.join(names)}",
                               f"choose from {', '.join(known_models())} (or import one with thinker models import)",
                               stage="config") from exc
    return configs


def known_models() -> list[str]:
    from thinker.models.registry import shipped_model_options
    from thinker.models.registry_options import register_registry_options

    try:
        registered = list(register_registry_options())
    except ThinkerError:
        registered = []
    return sorted(set(shipped_model_options()) | set(registered))


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ThinkerError(f"port {port} on {host} is in use", f"--port {port}",
                               "stop the program that uses it, or pick another port (--port 0 picks a free one)",
                               stage="config") from exc
        raise ThinkerError(f"cannot listen on {host}:{port} ({exc.strerror})", f"--host {host}",
                           "use 127.0.0.1 (the default) or an address of this machine", stage="config") from exc
    sock.listen(128)
    sock.setblocking(False)
    return sock


def build(options: ServeOptions, model_configs: dict[str, Any]) -> tuple[Any, Any]:
    """Load the models and make (service, app). Imports torch, transformers, peft and fastapi."""
    from thinker.console import quiet_third_party

    quiet_third_party()
    from thinker.tinker_serve.app import create_app
    from thinker.tinker_serve.checkpoints import CheckpointStore
    from thinker.tinker_serve.engine import default_dtype, load_base_model, resolve_device
    from thinker.tinker_serve.futures import FutureStore
    from thinker.tinker_serve.service import TinkerService

    try:
        device = resolve_device(options.device)
    except ValueError as exc:
        raise ThinkerError(str(exc), f"--device {options.device}", "use --device cpu (or auto)") from exc
    dtype = options.dtype or default_dtype(device)
    store = CheckpointStore(Path(options.state_dir))
    bases, tokenizer_dirs = {}, {}
    for name, cfg in model_configs.items():
        log.info("loading %s on %s (%s) for tinker-serve", name, device, dtype)
        base = load_base_model(name, cfg, device, dtype)
        tokenizer_dir = (store.root / "tokenizers" / name).resolve()
        base.tokenizer.save_pretrained(str(tokenizer_dir))  # get_info's tokenizer_id: a local folder
        bases[name], tokenizer_dirs[name] = base, str(tokenizer_dir)
    service = TinkerService(bases, store, FutureStore(), tokenizer_dirs)
    keys = options.api_keys if options.api_keys is not None else api_keys_from_env()
    app = create_app(service, api_keys=keys, long_poll_s=options.long_poll_s)
    for middleware in options.middleware:
        app.add_middleware(middleware.cls, *middleware.args, **middleware.kwargs)
    return service, app


def _uvicorn_server(app: Any, on_ready: Any = None) -> Any:
    import uvicorn

    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)  # its startup chatter; errors still show

    class _Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and on_ready is not None:
                on_ready()

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            await super().shutdown(sockets=sockets)
            # SIGINT / SIGTERM is how a server is stopped: after this graceful shutdown uvicorn would raise the
            # signal again (a KeyboardInterrupt traceback, or death by SIGTERM); the command exits 0 instead
            captured = getattr(self, "_captured_signals", None)
            if captured:
                captured.clear()

    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", timeout_graceful_shutdown=3,
                            timeout_keep_alive=30)
    return _Server(config)


def ready_line(url: str, models: Sequence[str], state_dir: Path) -> str:
    return f"{READY_PREFIX}{url} serving {', '.join(models)} (state in {state_dir})"


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve_forever(options: ServeOptions) -> int:
    """The CLI: run in the foreground until SIGINT / SIGTERM."""
    model_configs = compose_models(parse_models(options.models))
    sock = bind(options.host, options.port)
    if options.host not in LOOPBACK:
        log.warning("tinker-serve listens on %s: anyone who can reach this machine can use it with a tml- key; "
                    "set THINKER_SERVE_API_KEYS to restrict the keys", options.host)
    try:
        service, app = build(options, model_configs)
        url = url_of(sock)
        server = _uvicorn_server(app, lambda: print(ready_line(url, list(model_configs), options.state_dir), flush=True))
        try:
            server.run(sockets=[sock])
        finally:
            service.stop()
    finally:
        sock.close()
    print(f"{READY_PREFIX}stopped", flush=True)
    return 0


class ThreadServer:
    """A server on a thread of this process (tests, notebooks). Use as a context manager, or start()/stop()."""

    def __init__(self, options: ServeOptions):
        self.options = options
        model_configs = compose_models(parse_models(options.models))
        self.sock = bind(options.host, options.port)
        self.base_url = url_of(self.sock)
        try:
            self.service, self.app = build(options, model_configs)
        except BaseException:
            self.sock.close()
            raise
        self._server = _uvicorn_server(self.app)
        self._thread = threading.Thread(target=self._run, name="tinker-serve http", daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self.sock])
        except BaseException as exc:  # SystemExit from a failed startup included
            self._error = exc

    def start(self, timeout: float = 60.0) -> ThreadServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"tinker-serve did not start: {self._error!r}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.app.state.tinker["stopping"] = True
        self.service.futures.wake_all()
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=15)
        self.service.stop()
        self.sock.close()

    def __enter__(self) -> ThreadServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_in_thread(models: Sequence[str] | str = DEFAULT_MODELS, state_dir: str | Path = DEFAULT_STATE_DIR, *,
                    host: str = "127.0.0.1", port: int = 0, device: str = "cpu", dtype: str | None = None,
                    api_keys: set[str] | None = None, long_poll_s: float = 20.0, middleware: Sequence[Any] = (),
                    timeout: float = 120.0) -> ThreadServer:
    """Start a server on a thread and return it once it answers (`.base_url`, `.stop()`, a context manager).

    Defaults suit tests: a free port, the CPU, any tml- key unless `api_keys` lists keys (the environment's
    THINKER_SERVE_API_KEYS is not read); `middleware` wraps the routes (ServeOptions.middleware).
    """
    options = ServeOptions(models=parse_models(models), state_dir=Path(state_dir), host=host, port=port,
                           device=device, dtype=dtype, api_keys=set(api_keys or ()), long_poll_s=long_poll_s,
                           middleware=tuple(middleware))
    return ThreadServer(options).start(timeout=timeout)


class ServerProcess:
    """`thinker tinker-serve` in a child process; `.base_url` once its ready line is out."""

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None, cwd: str | Path | None = None):
        self.args = [sys.executable, "-m", "thinker.commands.cli", "tinker-serve", *args]
        self.env, self.cwd = env, cwd
        self.lines: list[str] = []
        self.base_url = ""
        self.proc: subprocess.Popen[str] | None = None
        self._queue: queue.Queue[str | None] = queue.Queue()

    def start(self, timeout: float = 300.0) -> ServerProcess:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=self.env, cwd=self.cwd, bufsize=1)
        threading.Thread(target=self._drain, name="tinker-serve output", daemon=True).start()
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise RuntimeError(f"tinker-serve did not get ready in {timeout:.0f}s:\n{self.output}") from None
            if line is None:
                self.proc.wait()
                raise RuntimeError(f"tinker-serve exited with {self.proc.returncode}:\n{self.output}")
            if line.startswith(READY_PREFIX + "http"):
                self.base_url = line[len(READY_PREFIX):].split()[0]
                return self

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def kill(self) -> None:
        """SIGKILL: no cleanup runs, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (graceful), SIGKILL after `timeout` seconds. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def spawn(models: Sequence[str] | str = DEFAULT_MODELS, state_dir: str | Path = DEFAULT_STATE_DIR, *,
          port: int = 0, extra_args: Sequence[str] = (), env: dict[str, str] | None = None,
          cwd: str | Path | None = None, timeout: float = 300.0) -> ServerProcess:
    """Run `thinker tinker-serve` as a subprocess and return it once it answers (port 0: a free port)."""
    names = parse_models(models)
    args = ["--models", ",".join(names), "--state-dir", str(state_dir), "--port", str(port), *extra_args]
    return ServerProcess(args, env=env, cwd=cwd).start(timeout=timeout)
