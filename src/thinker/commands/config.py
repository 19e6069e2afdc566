"""`thinker config show [overrides...]`: the fully resolved config, as a run with those overrides gets it.

Composed with Hydra's compose API from the project's conf/ (registry models included), every interpolation
resolved (optimizer.lr: ${model.recommended_lr} prints the number). Keys that only exist inside a Hydra run
(output.dir: ${hydra:runtime.output_dir}, and keys built from it) print as null. Nothing heavy is imported.
"""

from __future__ import annotations

import argparse
import enum
import sys
from typing import Any

from thinker.errors import ExitCode
from thinker.launch.app import compose_config

HYDRA_RUNTIME_MISSING = "HydraConfig was not set"


def _resolved(cfg: Any, node: Any, path: str) -> Any:
    """`node` (at `path` in `cfg`) as plain data, resolved; values that need a Hydra run become None."""
    from omegaconf import DictConfig, ListConfig, OmegaConf
    from omegaconf.errors import InterpolationResolutionError

    if isinstance(node, DictConfig):
        keys = list(node.keys())
        return {str(k): _resolved(cfg, node._get_node(k), f"{path}.{k}" if path else str(k)) for k in keys}
    if isinstance(node, ListConfig):
        return [_resolved(cfg, node._get_node(i), f"{path}[{i}]") for i in range(len(node))]
    try:
        value = OmegaConf.select(cfg, path, throw_on_resolution_failure=True, throw_on_missing=False)
    except InterpolationResolutionError as err:
        if HYDRA_RUNTIME_MISSING in str(err):
            return None
        raise
    if isinstance(value, (DictConfig, ListConfig)):  # an interpolation to a whole node
        return OmegaConf.to_container(value, resolve=True, enum_to_str=True)
    if isinstance(value, enum.Enum):
        return value.name
    return value


def show(overrides: list[str]) -> int:
    """Print the resolved config as YAML, secrets masked; a bad override is one `[thinker] error:` line and
    exit code 2."""
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from thinker.config.check import check_ranges
    from thinker.errors import ThinkerError
    from thinker.launch.entry import format_hydra_error
    from thinker.tracking.secrets import mask, mask_text, register_override_secrets

    register_override_secrets(overrides)  # an error may quote a credential override's value bare
    try:
        cfg = compose_config(overrides)
        data = _resolved(cfg, cfg, "")
    except (HydraException, OmegaConfBaseException) as err:
        text = str(err) if err.__cause__ is None else f"{err}\n{err.__cause__}"  # Hydra wraps OmegaConf's error
        print(mask_text(format_hydra_error(text)), file=sys.stderr)
        return int(ExitCode.CONFIG)
    try:
        check_ranges(cfg)  # the same typed ranges a run checks first (optimizer.lr in (0, 1], ...)
    except ThinkerError as err:
        print(mask_text(err.line()), file=sys.stderr)
        return int(ExitCode.CONFIG)
    print(OmegaConf.to_yaml(OmegaConf.create(mask(data))), end="")  # credentials as *** (docs/secrets.md)
    return 0


def _show(args: argparse.Namespace) -> int:
    return show(args.overrides)


def register(subparsers: argparse._SubParsersAction) -> None:
    config = subparsers.add_parser("config", help="look at the composed config")
    sub = config.add_subparsers(dest="config_command", required=True)
    show_parser = sub.add_parser(
        "show", help="print the fully resolved config for the given overrides (like launch.py --cfg job --resolve)",
        description="Print the config a run with these overrides would get, every interpolation resolved "
                    "(optimizer.lr shows the model's recommended_lr unless overridden). Keys that exist only "
                    "inside a Hydra run, such as output.dir, print as null.")
    show_parser.add_argument("overrides", nargs="*", metavar="OVERRIDE",
                             help="Hydra overrides, as for python launch.py (group=option, key=value)")
    show_parser.set_defaults(func=_show)
    from thinker.commands.cli import default_subcommand

    default_subcommand(config, sub, "show")  # bare `thinker config` shows the default config
