"""Turn Hydra's composition errors into Thinker's one-line error format.

Hydra reports a bad override or an unknown option itself, before our task function runs, as a multi-line
message and exit status 1. guarded_main holds stderr back while Hydra composes; if composition fails, the
held message is folded into `[thinker] error: ...` with the config stage's exit code. The pipeline calls
release_stderr() (thinker.console) as its first act, so everything a running job prints goes straight through.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable

from thinker.console import hold_stderr, release_stderr, take_held_stderr
from thinker.errors import ERROR_PREFIX, ExitCode
from thinker.errors.wording import did_you_mean


def _wants_raw_errors(argv: list[str]) -> bool:
    return bool(os.environ.get("HYDRA_FULL_ERROR")) or any(a in ("debug=true", "debug=True") for a in argv)


_MISSING_OPTION = re.compile(r"Could not find '(?P<group>[\w/.-]+)/(?P<option>[^/']+)'")


def _schema_keys(type_name: str | None) -> list[str]:
    """The keys of the structured config Hydra names in `object_type=` (thinker.config.schema)."""
    import dataclasses

    from thinker.config import schema

    node = getattr(schema, type_name or "", None)
    return [f.name for f in dataclasses.fields(node)] if dataclasses.is_dataclass(node) else []


def _key_hint(key: str, type_name: str | None) -> str:
    """`did you mean optimizer.lr? ` for an unknown key `optimizer.lrr` of OptimizerConfig."""
    parent, _, name = key.rpartition(".")
    return did_you_mean(name, _schema_keys(type_name), prefix=f"{parent}." if parent else "")


def format_hydra_error(text: str) -> str:
    """Fold Hydra's multi-line composition error into one `[thinker] error:` line, with the closest key or
    option as a "did you mean" and without auto-named fine-tunes in the options (docs/models.md)."""
    from thinker.models.registry_options import listed_options

    lines: list[str] = []
    key = type_name = None
    options: list[str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("Config search path:"):
            break  # what follows is Hydra's search path listing, noise for a user
        if not line or "HYDRA_FULL_ERROR" in line or line.startswith("To append"):
            continue
        if line.startswith("object_type="):
            type_name = line.split("=", 1)[1].strip()
        elif line.startswith("full_key:"):
            key = line.split(":", 1)[1].strip()
        elif line.startswith("Available options in"):
            options = []
        elif options is not None:
            options.append(line)
        else:
            lines.append(line.rstrip("."))
    what = "; ".join(lines) or "the config could not be composed"
    hint = ""
    missing = _MISSING_OPTION.search(what)
    if options:
        shown, hidden = listed_options(options)
        if missing:  # an auto-named fine-tune only when no listed option is close (someone typing one)
            prefix = f"{missing['group']}="
            hint = (did_you_mean(missing["option"], shown, prefix)
                    or did_you_mean(missing["option"], options, prefix))
        auto = f"; {hidden} auto-named fine-tunes: thinker models list" if hidden else ""
        what += f" (available: {', '.join(shown)}{auto})"
    elif key and "not in" in what:
        hint = _key_hint(key, type_name)
    where = f"config key {key}" if key else "config composition"
    fix = f"{hint}fix the override (python launch.py --help lists every group and option)"
    return f"[thinker] error: {what}, {where}, {fix}"


# what Hydra prints for an exception that is not a composition error (it prints those without a traceback)
_NOT_COMPOSITION = ("Traceback (most recent call last)", "Error executing job with overrides",
                    "An error occurred during Hydra's exception formatting")
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Warning)\b[^ ]*: ")


def is_composition_error(text: str, code: object) -> bool:
    """Whether Hydra ended with a composition error: it prints those (a bad override, an unknown option, a
    type or interpolation error) as a short message and exits 1. An exception from a job or a launcher
    (a worker that died, a failing store) comes with a traceback, and a job's own SystemExit carries the
    job's stage code and prints nothing here: neither is a config that could not be composed."""
    return code == 1 and bool(text.strip()) and not any(marker in text for marker in _NOT_COMPOSITION)


# what Hydra raises when a launcher or sweeper preset names a plugin class that is not installed
_MISSING_PLUGIN = re.compile(r"Unknown plugin class : '(hydra_plugins\.(\w+)\.[\w.]+)'")


