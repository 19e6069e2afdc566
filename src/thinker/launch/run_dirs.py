"""`${thinker_unique_dir:outputs/<date>/<time>}`: the run folder, never shared by two launches.

Hydra names a run's folder after the second it starts, so two launches in the same second (a script starting
runs with `&`, a CI matrix) would write into one folder: one run record, one launch.log, weights overwritten.
The resolver creates the folder itself (mkdir is atomic) and takes `<time>-2`, `-3`, ... when another launch got
there first. It is cached per process, since Hydra resolves the run folder more than once.

WritableRunFolder (a Hydra callback, conf/config.yaml) makes sure the run or sweep folder can be created and
written before Hydra creates it itself, which it reports as a traceback ("a bug or an environment problem"):
a folder that cannot be is one `[thinker] error:` line naming it, exit code 2 (config).
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from omegaconf.errors import InterpolationResolutionError

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


class WritableRunFolder(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_writable_folder(config.hydra.run, "dir", "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_writable_folder(config.hydra.sweep, "dir", "hydra.sweep.dir")


def check_writable_folder(node: DictConfig, key: str, full_key: str) -> None:
    """Create the folder `node[key]` names (resolving it may create it: thinker_unique_dir) and write a scratch
    file in it; if that fails, print one error line naming the folder and exit with the config stage's code."""
    folder: str | None = None
    try:
        folder = str(node[key])
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except InterpolationResolutionError as error:  # thinker_unique_dir could not create it
        cause = _os_error_behind(error)
        if cause is None:
            raise
        _refuse(cause, folder, full_key)
    except OSError as error:
        _refuse(error, folder, full_key)


def _os_error_behind(error: BaseException) -> OSError | None:
    """The OSError a resolver raised, which OmegaConf wraps (twice) without setting __cause__."""
    seen: BaseException | None = error
    while seen is not None and not isinstance(seen, OSError):
        seen = seen.__cause__ or seen.__context__
    return seen


def _refuse(error: OSError, folder: str | None, key: str) -> None:
    from thinker.console import release_stderr
    from thinker.errors import ThinkerError

    where = os.path.abspath(error.filename or folder or ".")
    refused = ThinkerError(f"the run folder {where} cannot be created or written ({error.strerror or error})",
                           f"config key {key}", f"set {key}=<a folder you can write to>, or launch from one")
    release_stderr()  # Hydra's own output is held back until the job starts (thinker.launch.entry, thinker.console)
    print(refused.line(), file=sys.stderr)
    raise SystemExit(int(refused.exit_code))
