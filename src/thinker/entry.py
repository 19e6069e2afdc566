"""Turn Hydra's composition errors into Thinker's one-line error format.

Hydra reports a bad override or an unknown option itself, before our task function runs, as a multi-line
message and exit status 1. guarded_main holds stderr back while Hydra composes; if composition fails, the
held message is folded into `[thinker] error: ...` with the config stage's exit code. The pipeline calls
release_stderr() as its first act, so everything a running job prints goes straight through.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable

from thinker.errors import ExitCode

_held: io.StringIO | None = None
_real_stderr = None


def release_stderr() -> None:
    """Stop holding stderr back and pass on whatever Hydra printed meanwhile (warnings, deprecations)."""
    global _held, _real_stderr
    if _held is None:
        return
    held_text = _held.getvalue()
    sys.stderr = _real_stderr
    _held, _real_stderr = None, None
    if held_text:
        sys.stderr.write(held_text)


def _wants_raw_errors(argv: list[str]) -> bool:
    return bool(os.environ.get("HYDRA_FULL_ERROR")) or any(a in ("debug=true", "debug=True") for a in argv)


def format_hydra_error(text: str) -> str:
    """Fold Hydra's multi-line composition error into one `[thinker] error:` line."""
    lines: list[str] = []
    key = None
    options: list[str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("Config search path:"):
            break  # what follows is Hydra's search path listing, noise for a user
        if not line or "HYDRA_FULL_ERROR" in line or line.startswith(("object_type=", "To append")):
            continue
        if line.startswith("full_key:"):
            key = line.split(":", 1)[1].strip()
        elif line.startswith("Available options in"):
            options = []
        elif options is not None:
            options.append(line)
        else:
            lines.append(line.rstrip("."))
    what = "; ".join(lines) or "the config could not be composed"
    if options:
        what += f" (available: {', '.join(options)})"
    where = f"config key {key}" if key else "config composition"
    fix = "fix the override (python launch.py --help lists every group and option)"
    return f"[thinker] error: {what}, {where}, {fix}"


def guarded_main(hydra_main: Callable[[], object], argv: list[str] | None = None) -> None:
    global _held, _real_stderr
    argv = sys.argv[1:] if argv is None else argv
    if _wants_raw_errors(argv):
        hydra_main()
        _exit_if_sweep_failed()
        return
    _real_stderr, _held = sys.stderr, io.StringIO()
    sys.stderr = _held
    try:
        hydra_main()
    except SystemExit as exc:
        if exc.code not in (0, None):
            _exit_if_sweep_failed()  # the sweeper gave up after failed jobs: report them, not a config error
        if _held is not None and exc.code not in (0, None):
            text = _held.getvalue()
            _held = None
            sys.stderr = _real_stderr
            print(format_hydra_error(text), file=sys.stderr)
            raise SystemExit(int(ExitCode.CONFIG)) from None
        raise
    finally:
        release_stderr()
    _exit_if_sweep_failed()


def _exit_if_sweep_failed() -> None:
    """A sweep whose jobs failed (each already reported) exits with the first failed job's stage code."""
    from thinker.sweeps import report

    outcome = report()
    if outcome is not None and outcome.failed:
        release_stderr()
        raise SystemExit(outcome.exit_code)
