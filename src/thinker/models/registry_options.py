"""Offer every registry entry as an option of the `model` config group, so `model=<registry name>` composes.

launch.py calls register_registry_options() before @hydra.main runs. It reads registry.json as plain JSON
(no torch) and stores one ModelConfig node per entry in Hydra's ConfigStore under group "model". Architecture
parameters stay in the model's own config.json (docs/decisions/0008-local-model-registry.md); the node only says where it is.

Auto-named fine-tunes (`<base>-finetuned-<timestamp>`, registry.is_named) compose like any other entry, but
listings of options (`--help`, a composition error's "available") leave them out: every run of 20+ steps adds
one, and `thinker models list` is where they are shown (docs/models.md).
"""

from __future__ import annotations

import logging
import sys

from thinker.errors import ThinkerError
from thinker.models.registry import Registry, RegistryEntry, is_named, shipped_model_options

log = logging.getLogger("thinker")

PRETRAINED_LR = 2e-4
_warned: set[str] = set()
_auto_named: set[str] = set()  # the auto-named options stored by the last register_registry_options()


def auto_named_options() -> set[str]:
    """The stored `model` options that are auto-named fine-tunes: left out of option listings."""
    return set(_auto_named)


def listed_options(options: list[str]) -> tuple[list[str], int]:
    """`options` without the auto-named fine-tunes, and how many were left out."""
    hidden = auto_named_options()
    shown = [name for name in options if name not in hidden]
    return shown, len(options) - len(shown)


def model_config_for(entry: RegistryEntry):
    from thinker.config.schema import ModelConfig

    return ModelConfig(
        name=entry.model_name,
        family=entry.architecture,
        source=entry.location,  # a remote URI only the backend that made it can load
        revision=None,  # the folder is already the chosen revision
        from_scratch=False,
        supports_4bit=bool(entry.supports_4bit),
        recommended_lr=float(entry.recommended_lr or PRETRAINED_LR),
        tinker_name=None,
        params=entry.params,
    )


def register_registry_options(registry: Registry | None = None) -> list[str]:
    """Store the registry's entries as `model` options; returns their names.

    A corrupt registry must not stop runs that never use it: warn once and offer no registry options
    (`thinker models list` reports the same problem as an error)."""
    from hydra.core.config_store import ConfigStore

    registry = registry or Registry()
    try:
        entries = registry.entries()
    except ThinkerError as error:
        if str(registry.path) not in _warned:
            _warned.add(str(registry.path))
            # printed, not logged: this runs before logging is configured
            print(f"[thinker] warning: {error.what}; registry models are not offered as model=... options",
                  file=sys.stderr)
        return []
    shipped = shipped_model_options()
    store = ConfigStore.instance()
    names = []
    _auto_named.clear()
    for entry in entries:
        if entry.model_name in shipped:  # only a hand-edited registry gets here: import refuses such names
            log.warning("registry model %s is shadowed by conf/model/%s.yaml; skipped", *[entry.model_name] * 2)
            continue
        store.store(group="model", name=entry.model_name, node=model_config_for(entry))
        names.append(entry.model_name)
        if not is_named(entry):
            _auto_named.add(entry.model_name)
    return names
