"""Stage 1 of every run: the composed config is complete, in range, and consistent.

Runs before the validation gate and before any heavy import; the first problem becomes a ThinkerError
with the config stage's exit code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from thinker.config.ranges import PARAMETER_RANGES, RangeError, check_range
from thinker.config.rules import violations
from thinker.errors import ThinkerError


def missing_keys(cfg: DictConfig) -> list[str]:
    """Dotted keys still at `???`. Unlike OmegaConf.missing_keys, leaves are never resolved, so a check
    outside a Hydra run (tools, tests) does not trip over `${hydra:...}` interpolations."""
    found: list[str] = []

    def gather(node: Any, prefix: str) -> None:
        keys = range(len(node)) if isinstance(node, ListConfig) else node.keys()
        for key in keys:
            child = node._get_node(key)
            dotted = f"{prefix}{key}"
            if OmegaConf.is_missing(node, key):
                found.append(dotted)
            elif isinstance(child, DictConfig | ListConfig):
                gather(child, f"{dotted}.")

    gather(cfg, "")
    return sorted(found)


def range_errors(cfg: DictConfig) -> list[RangeError]:
    errors = []
    for key in PARAMETER_RANGES:
        value = OmegaConf.select(cfg, key, default=None)
        try:
            check_range(key, value)
        except RangeError as err:
            errors.append(err)
    return errors


def check_ranges(cfg: DictConfig) -> None:
    """The first value outside its range (thinker.config.ranges), as a ThinkerError."""
    ranged = range_errors(cfg)
    if ranged:
        err = ranged[0]
        raise ThinkerError(str(err), f"config key {err.key}", f"choose a value in {err.range.describe()}")


def check_complete(cfg: DictConfig) -> None:
    """No key left at `???` and every ranged value in range: what tools check before using a config."""
    missing = missing_keys(cfg)
    if missing:
        key = missing[0]
        raise ThinkerError(f"{key} is required but not set", f"config key {key}", f"pass {key}=<value> on the command line")
    check_ranges(cfg)


def check_config(cfg: DictConfig, env: Mapping[str, str] | None = None) -> None:
    env = os.environ if env is None else env
    check_complete(cfg)
    found = violations(cfg, env)
    if found:
        v = found[0]
        raise ThinkerError(v.what, v.where, v.fix)
    from thinker.backends import instantiate_backend

    instantiate_backend(cfg).check(cfg, env)  # its SDK installed, its code landed: known before the gate