def format_job_failure(text: str, code: object) -> str:
    """One `[thinker] error:` line for a sweep that Hydra ended with something other than a composition error:
    the exception's last line when it printed one."""
    missing = _MISSING_PLUGIN.search(text)
    if missing:  # e.g. hydra/launcher=ray without hydra-ray-launcher, which the lock cannot install
        package = missing.group(2).replace("_", "-")
        return (f"{ERROR_PREFIX}the Hydra plugin {package} is not installed ({missing.group(1)}), "
                "hydra/launcher or hydra/sweeper, install it (the joblib and submitit launchers come with "
                "pip install -c requirements/lock.txt -e \".[sweep]\"; hydra-ray-launcher needs an environment of "
                "its own: docs/scaling.md, \"On a Ray cluster\")")
    lines = [line.strip() for line in text.splitlines() if line.strip() and "HYDRA_FULL_ERROR" not in line]
    starts = [i for i, line in enumerate(lines) if _EXCEPTION_LINE.match(line)]
    if starts:  # the exception's own message, which may go on over several lines, its class without module
        name, _, message = " ".join(lines[starts[-1]:]).partition(": ")
        what = f"{name.rsplit('.', 1)[-1]}: {message}"
    else:
        what = lines[-1] if lines else f"a job or the launcher ended with exit status {code} and no message"
    what = what if len(what) <= 500 else what[:497] + "..."
    return (f"{ERROR_PREFIX}{what}, a job or the launcher (not the config: it composed), "
            "this is a bug or an environment problem; the output above shows where (HYDRA_FULL_ERROR=1 or "
            "debug=true for the full traceback)")


def guarded_main(hydra_main: Callable[[], object], argv: list[str] | None = None) -> None:
    from thinker.backends.local.ranks import worker_overrides
    from thinker.paths import project_root

    root = project_root()
    if argv is not None and root is not None:
        # the thinker command: Lightning's DDP starts ranks > 0 by re-running sys.argv[0] with sys.argv[1:], which
        # is Hydra's command line here, what launch.py takes (the thinker command would read it as a subcommand)
        sys.argv[0] = str(root / "launch.py")
    argv = sys.argv[1:] if argv is None else argv
    # a rank > 0 that torchrun / srun started: no .hydra/ or launch.log of its own in rank 0's run folder
    sys.argv += worker_overrides(sys.argv[1:])
    if _wants_raw_errors(argv):
        hydra_main()
        _exit_if_sweep_failed()
        return
    hold_stderr()
    try:
        hydra_main()
    except SystemExit as exc:
        if exc.code not in (0, None):
            _exit_if_sweep_failed()  # the sweeper gave up after failed jobs: report them, not a config error
        text = take_held_stderr() if exc.code not in (0, None) else None
        if text is not None:
            from thinker.tracking.secrets import mask_text

            if is_composition_error(text, exc.code):
                print(mask_text(format_hydra_error(text)), file=sys.stderr)
                raise SystemExit(int(ExitCode.CONFIG)) from None
            # a job or the launcher failed: an exception, a worker that died, or a job's own exit status (the
            # job printed its `[thinker] error:` line itself)
            from thinker.errors.disk_full import before_the_run

            full = before_the_run(text, argv)  # a full disk stopped Hydra writing the run folder: one line
            if full is not None:
                print(mask_text(full.line()), file=sys.stderr)
                raise SystemExit(int(full.exit_code)) from None
            sys.stderr.write(mask_text(text))
            if isinstance(exc.code, int) and exc.code != 1 and not text.strip():
                raise SystemExit(exc.code) from None
            print(mask_text(format_job_failure(text, exc.code)), file=sys.stderr)
            raise SystemExit(1) from None
        raise
    finally:
        release_stderr()
    _exit_if_sweep_failed()


def _exit_if_sweep_failed() -> None:
    """A sweep whose jobs failed (each already reported) exits with the first failed job's stage code."""
    from thinker.sweeps.summary import report

    outcome = report()
    if outcome is not None and outcome.failed:
        release_stderr()
        raise SystemExit(outcome.exit_code)
