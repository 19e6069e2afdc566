"""thinker.providers is layered (docs/architecture.md): no import cycle among its modules, function-level
imports included, and no provider module imports another (each keeps only its own; shared plumbing lives in
sdk_adapter.py, the types in adapter.py and capabilities.py)."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "src" / "thinker" / "providers"
PROVIDERS = {"together", "fireworks", "openai", "retired"}


def imports_of(path: Path) -> set[str]:
    """The thinker.providers modules `path` imports anywhere in it (a name from the package itself counts as
    its module when one of that name exists, else as the package)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("thinker.providers"):
            if node.module == "thinker.providers":
                found |= {a.name if (PACKAGE / f"{a.name}.py").is_file() else "__init__" for a in node.names}
            else:
                found.add(node.module.rsplit(".", 1)[-1])
        elif isinstance(node, ast.Import):
            found |= {a.name.rsplit(".", 1)[-1] for a in node.names if a.name.startswith("thinker.providers.")}
    return found - {path.stem}


def graph() -> dict[str, set[str]]:
    return {path.stem: imports_of(path) for path in PACKAGE.glob("*.py")}


def cycle_in(edges: dict[str, set[str]]) -> list[str] | None:
    def visit(node: str, trail: list[str]) -> list[str] | None:
        if node in trail:
            return trail[trail.index(node):] + [node]
        for target in sorted(edges.get(node, ())):
            found = visit(target, [*trail, node])
            if found:
                return found
        return None

    return next((c for c in (visit(n, []) for n in sorted(edges)) if c), None)


def test_the_providers_package_has_no_import_cycle():
    edges = graph()
    assert {"adapter", "checks", "capabilities", "sdk_adapter"} <= set(edges)
    assert cycle_in(edges) is None, " -> ".join(cycle_in(edges) or [])


def test_the_cycle_check_finds_a_cycle_such_as_adapter_and_checks_importing_each_other():
    edges = graph()
    edges["checks"] = {*edges["checks"], "adapter"}  # what checks.py did before capabilities.py existed
    assert cycle_in(edges) is not None


def test_no_provider_module_imports_another():
    edges = graph()
    assert {name: edges[name] & PROVIDERS for name in PROVIDERS} == {name: set() for name in PROVIDERS}
