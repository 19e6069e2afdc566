"""Shared fixtures: compose the real config tree with Hydra's compose API, run launch.py as users do."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
GROUPS = ["model", "backend", "provider", "data", "method", "optimizer", "trainer", "logger", "experiment",
          "hparams_search"]


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose(overrides: list[str] | None = None):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import thinker.config.schema  # noqa: F401  (registers the structured configs)

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides or []))


@pytest.fixture(scope="module")
def private_models_dir(tmp_path_factory):
    """THINKER_MODELS_DIR pointed at a fresh folder for one test module (the builtin model builds there)."""
    path = tmp_path_factory.mktemp("models")
    old = os.environ.get("THINKER_MODELS_DIR")
    os.environ["THINKER_MODELS_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("THINKER_MODELS_DIR", None)
    else:
        os.environ["THINKER_MODELS_DIR"] = old


@pytest.fixture
def composed():
    return compose


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any credential and without MLFLOW_TRACKING_URI (a launch tracks into its working
    directory's mlflow.db, which the tests read), plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.endswith(("_API_KEY", "_TOKEN")) and k != "MLFLOW_TRACKING_URI"}
    env.update(extra)
    return env


def launch(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 600):
    """Run launch.py from the project in `cwd` (a temp dir keeps outputs/ and mlflow.db out of the repo)."""
    return subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), *args],
        cwd=cwd, env=env or clean_env(), capture_output=True, text=True, timeout=timeout,
    )


def printed_command(output: str) -> list[str]:
    """The words of the `continue with: <command>` an interrupted or failed run prints."""
    line = next(line for line in output.splitlines() if "continue with: " in line)
    return shlex.split(line.split("continue with: ", 1)[1])
