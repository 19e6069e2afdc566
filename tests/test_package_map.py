"""docs/architecture.md's package map is the code's: every module of src/thinker on one line of the tree, each
described by its docstring, as scripts/package_map.py generates it (so the page cannot go stale)."""

from __future__ import annotations

import importlib.util

from conftest import ROOT

PACKAGE = ROOT / "src" / "thinker"


def package_map_script():
    spec = importlib.util.spec_from_file_location("package_map", ROOT / "scripts" / "package_map.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_architecture_page_lists_every_module_as_the_script_generates_it():
    script = package_map_script()
    page = script.page_block((ROOT / "docs" / "architecture.md").read_text(encoding="utf-8"))
    assert page == script.package_map(), (
        "docs/architecture.md's package map differs from the code: run python scripts/package_map.py --write")


def test_the_tree_has_one_line_per_module_each_described():
    script = package_map_script()
    lines = script.package_map().splitlines()
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(lines) == len(modules)  # a package's line stands for its __init__.py
    names = [line[: script.COLUMN].strip(" │├└─") for line in lines]
    for path in modules:
        assert (path.parent.name + "/" if path.name == "__init__.py" else path.name) in names, path
    assert all(line[script.COLUMN:].strip() for line in lines), "a module without a docstring"
