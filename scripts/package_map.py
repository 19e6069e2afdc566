"""The package map of docs/architecture.md: src/thinker as a tree, one line per module, each described by the
first sentence of its docstring (a package by its __init__.py's).

    python scripts/package_map.py            # print the tree
    python scripts/package_map.py --write    # rewrite the tree between the page's package-map markers

tests/test_package_map.py checks that the page holds exactly what this prints, so the map cannot go stale: a new,
moved or removed module (or a changed docstring) fails it until the page is rewritten with --write.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "thinker"
PAGE = ROOT / "docs" / "architecture.md"
START, END = "<!-- package-map:start -->", "<!-- package-map:end -->"
COLUMN = 34  # where the descriptions start
WIDTH = 90  # the longest description
# "(docs/decisions/0010-....md)", "; docs/objectives.md, ..." inside parentheses, ": docs/...": the site links them
DOC_REFERENCE = re.compile(r"\s*\((?:see )?docs/[^()]*\)|[;:]\s*docs/[^;()]*")


def summary(path: Path) -> str:
    """The first sentence of the module's docstring without doc references, shortened to WIDTH characters at a
    clause (", ", "; ", ": ", " (") or else a word, an ellipsis marking the cut."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    paragraph = " ".join(doc.strip().split("\n\n", 1)[0].split())
    sentence = DOC_REFERENCE.sub("", re.split(r"(?<=[a-z0-9)`'\"])\. (?=[A-Z`])", paragraph, maxsplit=1)[0])
    sentence = sentence.rstrip(".:")
    if len(sentence) <= WIDTH:
        return sentence
    head = sentence[:WIDTH]
    clause = max(head.rfind(mark) for mark in (", ", "; ", ": ", " ("))
    cut = clause if clause > WIDTH // 2 else head.rfind(" ")
    return head[:cut].rstrip(",;:") + " …"


def modules(folder: Path) -> list[Path]:
    """The modules and subpackages of `folder`: modules first, then packages, each sorted by name."""
    files = sorted(p for p in folder.glob("*.py") if p.name != "__init__.py")
    packages = sorted(p for p in folder.iterdir() if p.is_dir() and (p / "__init__.py").is_file())
    return files + packages


def tree_lines(folder: Path, prefix: str = "") -> list[str]:
    lines: list[str] = []
    entries = modules(folder)
    for index, entry in enumerate(entries):
        last = index == len(entries) - 1
        branch, below = ("└── ", "    ") if last else ("├── ", "│   ")
        is_package = entry.is_dir()
        name = entry.name + ("/" if is_package else "")
        described = summary(entry / "__init__.py" if is_package else entry)
        lines.append(f"{prefix}{branch}{name}".ljust(COLUMN) + described)
        if is_package:
            lines += tree_lines(entry, prefix + below)
    return lines


def package_map() -> str:
    """The tree, the package itself on its first line."""
    return "\n".join(["thinker/".ljust(COLUMN) + summary(PACKAGE / "__init__.py"), *tree_lines(PACKAGE)])


def page_block(text: str) -> str:
    """What the page holds between its markers, inside the code fence."""
    inside = text.split(START, 1)[1].split(END, 1)[0]
    return inside.strip().removeprefix("```text").removesuffix("```").strip("\n")


def write_page() -> None:
    text = PAGE.read_text(encoding="utf-8")
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    PAGE.write_text(f"{before}{START}\n```text\n{package_map()}\n```\n{END}{after}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite the map in {PAGE.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    if args.write:
        write_page()
    else:
        print(package_map())
    return 0


if __name__ == "__main__":
    sys.exit(main())
