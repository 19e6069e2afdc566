"""nox sessions: `nox -s tests`, `nox -s lint`, `nox -s bench`. Each installs CPU torch first on CPU hosts."""

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True


def _install(session: nox.Session) -> None:
    session.install("torch==2.13.0")
    session.install("-e", ".[dev]")


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    _install(session)
    session.run("pytest", "-q", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "src", "tests", "bench", "launch.py", "noxfile.py")


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    _install(session)
    for script in ("bench/compose.py", "bench/validate.py"):
        session.run("python", script)
