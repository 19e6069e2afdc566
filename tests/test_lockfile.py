"""requirements/lock.txt agrees with pyproject.toml, and this environment was installed from it.

Fast and offline: reads two files and the installed distributions' metadata, imports nothing heavy.
The checks return lists of problems; the last test feeds them broken inputs to show each one can fail.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"
PYPROJECT = ROOT / "pyproject.toml"
INSTALL_HINT = ('pip install -c requirements/lock.txt torch==2.13.0 && '
                'pip install -c requirements/lock.txt -e ".[dev]"')


def direct_requirements(pyproject_text: str) -> list[Requirement]:
    """The base dependencies plus every optional-dependencies extra."""
    project = tomllib.loads(pyproject_text)["project"]
    reqs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs += extra
    return [Requirement(r) for r in reqs]


def parse_lock(text: str) -> tuple[dict[str, str], list[str]]:
    """(canonical name -> pinned version, problems): every line must be `name==version`, each name once."""
    pins: dict[str, str] = {}
    problems = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement as exc:
            problems.append(f"line {number}: {raw!r} does not parse ({exc})")
            continue
        specs = list(req.specifier)
        if (req.url or req.extras or req.marker or len(specs) != 1 or specs[0].operator != "=="
                or "*" in specs[0].version):
            problems.append(f"line {number}: {raw!r} is not an exact `name==version` pin")
            continue
        name = canonicalize_name(req.name)
        if name in pins:
            problems.append(f"line {number}: {req.name} is pinned twice "
                            f"({pins[name]} and {specs[0].version})")
            continue
        pins[name] = specs[0].version
    return pins, problems


def coverage_problems(reqs: list[Requirement], pins: dict[str, str]) -> list[str]:
    """Every direct requirement is pinned, to a version its specifier allows."""
    problems = []
    for req in reqs:
        pinned = pins.get(canonicalize_name(req.name))
        if pinned is None:
            problems.append(f"{req} is not pinned in the lock")
        elif not req.specifier.contains(pinned, prereleases=True):
            problems.append(f"{req.name}=={pinned} in the lock does not satisfy pyproject's {req}")
    return problems


def installed_problems(reqs: list[Requirement], pins: dict[str, str],
                       installed_version: Callable[[str], str] = version) -> list[str]:
    """Each direct requirement is installed at its locked version (a +local label such as +cpu is allowed)."""
    problems = []
    for req in reqs:
        if req.marker is not None and not req.marker.evaluate():
            continue
        pinned = pins.get(canonicalize_name(req.name))
        if pinned is None:
            continue  # coverage_problems reports it
        try:
            have = installed_version(req.name)
        except PackageNotFoundError:
            problems.append(f"{req.name} is not installed (locked {pinned})")
            continue
        if not SpecifierSet(f"=={pinned}").contains(have, prereleases=True):
            problems.append(f"{req.name} {have} is installed, the lock has {pinned}")
    return problems


def _lock() -> dict[str, str]:
    pins, _ = parse_lock(LOCK.read_text())
    return pins


def _reqs() -> list[Requirement]:
    return direct_requirements(PYPROJECT.read_text())


def test_lock_has_only_exact_pins_each_name_once():
    pins, problems = parse_lock(LOCK.read_text())
    assert problems == []
    assert "torch" in pins and len(pins) > len(_reqs())


def test_every_direct_dependency_and_extra_is_pinned_within_pyproject():
    assert coverage_problems(_reqs(), _lock()) == []


def test_installed_versions_match_lock():
    problems = installed_problems(_reqs(), _lock())
    assert problems == [], f"this environment was not installed from the lock; install with: {INSTALL_HINT}"


# The checks above on inputs that must fail (and on the torch +cpu build, which must pass).
PYPROJECT_TEXT = """
[project]
dependencies = ["torch>=2.13.0", "hydra-core>=1.3.8,<1.4"]
[project.optional-dependencies]
dev = ["ruff>=0.17"]
"""


@pytest.mark.parametrize(
    ("lock_text", "expected"),
    [
        ("torch==2.13.0\nPyYAML==6.0.3\n", None),
        ("PyYAML==6.0.3\npyyaml==6.0.2\n", "pinned twice"),
        ("huggingface_hub==2.4.0\nhuggingface-hub==2.4.0\n", "pinned twice"),
        ("torch>=2.13.0\n", "not an exact"),
        ("torch==2.13.*\n", "not an exact"),
        ("torch==2.13.0,<3\n", "not an exact"),
        ("torch @ https://example.invalid/torch.whl\n", "not an exact"),
        ("torch==2.13.0; python_version > '3'\n", "not an exact"),
        ("torch\n", "not an exact"),
        ("torch ==\n", "does not parse"),
    ],
)
def test_parse_lock_rejects_loose_lines_and_duplicates(lock_text, expected):
    _, problems = parse_lock(lock_text)
    if expected is None:
        assert problems == []
    else:
        assert len(problems) == 1 and expected in problems[0]


def test_coverage_check_fails_on_missing_or_out_of_range_pins():
    reqs = direct_requirements(PYPROJECT_TEXT)
    assert [str(r) for r in reqs] == ["torch>=2.13.0", "hydra-core<1.4,>=1.3.8", "ruff>=0.17"]
    good = {"torch": "2.13.0", "hydra-core": "1.3.8", "ruff": "0.17.6"}
    assert coverage_problems(reqs, good) == []
    assert coverage_problems(reqs, {k: v for k, v in good.items() if k != "ruff"}) == [
        "ruff>=0.17 is not pinned in the lock"]
    assert "does not satisfy" in coverage_problems(reqs, {**good, "hydra-core": "1.4.0"})[0]
    assert "does not satisfy" in coverage_problems(reqs, {**good, "torch": "2.12.1"})[0]


def test_installed_check_fails_on_other_or_missing_versions():
    reqs = direct_requirements(PYPROJECT_TEXT)
    pins = {"torch": "2.13.0", "hydra-core": "1.3.8", "ruff": "0.17.6"}
    installed = {"torch": "2.13.0+cpu", "hydra-core": "1.3.8", "ruff": "0.17.6"}

    def fake(env: dict[str, str]) -> Callable[[str], str]:
        def installed_version(name: str) -> str:
            try:
                return env[name]
            except KeyError:
                raise PackageNotFoundError(name) from None
        return installed_version

    assert installed_problems(reqs, pins, fake(installed)) == []
    assert installed_problems(reqs, pins, fake({**installed, "ruff": "0.17.7"})) == [
        "ruff 0.17.7 is installed, the lock has 0.17.6"]
    assert installed_problems(reqs, pins, fake({**installed, "torch": "2.14.1"})) == [
        "torch 2.14.1 is installed, the lock has 2.13.0"]
    without_hydra = {k: v for k, v in installed.items() if k != "hydra-core"}
    assert installed_problems(reqs, pins, fake(without_hydra)) == [
        "hydra-core is not installed (locked 1.3.8)"]
