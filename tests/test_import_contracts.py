"""No import cycle inside src/thinker, and the import-linter contracts in pyproject.toml hold (docs/architecture.md,
"Layers"). Every import statement counts, those inside functions included: a lazy import of thinker's own modules
hides a cycle as well as a top-level one. Each check is also shown failing on a copy of the package with one
import added.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "src" / "thinker"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def module_graph(package: Path) -> dict[str, set[str]]:
    """module -> the package's modules it imports anywhere (module level, functions, TYPE_CHECKING blocks).
    `from a import b` names the module a.b when there is one, else a (as grimp, import-linter's graph, does)."""
    modules: dict[str, tuple[Path, bool]] = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, (path, is_package) in modules.items():
        here = name if is_package else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                    base = ".".join(parent + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            graph[name].update(t for t in map(known, targets) if t is not None and t != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def lint_imports(root: Path, src: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` with the contracts of `root`/pyproject.toml, on the thinker package found in `src`."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=120)


def copy_with_import(tmp_path: Path, module: str, statement: str) -> Path:
    """A copy of the project's package and contracts in `tmp_path`, with `statement` added inside a new function
    at the end of `module` (a path under src/thinker): a function-level import, the kind that hides best."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(PACKAGE, tmp_path / "src" / "thinker", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "src" / "thinker" / module
    target.write_text(target.read_text() + f"\n\ndef _added_by_the_test():\n    {statement}\n")
    return tmp_path / "src"


def test_no_import_cycle_inside_src_thinker():
    assert cycles(module_graph(PACKAGE)) == []


def test_the_cycle_check_finds_a_function_level_cycle(tmp_path):
    # thinker.launch.entry imports thinker.console at module level; console importing entry back closes a cycle
    src = copy_with_import(tmp_path, "console.py", "import thinker.launch.entry  # noqa: F401")
    assert any({"thinker.console", "thinker.launch.entry"} <= set(cycle) for cycle in cycles(module_graph(src / "thinker")))


def test_import_contracts_are_kept():
    out = lint_imports(ROOT, PACKAGE.parent)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_a_local_backend_importing_the_tinker_backend_breaks_the_contracts(tmp_path):
    src = copy_with_import(tmp_path, "backends/local/ranks.py", "import thinker.backends.tinker  # noqa: F401")
    out = lint_imports(tmp_path, src)
    assert out.returncode != 0
    assert "Backends are independent of each other BROKEN" in " ".join(out.stdout.split())
    assert "thinker.backends.local.ranks -> thinker.backends.tinker" in out.stdout


def test_a_low_layer_importing_a_high_one_breaks_the_layers(tmp_path):
    # errors is the lowest layer; the stages are the run layer (and importing them back is a cycle too)
    src = copy_with_import(tmp_path, "errors/__init__.py", "from thinker.run import evaluate  # noqa: F401")
    out = lint_imports(tmp_path, src)
    assert out.returncode != 0
    assert "thinker.errors -> thinker.run.evaluate" in out.stdout
    assert cycles(module_graph(src / "thinker")) != []
