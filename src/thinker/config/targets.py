"""Objects built from a config node's `_target_` (Hydra's instantiate, `_partial_`), finished at build time with
what only the run knows: the optimizer's parameters, the logger's run folder.

An option's node also holds settings thinker reads itself (an optimizer's schedule, the option's name): the
target is given only the keys its signature accepts, so one schema serves torch's optimizers, bitsandbytes',
and one of your own (docs/configuration.md).
"""

from __future__ import annotations

import inspect
from collections.abc import Collection
from typing import Any


def accepted_keywords(target: Any) -> set[str] | None:
    """The keyword arguments `target` takes; None when it takes any (**kwargs)."""
    try:
        parameters = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: give it everything
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def partial_from(node: Any, leave_out: Collection[str] = ()) -> Any:
    """`instantiate(node)` as a partial: `node._target_` with the node's keys it accepts (`leave_out` and Hydra's
    own `_..._` keys excepted); call it with the build-time arguments. Imports the target's module."""
    from hydra.utils import get_object, instantiate
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(node, resolve=True, enum_to_str=True) if OmegaConf.is_config(node) else dict(node)
    path = str(data["_target_"])
    accepted = accepted_keywords(get_object(path))
    kwargs = {key: value for key, value in data.items()
              if not key.startswith("_") and key not in leave_out and (accepted is None or key in accepted)}
    return instantiate({"_target_": path, "_partial_": True, **kwargs})


def missing_package(path: str) -> str | None:
    """The top-level package of a `_target_` path when it is not installed; found without importing it (the
    config check stays light)."""
    import importlib.util

    package = path.split(".", 1)[0]
    try:
        found = bool(package) and importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        found = False
    return None if found else (package or path)
