"""The `thinker` console command: the pipeline's stages for CI, and tools around runs.

    thinker validate | train | eval | run [overrides...] [--backend NAME] [--skip-validation] [-m]
    thinker models merge RUN_DIR --out DIR     # LoRA adapter + base -> standalone HF model
    thinker models import Qwen/Qwen2.5-0.5B-Instruct --accept-license   # hub id, URL or folder -> registry
    thinker models [list [--all]] | info NAME | rm NAME [--force] | lineage NAME | prune --keep N [--dry-run]
    thinker data convert-scifact --claims FILE --corpus FILE --out FILE   # SciFact -> prompt/completion
    thinker tinker-serve [--port 8000] [--models tiny-qwen,...]   # a Tinker-compatible server on this machine
    thinker providers [list] | capabilities NAME  # hosted fine-tuning providers and what each supports
    thinker jobs [list] | status JOB | cancel JOB # hosted jobs started from this project (bare: the list)
    thinker estimate [overrides...] [-m] [--json]  # tokens, time and cost before a run (or a sweep)
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

from thinker.errors import ThinkerError

# one module per noun under thinker.commands, each with register(subparsers)
COMMAND_MODULES = ["pipeline", "config", "estimate", "use", "models", "data", "tinker_serve", "providers", "jobs"]


def default_subcommand(group: argparse.ArgumentParser, sub: argparse._SubParsersAction, name: str) -> None:
    """Bare `thinker <group>` runs `thinker <group> <name>` with that subcommand's defaults (`thinker providers`
    lists the providers instead of saying an argument is required). Call after `name` is fully set up."""
    sub.required = False
    group.set_defaults(**vars(sub.choices[name].parse_args([])))


def help_when_bare(group: argparse.ArgumentParser, sub: argparse._SubParsersAction) -> None:
    """Bare `thinker <group>` with no natural default prints the group's commands (exit 0)."""
    sub.required = False
    group.set_defaults(func=lambda args: group.print_help() or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="thinker", description="Thinker: validate, train and evaluate LLM fine-tuning experiments.",
        epilog="`thinker <command> --help` shows a command's options. `python launch.py` is the same as "
               "`thinker run`.")
    parser.add_argument("--verbose", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"thinker.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    from thinker.commands.pipeline import STAGES, run_stage

    if argv and argv[0] in STAGES:  # Hydra parses these arguments; argparse only takes thinker's own options
        return run_stage(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[thinker] %(message)s")
    from thinker.tracking.secrets import install_log_masking

    install_log_masking()  # `models import` handles HF_TOKEN: no log line may carry it
    try:
        return args.func(args)
    except ThinkerError as err:
        if args.verbose:
            raise
        from thinker.tracking.secrets import mask_text

        print(mask_text(err.line()), file=sys.stderr)
        return int(err.exit_code)
    except Exception as exc:  # a full disk is the environment's: one line, like a run's (thinker.errors.disk_full)
        from thinker.errors.disk_full import disk_full_error
        from thinker.models.paths import models_dir
        from thinker.tracking.secrets import mask_text

        full = disk_full_error(exc, "record", [Path.cwd(), models_dir()],
                               what=f"no space left on device (thinker {args.command})")
        if full is None or args.verbose:
            raise
        print(mask_text(full.line()), file=sys.stderr)
        return int(full.exit_code)


if __name__ == "__main__":
    sys.exit(main())
