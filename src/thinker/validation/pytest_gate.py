"""The pytest gate: the user's data-contract tests, run in-process with pytest.main before training.

In-process (docs/decisions/0005-validation-gate.md) rather than a subprocess, so the gate sees the same interpreter and
installed packages as the run. The dataset is passed to the tests through environment variables
(THINKER_DATA_PATH and friends), set only while pytest runs.

pytest caches imported test modules in sys.modules, so a second gate in the same process (a Hydra
multirun) reuses them: gate tests must read their environment variables inside the tests, not at import.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

# pytest's exit codes (pytest.ExitCode), copied so this module needs no pytest import to read them.
_PYTEST_OK = 0
_PYTEST_USAGE_ERROR = 4
_PYTEST_NO_TESTS_COLLECTED = 5


@dataclass
class PytestGateResult:
    status: str  # "passed" | "failed" | "skipped" | "no_tests" (a gate that tests nothing is misconfigured)
    exit_code: int  # pytest's exit code; 0 when the gate did not run
    paths: list[str]
    markers: str
    message: str = ""
    outcomes: dict[str, int] = field(default_factory=dict)  # e.g. {"passed": 4, "skipped": 1}

    @property
    def ok(self) -> bool:
        return self.status in ("passed", "skipped")


class _OutcomeCounter:
    """A pytest plugin counting test outcomes, so the result can say '3 passed, 1 skipped'."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def pytest_runtest_logreport(self, report: Any) -> None:
        # A test counts once: by its call phase, or by setup/teardown when those fail or skip it.
        if report.when == "call" or report.outcome != "passed":
            self.counts["error" if report.failed and report.when != "call" else report.outcome] += 1


def run_pytest_gate(
    paths: list[str], markers: str, args: list[str], env: Mapping[str, str], quiet: bool = False
) -> PytestGateResult:
    """Run `pytest.main([*paths, "-m", markers, *args])` with `env` added to os.environ for the duration.

    quiet: pytest's own report (dots, warnings summary) is kept back and printed only when the gate fails;
    the caller prints the one-line summary (`result.message`)."""
    paths = [str(p) for p in paths]
    if not paths:
        return PytestGateResult("skipped", 0, paths, markers, "no pytest gate paths configured")
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        return PytestGateResult(
            "failed",
            _PYTEST_USAGE_ERROR,
            paths,
            markers,
            f"pytest gate path(s) not found: {', '.join(missing)} (relative to {os.getcwd()})",
        )

    import pytest  # lazily: only the gate needs it

    argv = [*paths, *(["-m", markers] if markers else []), *args]
    counter = _OutcomeCounter()
    report = io.StringIO()
    with _environment(env), _restored_sys_path(), contextlib.redirect_stdout(report) if quiet else _nothing():
        exit_code = int(pytest.main(argv, plugins=[counter]))
    result = _result(exit_code, paths, markers, dict(counter.counts))
    if quiet and not result.ok:
        print(report.getvalue(), end="", flush=True)  # the failing tests' details are what the user needs
    return result


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _result(exit_code: int, paths: list[str], markers: str, outcomes: dict[str, int]) -> PytestGateResult:
    counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(outcomes.items())) or "no tests ran"
    if exit_code == _PYTEST_OK:
        return PytestGateResult("passed", exit_code, paths, markers, counts, outcomes)
    if exit_code == _PYTEST_NO_TESTS_COLLECTED:
        message = f"no tests collected from {', '.join(paths)} with -m {markers!r}"
        return PytestGateResult("no_tests", exit_code, paths, markers, message, outcomes)
    return PytestGateResult(
        "failed", exit_code, paths, markers, f"pytest exit code {exit_code}: {counts}", outcomes
    )


@contextmanager
def _environment(extra: Mapping[str, str]) -> Iterator[None]:
    """Set `extra` in os.environ, then put every touched variable back as it was (or remove it)."""
    saved = {name: os.environ.get(name) for name in extra}
    try:
        os.environ.update({name: str(value) for name, value in extra.items()})
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def _restored_sys_path() -> Iterator[None]:
    # pytest's default import mode prepends each test folder to sys.path; keep that out of the run.
    saved = list(sys.path)
    try:
        yield
    finally:
        sys.path[:] = saved
