"""The documentation: README's links land on pages and headings that exist, and code cites the project's own
pages (docs/), never design documents the repository does not hold. `mkdocs build --strict` (CI, `nox -s docs`)
checks the links between the pages themselves."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import ROOT

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# the pre-docs citations: design documents ("seed 001", "ADR-002") that never were part of the repository
FOREIGN_CITATION = re.compile(r"\bseed[ -]00\d|\bADR-\d{3}|\bseed spec\b", re.IGNORECASE)


def heading_anchors(markdown: str) -> set[str]:
    """The anchors of a page's headings, as mkdocs' toc extension makes them (outside code fences)."""
    anchors, fenced = set(), False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            title = line.lstrip("#").strip().replace("`", "")
            slug = re.sub(r"[^\w\s-]", "", title.lower()).strip()
            anchors.add(re.sub(r"[-\s]+", "-", slug))
    return anchors


def broken_links(markdown: str, base: Path) -> list[str]:
    problems = []
    for target in LINK.findall(markdown):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        page = (base / path).resolve() if path else None
        if page is not None and not page.exists():
            problems.append(f"{target}: no such file")
        elif anchor and page is not None and page.suffix == ".md" and anchor not in heading_anchors(page.read_text()):
            problems.append(f"{target}: no heading with that anchor")
    return problems


def foreign_citations(root: Path) -> list[str]:
    found = []
    for path in sorted([*root.glob("src/thinker/**/*.py"), *root.glob("conf/**/*.yaml")]):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if FOREIGN_CITATION.search(line):
                found.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    return found


def test_readme_links_land_on_existing_pages_and_headings():
    assert broken_links((ROOT / "README.md").read_text(), ROOT) == []


def test_code_and_config_cite_the_docs_not_documents_the_repository_lacks():
    assert foreign_citations(ROOT) == []


def test_the_checks_above_can_fail(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# A page\n\n## The `thinker` command (for CI)\n\n```\n# not a heading\n```\n")
    good = "[p](docs/page.md) [h](docs/page.md#the-thinker-command-for-ci) [w](https://example.org/x)"
    assert broken_links(good, tmp_path) == []
    assert broken_links("[p](docs/gone.md)", tmp_path) == ["docs/gone.md: no such file"]
    assert broken_links("[h](docs/page.md#not-a-heading)", tmp_path) == [
        "docs/page.md#not-a-heading: no heading with that anchor"]
    (tmp_path / "src" / "thinker").mkdir(parents=True)
    (tmp_path / "conf").mkdir()
    (tmp_path / "src" / "thinker" / "m.py").write_text("x = 1  # see docs/decisions/0001-x.md\n")
    (tmp_path / "conf" / "c.yaml").write_text("a: 1  # the random seed 42\n")
    assert foreign_citations(tmp_path) == []
    (tmp_path / "conf" / "c.yaml").write_text("a: 1  # seed 004's default\n")
    (tmp_path / "src" / "thinker" / "m.py").write_text('"""Its own loop (ADR-001)."""\n')
    assert foreign_citations(tmp_path) == ["conf/c.yaml:1: a: 1  # seed 004's default",
                                           "src/thinker/m.py:1: \"\"\"Its own loop (ADR-001).\"\"\""]
