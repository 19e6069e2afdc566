"""hydra/launcher=ray: thinker's preset for hydra-ray-launcher composes without the plugin (which the lock cannot
install: it needs cloudpickle<3), and names the plugin's launcher with the keys the plugin takes. Launching
needs the plugin and a Ray cluster, neither of which is here: without the plugin a sweep stops with one line
saying what to install."""

from __future__ import annotations

import importlib.util
import sys

import pytest
from conftest import CONF, clean_env, launch

from thinker.launch.entry import format_job_failure

# hydra-ray-launcher 1.2.2 (hydra_plugins/hydra_ray_launcher/_config.py): RayLauncherConf(_target_, ray: RayConf),
# RayConf(init: ray.init's keyword arguments, remote: ray.remote's); read from its wheel
PLUGIN_TARGET = "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"


def compose_with_hydra(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    import thinker.config.schema  # noqa: F401  (registers the structured configs)

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def test_the_ray_preset_composes_and_names_the_plugins_launcher():
    launcher = compose_with_hydra(["hydra/launcher=ray"]).hydra.launcher
    assert launcher._target_ == PLUGIN_TARGET
    assert set(launcher) == {"_target_", "ray"} and set(launcher.ray) == {"init", "remote"}
    assert launcher.ray.init.address == "auto"
    # set to null so the plugin's object_store_memory default stays out of ray.init when it joins a cluster
    assert "object_store_memory" in launcher.ray.init and launcher.ray.init.object_store_memory is None
    assert dict(launcher.ray.remote) == {"num_gpus": 1, "num_cpus": 8}
    overridden = compose_with_hydra(["hydra/launcher=ray", "hydra.launcher.ray.remote.num_gpus=0",
                                     "hydra.launcher.ray.init.address=null"]).hydra.launcher.ray
    assert overridden.remote.num_gpus == 0 and overridden.init.address is None
    assert "ray" not in sys.modules  # composing never imports Ray


@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None,
                    reason="hydra-ray-launcher is not installed (it conflicts with the lock's cloudpickle)")
def test_the_preset_has_the_keys_of_the_installed_plugins_config():
    from dataclasses import fields

    from hydra_plugins.hydra_ray_launcher._config import RayConf, RayLauncherConf

    launcher = compose_with_hydra(["hydra/launcher=ray"]).hydra.launcher
    assert set(launcher) == {f.name for f in fields(RayLauncherConf)}
    assert set(launcher.ray) == {f.name for f in fields(RayConf)}
    assert launcher._target_ == RayLauncherConf._target_


def test_without_the_plugin_a_ray_sweep_says_what_to_install(tmp_path):
    if importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is not None:
        pytest.skip("hydra-ray-launcher is installed: a sweep would start Ray")
    out = launch(["-m", "hydra/launcher=ray", "seed=1,2", "logger=none"], cwd=tmp_path, env=clean_env(), timeout=120)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == format_job_failure(
        f"RuntimeError: Unknown plugin class : '{PLUGIN_TARGET}'", 1)
    assert "the Hydra plugin hydra-ray-launcher is not installed" in out.stderr.strip().splitlines()[-1]
