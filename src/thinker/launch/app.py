"""The Hydra app: one composition and one pipeline behind both `python launch.py` and `thinker run|...`.

Registry models become `model=` options before Hydra composes; the config folder is the project's conf/
(an absolute path, so the app composes the same wherever the command starts).
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from thinker.errors import ExitCode


def config_dir() -> str:
    from thinker.paths import project_root

    root = project_root()
    if root is None:
        print("[thinker] error: the config folder conf/ was not found, thinker installation, "
              "install the project with pip install -e . from its checkout", file=sys.stderr)
        raise SystemExit(int(ExitCode.CONFIG))
    return str(root / "conf")


def compose_config(overrides: list[str]) -> DictConfig:
    """The job config for `overrides` outside a Hydra run (tools: config show, data preview, chat), composed
    from the same folder and registry options as the app. Hydra's and OmegaConf's errors propagate."""
    from hydra import compose, initialize_config_dir

    import thinker.config.schema  # noqa: F401  (registers the structured configs with Hydra)
    from thinker.models.registry_options import register_registry_options

    register_registry_options()  # model=<registry name> composes
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3", job_name="launch"):
        return compose(config_name="config", overrides=list(overrides))


def task(cfg: DictConfig) -> float | None:
    from thinker.run.pipeline import run

    return run(cfg)


def launch(argv: list[str] | None = None) -> None:
    """Compose from `argv` (Hydra's command line: overrides, -m, --cfg, --config-dir ...) and run."""
    import hydra

    import thinker.config.schema  # noqa: F401  (registers the structured configs with Hydra)
    from thinker.launch.entry import guarded_main
    from thinker.launch.help_text import register_help_resolver
    from thinker.launch.run_dirs import register_resolver as register_run_dir_resolver
    from thinker.models.registry_options import register_registry_options
    from thinker.sweeps.search import register_resolvers as register_search_resolvers

    register_help_resolver()  # ${thinker_groups:} in hydra.help.template: --help lists every group and option
    register_search_resolvers()  # hydra.sweeper.storage / study_name of hparams_search=optuna (thinker.sweeps.search)
    register_run_dir_resolver()  # hydra.run.dir: two launches in the same second get two folders

    register_registry_options()  # model=<registry name> composes (models/registry.json, read without torch)
    main = hydra.main(config_path=config_dir(), config_name="config", version_base="1.3")(task)
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]  # Hydra reads its command line from sys.argv
    from thinker.tracking.secrets import masked_stdout, register_override_secrets

    register_override_secrets(sys.argv[1:])  # masked also where an error or --package prints a value bare
    if not prints_config(sys.argv[1:]):
        guarded_main(main, argv)
        return

    with masked_stdout():  # --cfg / --info print the config, overrides included, straight to stdout
        guarded_main(main, argv)


# Hydra's flags that print the composed config and exit (-cd, -cp, -cn start like -c but name config folders)
_CONFIG_PRINTING_FLAGS = ("--cfg", "-c", "--info", "-i", "-cjob", "-chydra", "-call")


def prints_config(args: list[str]) -> bool:
    return any(a in _CONFIG_PRINTING_FLAGS or a.startswith(("--cfg=", "--info=")) for a in args)
