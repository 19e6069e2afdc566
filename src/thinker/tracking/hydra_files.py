"""Hydra's own output files, secrets masked (docs/secrets.md).

Hydra saves the composed config, its own config and the overrides as given (`.hydra/config.yaml`,
`hydra.yaml`, `overrides.yaml`) in every job folder, and a sweep's `multirun.yaml` in the sweep folder, with
no hook to change what it writes. MaskSavedConfigs (a Hydra callback, conf/config.yaml `hydra.callbacks`)
rewrites them through secrets.mask_text as each job starts, before the task runs; files without a secret
are left as Hydra wrote them. The job's own config object is untouched: the real values still reach the
code that uses them, and the config fingerprint does not change.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from thinker.tracking.secrets import mask_file

log = logging.getLogger("thinker")

JOB_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")
SWEEP_FILE = "multirun.yaml"


def mask_saved_configs(folder: Path, names: tuple[str, ...] = JOB_FILES) -> list[Path]:
    """Mask the secrets in `folder`'s files named `names` that exist; the files that held any."""
    masked = []
    for name in names:
        path = folder / name
        try:
            if path.is_file() and mask_file(path):
                masked.append(path)
        except OSError as exc:  # an unwritable folder: say so, the run itself goes on
            log.warning("could not mask the secrets in %s: %s", path, exc)
    return masked


def _sweep_dir(config: Any) -> Path | None:
    from hydra.types import RunMode

    if OmegaConf.select(config, "hydra.mode", default=None) != RunMode.MULTIRUN:
        return None
    folder = OmegaConf.select(config, "hydra.sweep.dir", default=None)
    return Path(str(folder)) if folder else None


class MaskSavedConfigs(Callback):
    """Rewrite the config files Hydra just saved with their secrets masked."""

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        subdir = OmegaConf.select(config, "hydra.output_subdir", default=None)
        output_dir = OmegaConf.select(config, "hydra.runtime.output_dir", default=None)
        if subdir and output_dir:
            mask_saved_configs(Path(str(output_dir)) / str(subdir))
        sweep_dir = _sweep_dir(config)  # the sweeper saves multirun.yaml after on_multirun_start
        if sweep_dir is not None:
            mask_saved_configs(sweep_dir, (SWEEP_FILE,))

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = _sweep_dir(config)
        if sweep_dir is not None:  # a sweep whose jobs never started (its first job is masked above)
            mask_saved_configs(sweep_dir, (SWEEP_FILE,))
