"""Thinker entry point: Hydra composes the config, thinker.pipeline runs it.

    python launch.py                                  # embedded default (tiny-qwen, QLoRA, CPU)
    python launch.py backend=tinker model=qwen-0.5b
    python launch.py -m method=lora,qlora optimizer.lr=1e-4,3e-4
"""

import hydra
from omegaconf import DictConfig

import thinker.config.schema  # noqa: F401  (registers the structured configs with Hydra)
from thinker.entry import guarded_main
from thinker.models.registry_options import register_registry_options
from thinker.pipeline import run

register_registry_options()  # model=<registry name> composes (models/registry.json, read without torch)


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    return run(cfg)


if __name__ == "__main__":
    guarded_main(main)
