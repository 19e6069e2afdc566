"""A stable hash of the resolved config: same experiment, same fingerprint.

Key order does not matter (canonical JSON with sorted keys) and neither do settings that say where
outputs go or how the run is driven rather than what it computes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from omegaconf import DictConfig, OmegaConf

# Keys that do not change what an experiment computes: output locations and run-control switches.
IGNORED_KEYS = (
    "output.dir",
    "evaluation.output_path",
    "stage",
    "debug",
    "resume",
    "validation.max_errors_shown",
    "logger.tracking_uri",
    "logger.run_name",
)


def resolved_container(cfg: DictConfig, drop: tuple[str, ...] = IGNORED_KEYS) -> dict[str, Any]:
    """The config as plain JSON-able data, resolved, with the `drop` keys removed before resolving.

    Dropping first matters: output.dir interpolates Hydra's runtime, which is absent in tests and tools.
    """
    plain = OmegaConf.to_container(cfg, resolve=False)
    for dotted in drop:
        *parents, leaf = dotted.split(".")
        node = plain
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    copy = OmegaConf.create(plain)
    return OmegaConf.to_container(copy, resolve=True, enum_to_str=True)  # type: ignore[return-value]


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def config_fingerprint(cfg: DictConfig) -> str:
    return hashlib.sha256(canonical_json(resolved_container(cfg)).encode()).hexdigest()
