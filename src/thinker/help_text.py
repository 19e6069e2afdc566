"""The config-group part of `python launch.py --help`, rendered from the option files at help time.

conf/config.yaml's hydra.help.template contains `${thinker_groups:}`. Hydra resolves the template when it
prints --help, which calls config_groups_text(): every user-facing group (one folder of a file config source:
conf/ and any hydra.searchpath folder; not schema/* and not hydra's own groups) with each option and the
first line of that option file's header comment. Registry models (ConfigStore options of the `model` group)
are listed as well. A new option file shows up without touching the help.

Standard library and omegaconf only: composing must not import anything heavy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

RESOLVER = "thinker_groups"
INTERNAL_GROUPS = ("schema", "hydra")  # top folders that are not user-facing groups


def option_description(path: Path) -> str | None:
    """The first line of the header comment at the top of an option file (`# @package` lines skipped)."""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("# @package") or not line:
            continue
        if line.startswith("#"):
            text = line.lstrip("#").strip()
            return text or None
        return None
    return None


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
    choices = choices or {}
    groups = file_groups(conf_dirs)
    # Hydra records choices from the end of the defaults list to its start: reversed, they follow config.yaml
    order = [g for g in reversed(choices) if g in groups] + sorted(g for g in groups if g not in choices)
    blocks = []
    for group in order:
        options = dict(groups[group])
        for name in _store_options(group):
            if name not in options:
                options[name] = ("a model from the registry (thinker models info " + name + ")"
                                 if group == "model" else None)
        chosen = choices.get(group)
        width = max(len(name) for name in options) + 2
        lines = [f"{group}="]
        for name, description in options.items():
            mark = "*" if name == chosen else " "
            lines.append(f"  {mark} {name.ljust(width)}{description or '(no description)'}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _resolve_groups(*, _root_: Any) -> str:
    # Hydra passes the resolved template through string.Template: a literal `$` must be written `$$`
    return config_groups_text(_conf_dirs(_root_), _choices(_root_)).replace("$", "$$")


def register_help_resolver() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, _resolve_groups, use_cache=False)
