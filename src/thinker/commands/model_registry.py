"""`thinker models import | list | info | rm | lineage`: the model registry from the command line."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict


def _import(args: argparse.Namespace) -> int:
    from thinker.models.importer import import_model

    entry = import_model(args.source, name=args.name, revision=args.revision, accept_license=args.accept_license)
    print(f"[thinker] imported {entry.model_id} as {entry.model_name} ({entry.architecture}) into "
          f"{entry.location}; train with: python launch.py model={entry.model_name}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from thinker.models.registry import Registry

    registry = Registry()
    entries = registry.entries()
    if not entries:
        print(f"[thinker] no models registered in {registry.path}")
        return 0
    rows = [("NAME", "ARCH", "SOURCE", "FINE_TUNED_FROM", "CREATED")] + [
        (e.model_name, e.architecture, e.source, e.fine_tuned_from or "-", e.created_at) for e in entries
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def _info(args: argparse.Namespace) -> int:
    from thinker.models.registry import Registry

    print(json.dumps(asdict(Registry().get(args.name)), indent=2))
    return 0


def _rm(args: argparse.Namespace) -> int:
    from thinker.models.registry import Registry

    entry = Registry().remove(args.name, force=args.force)
    print(f"[thinker] removed {entry.model_name}")
    return 0


def _lineage(args: argparse.Namespace) -> int:
    from thinker.models.registry import Registry

    chain = Registry().lineage(args.name)
    for depth, entry in enumerate(chain):
        run = f" (MLflow run {entry.mlflow_run_id})" if entry.mlflow_run_id else ""
        print(f"{'  ' * depth}{entry.model_name} [{entry.source}, {entry.architecture}]{run}")
    root_parent = chain[-1].fine_tuned_from
    if root_parent:  # a shipped option (conf/model/*.yaml) or a removed model
        print(f"{'  ' * len(chain)}{root_parent} [not in the registry]")
    return 0


def add_registry_commands(sub: argparse._SubParsersAction) -> None:
    imp = sub.add_parser("import", help="import a Hugging Face model (hub id, hub URL or local folder)")
    imp.add_argument("source", help="hub id (Qwen/Qwen2.5-0.5B-Instruct), hub URL or a save_pretrained folder")
    imp.add_argument("--name", help="registry name (default: the repository or folder name)")
    imp.add_argument("--revision", help="branch, tag or commit on the hub")
    imp.add_argument("--accept-license", action="store_true", help="acknowledge the model's license (scripts)")
    imp.set_defaults(func=_import)
    sub.add_parser("list", help="list registered models").set_defaults(func=_list)
    info = sub.add_parser("info", help="show one registry entry")
    info.add_argument("name")
    info.set_defaults(func=_info)
    rm = sub.add_parser("rm", help="remove a model from the registry (and its folder under models/)")
    rm.add_argument("name")
    rm.add_argument("--force", action="store_true", help="remove it even if other models were fine-tuned from it")
    rm.set_defaults(func=_rm)
    lineage = sub.add_parser("lineage", help="show a model and the models it was fine-tuned from")
    lineage.add_argument("name")
    lineage.set_defaults(func=_lineage)
