"""Offer every registry entry as an option of the `model` config group, so `model=<registry name>` composes.

launch.py calls register_registry_options() before @hydra.main runs. It reads registry.json as plain JSON
(no torch) and stores one ModelConfig node per entry in Hydra's ConfigStore under group "model". Architecture
parameters stay in the model's own config.json (seed 002, decision 6); the node only says where it is.
"""

from __future__ import annotations

import logging
import sys

from thinker.errors import ThinkerError
from thinker.models.registry import Registry, RegistryEntry, shipped_model_options

log = logging.getLogger("thinker")

PRETRAINED_LR = 2e-4
_warned: set[str] = set()


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
    for entry in entries:
        if entry.model_name in shipped:  # only a hand-edited registry gets here: import refuses such names
            log.warning("registry model %s is shadowed by conf/model/%s.yaml; skipped", *[entry.model_name] * 2)
            continue
        store.store(group="model", name=entry.model_name, node=model_config_for(entry))
        names.append(entry.model_name)
    return names
