"""nox sessions: `nox -s tests`, `nox -s lint`, `nox -s docs`, `nox -s bench` install from requirements/lock.txt;
`nox -s latest` runs the tests on the newest versions pyproject.toml allows (drift shows there first);
`nox -s lock` regenerates requirements/lock.txt. Each installs CPU torch first on CPU hosts."""

import nox

nox.options.sessions = ["lint", "docs", "tests"]
nox.options.reuse_existing_virtualenvs = True

LOCK = "requirements/lock.txt"
# The CPU build; a plain `torch` (or an eager upgrade of it) would pull the multi-GB CUDA build.
CPU_TORCH = "torch==2.13.0"
# installed with --no-deps (scripts/lock.py WITHOUT_DEPS): hydra-optuna-sweeper (hparams_search=optuna) because its
# optuna<3 pin would replace the sweep extra's optuna 4, whose RDB storage works on SQLAlchemy 2; tinker-cookbook
# (tested against thinker tinker-serve) because its tml-renderers requirement is not on the index (the imports its
# supervised loop needs are in the dev extra)
WITHOUT_DEPS = ["hydra-optuna-sweeper", "tinker-cookbook"]


def _install(session: nox.Session) -> None:
    """The locked versions: the lock is a constraints file, so a reused venv is moved to its pins too."""
    session.install("-c", LOCK, CPU_TORCH)
    session.install("-c", LOCK, "-e", ".[dev,sweep]")
    session.install("-c", LOCK, "--no-deps", *WITHOUT_DEPS)


def _install_latest(session: nox.Session, check: bool = False) -> None:
    """The newest versions pyproject.toml allows, no lock; torch stays at the CPU build. check: `pip check` them
    before the --no-deps packages go in (whose declared requirements are knowingly not met)."""
    session.install("--upgrade", "pip")
    session.install(CPU_TORCH)
    session.install("--upgrade", "--upgrade-strategy", "eager", CPU_TORCH, "-e", ".[dev,sweep]")
    if check:
        session.run("pip", "check")
    session.install("--upgrade", "--no-deps", *WITHOUT_DEPS)


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    _install(session)
    session.run("pytest", "-q", *session.posargs)
    if not session.posargs:
        session.run("pytest", "-q", "-m", "slow")  # the real training runs the default selection leaves out


@nox.session(python="3.11", reuse_venv=False)
def latest(session: nox.Session) -> None:
    """The tests on the newest versions pyproject.toml allows, no lock: drift shows here before users see it.

    Not a default session (CI installs the lock); run it e.g. weekly or before `nox -s lock`."""
    _install_latest(session)
    # What moved since the lock (informational; the tests below decide).
    session.run("python", "scripts/lock.py", "--check", success_codes=[0, 1])
    session.run("pytest", "-q", "--deselect", "tests/test_lockfile.py::test_installed_versions_match_lock",
                *session.posargs)


@nox.session(python="3.11", reuse_venv=False)
def lock(session: nox.Session) -> None:
    """Regenerate requirements/lock.txt from a fresh install of the newest allowed versions.

    Then run `nox -s tests` and review pyproject.toml's lower bounds (the versions the lock was tested with).
    `nox -s lock -- --output /tmp/lock.txt` writes elsewhere, e.g. to compare."""
    _install_latest(session, check=True)
    session.run("python", "scripts/lock.py", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    session.install("-c", LOCK, "ruff", "import-linter")
    session.run("ruff", "check", "src", "tests", "bench", "scripts", "launch.py", "noxfile.py")
    # the import contracts of pyproject.toml; grimp finds the package on the path (src/, not installed here)
    session.run("lint-imports", "--no-cache", env={"PYTHONPATH": "src"})


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """The documentation site (docs/, mkdocs.yml): --strict fails on a broken link or anchor and on a page left
    out of nav. Built into the session's temporary folder; `nox -s docs -- serve` previews it instead."""
    session.install("-c", LOCK, "mkdocs-material")
    if session.posargs[:1] == ["serve"]:
        session.run("mkdocs", "serve")
    else:
        session.run("mkdocs", "build", "--strict", "--site-dir", session.create_tmp() + "/site")


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    _install(session)
    for script in ("bench/compose.py", "bench/validate.py"):
        session.run("python", script)
