"""`${thinker_unique_dir:outputs/<date>/<time>}`: the run folder, never shared by two launches.

Hydra names a run's folder after the second it starts, so two launches in the same second (a script starting
runs with `&`, a CI matrix) would write into one folder: one run record, one launch.log, weights overwritten.
The resolver creates the folder itself (mkdir is atomic) and takes `<time>-2`, `-3`, ... when another launch got
there first. It is cached per process, since Hydra resolves the run folder more than once.
"""

from __future__ import annotations

import functools
import os

RESOLVER = "thinker_unique_dir"


@functools.cache
def unique_dir(path: str) -> str:
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    candidate, number = path, 1
    while True:
        try:
            os.mkdir(candidate)
            return candidate
        except FileExistsError:
            number += 1
            candidate = f"{path}-{number}"


def register_resolver() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, unique_dir)
