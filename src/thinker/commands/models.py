"""`thinker models ...`: work with trained and imported models."""

from __future__ import annotations

import argparse


def _merge(args: argparse.Namespace) -> int:
    from thinker.models.merge import merge_adapter

    out = merge_adapter(args.run, args.out)
    print(f"[thinker] merged model written to {out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    models = subparsers.add_parser("models", help="work with trained and imported models")
    sub = models.add_subparsers(dest="models_command", required=True)
    merge = sub.add_parser("merge", help="merge a run's LoRA adapter into its base model")
    merge.add_argument("run", help="a run folder (outputs/...) or its weights/ folder")
    merge.add_argument("--out", required=True, help="folder for the merged model (must not exist)")
    merge.set_defaults(func=_merge)
    from thinker.commands.model_registry import add_registry_commands

    add_registry_commands(sub)
    from thinker.commands.cli import default_subcommand

    default_subcommand(models, sub, "list")  # bare `thinker models` lists them
