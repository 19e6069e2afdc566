"""The config-group part of `python launch.py --help`, rendered from the option files at help time.

conf/config.yaml's hydra.help.template contains `${thinker_groups:}`. Hydra resolves the template when it
prints --help, which calls config_groups_text(): every user-facing group (one folder of a file config source:
conf/ and any hydra.searchpath folder; not schema/* and not hydra's own groups) with each option and the
first sentence of that option file's header comment. Registry models (ConfigStore options of the `model`
group) are listed as well, except auto-named fine-tunes, which are counted (`thinker models list` shows them).
A new option file shows up without touching the help.

Standard library and omegaconf only: composing must not import anything heavy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

RESOLVER = "thinker_groups"
# top folders that are not user-facing groups (conf/prices: the price tables thinker.estimate reads)
INTERNAL_GROUPS = ("schema", "hydra", "prices")


DESCRIPTION_WIDTH = 110  # one --help line: the first sentence, then whole sentences while they fit
_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "vs.", "cf.")


def header_paragraph(path: Path) -> str:
    """The first paragraph of the header comment at the top of an option file, joined into one line: its
    comment lines up to a blank `#` line, an indented example (`#   python launch.py ...`) or the YAML."""
    parts: list[str] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not parts and (not line or line.startswith("# @package")):
            continue
        body = line[1:] if line.startswith("#") else None
        if body is None or not body.strip() or (parts and body.startswith("   ")):
            break
        parts.append(body.strip())
    return " ".join(parts)


def sentences(text: str) -> list[str]:
    """`text` split after each `.`, `!` or `?` that ends a sentence: followed by a space, outside brackets,
    not an abbreviation (e.g.). A trailing piece without one is the last element."""
    found, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth = max(0, depth - 1)
        elif (char in ".!?" and depth == 0 and (i + 1 == len(text) or text[i + 1] == " ")
              and not text[:i + 1].endswith(_ABBREVIATIONS)):
            found.append(text[start:i + 1].strip())
            start = i + 1
    if text[start:].strip():
        found.append(text[start:].strip())
    return found


def option_description(path: Path) -> str | None:
    """The option's one-line description: the first sentence of its header comment, and the sentences after
    it while the line stays within DESCRIPTION_WIDTH (a lead-in to an example, ending in `:`, is left out).
    A first sentence longer than that is shortened at a word, with `…`."""
    found = sentences(header_paragraph(path))
    if not found:
        return None
    chosen = [found[0]]
    for sentence in found[1:]:
        if sentence.endswith(":") or len(" ".join([*chosen, sentence])) > DESCRIPTION_WIDTH:
            break
        chosen.append(sentence)
    text = " ".join(chosen)
    if len(text) > DESCRIPTION_WIDTH:
        text = text[:DESCRIPTION_WIDTH - 1].rsplit(" ", 1)[0].rstrip(",;:") + "…"
    return text


def _is_internal(group: str) -> bool:
    return group.split("/", 1)[0] in INTERNAL_GROUPS


def file_groups(conf_dirs: list[Path]) -> dict[str, dict[str, str | None]]:
    """{group: {option: description}} from the option files of `conf_dirs` (the first folder wins)."""
    groups: dict[str, dict[str, str | None]] = {}
    for conf in conf_dirs:
        if not conf.is_dir():
            continue
        for path in sorted(conf.rglob("*.yaml")):
            group = path.parent.relative_to(conf).as_posix()
            if group == "." or _is_internal(group):
                continue  # the primary config itself, or internal groups
            groups.setdefault(group, {}).setdefault(path.stem, option_description(path))
    return groups


def _store_options(group: str) -> list[str]:
    """Options of `group` held in Hydra's ConfigStore (registry models for `model`)."""
    try:
        from hydra.core.config_store import ConfigStore
    except ImportError:  # pragma: no cover - hydra is a dependency
        return []
    node: Any = ConfigStore.instance().repo
    for part in group.split("/"):
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        return []
    return sorted(name[: -len(".yaml")] for name, value in node.items()
                  if name.endswith(".yaml") and not isinstance(value, dict))


def _conf_dirs(root: Any) -> list[Path]:
    """The file config sources of this composition (conf/ and hydra.searchpath folders)."""
    dirs: list[Path] = []
    try:
        sources = root.hydra.runtime.config_sources
    except Exception:  # noqa: BLE001 - outside a Hydra composition: fall back to conf/
        sources = []
    for source in sources or []:
        if source.get("schema") == "file" and source.get("path"):
            dirs.append(Path(source["path"]))
    if not dirs:
        from thinker.paths import project_root

        project = project_root()
        if project is not None:
            dirs.append(project / "conf")
    return dirs


def _choices(root: Any) -> dict[str, Any]:
    try:
        return dict(root.hydra.runtime.choices)
    except Exception:  # noqa: BLE001
        return {}


def config_groups_text(conf_dirs: list[Path], choices: dict[str, Any] | None = None) -> str:
    """One block per group: `group` then `  option   description` lines, `*` marking the chosen option."""
    from thinker.models.registry_options import listed_options

    choices = choices or {}
    groups = file_groups(conf_dirs)
    # Hydra records choices from the end of the defaults list to its start: reversed, they follow config.yaml
    order = [g for g in reversed(choices) if g in groups] + sorted(g for g in groups if g not in choices)
    blocks = []
    for group in order:
        options = dict(groups[group])
        stored, hidden = listed_options([name for name in _store_options(group) if name not in options])
        for name in stored:
            options[name] = ("a model from the registry (thinker models info " + name + ")"
                             if group == "model" else None)
        chosen = choices.get(group)
        width = max(len(name) for name in options) + 2
        lines = [f"{group}="]
        for name, description in options.items():
            mark = "*" if name == chosen else " "
            lines.append(f"  {mark} {name.ljust(width)}{description or '(no description)'}")
        if hidden:
            lines.append(f"    (and {hidden} auto-named fine-tunes: thinker models list)")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _resolve_groups(*, _root_: Any) -> str:
    # Hydra passes the resolved template through string.Template: a literal `$` must be written `$$`
    return config_groups_text(_conf_dirs(_root_), _choices(_root_)).replace("$", "$$")


def register_help_resolver() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, _resolve_groups, use_cache=False)
