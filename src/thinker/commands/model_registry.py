"""`thinker models import | list | info | rm | prune | lineage`: the model registry from the command line."""

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


def table(rows: list[tuple[str, ...]], rule: bool = False) -> str:
    """Rows as aligned columns (two spaces apart), the first row the header; `rule`: dashes under it."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    if rule:
        lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _list(args: argparse.Namespace) -> int:
    from thinker.models.registry import Registry, age_of, format_age, format_params, shipped_model_details

    registry = Registry()
    entries = registry.entries()  # corrupt -> the error, before anything is printed
    print("shipped options (conf/model/*.yaml):")
    print(table([("NAME", "SOURCE", "SIZE", "ARCH")] + [
        (d["name"], d["source"], format_params(d["params"]), d["family"]) for d in shipped_model_details()
    ]))
    print()
    if not entries:
        print(f"[thinker] no models registered in {registry.path}")
        return 0
    print(f"registry ({registry.path}):")
    rows = [("NAME", "SOURCE", "SIZE", "BASE", "METHOD", "VAL_LOSS", "AGE")]
    for e in entries:
        source = e.model_id if e.source == "huggingface" else e.source
        val_loss = e.extra.get("val_loss")
        rows.append((e.model_name, source, format_params(e.params), e.fine_tuned_from or "-",
                     str(e.extra.get("method") or "-"), f"{float(val_loss):.4f}" if val_loss is not None else "-",
                     format_age(age_of(e))))
    print(table(rows))
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


def _prune(args: argparse.Namespace) -> int:
    from thinker.models.registry import Registry, age_of, format_age, parse_duration

    registry = Registry()
    gone = registry.prune(parse_duration(args.older_than), dry_run=args.dry_run)
    if not gone:
        print(f"[thinker] nothing to prune: no unnamed fine-tune older than {args.older_than} that nothing was "
              f"fine-tuned from in {registry.path}")
        return 0
    verb = "would forget" if args.dry_run else "forgot"
    print(f"[thinker] {verb} {len(gone)} fine-tune(s) older than {args.older_than} "
          f"(the registry only forgets them: their weights stay in the run folders):")
    print(table([("NAME", "AGE", "WEIGHTS")] + [(e.model_name, format_age(age_of(e)), e.location or "-")
                                                 for e in gone]))
    if args.dry_run:
        print("[thinker] dry run: nothing was removed")
    return 0


def _duration(text: str) -> str:
    """argparse check of --older-than (7d, 12h, 30m); the text itself is kept for the messages."""
    from thinker.models.registry import parse_duration

    try:
        parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text.strip()


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
    sub.add_parser("list", help="list the shipped model options and the registered models").set_defaults(func=_list)
    info = sub.add_parser("info", help="show one registry entry")
    info.add_argument("name")
    info.set_defaults(func=_info)
    rm = sub.add_parser("rm", help="remove a model from the registry (and its folder under models/)")
    rm.add_argument("name")
    rm.add_argument("--force", action="store_true", help="remove it even if other models were fine-tuned from it")
    rm.set_defaults(func=_rm)
    prune = sub.add_parser("prune", help="forget old auto-named fine-tunes nothing was fine-tuned from "
                                         "(their weights stay in the run folders)")
    prune.add_argument("--older-than", required=True, type=_duration, metavar="AGE",
                       help="only fine-tunes registered longer ago than this: 7d, 12h, 30m")
    prune.add_argument("--dry-run", action="store_true", help="list what would be forgotten, change nothing")
    prune.set_defaults(func=_prune)
    lineage = sub.add_parser("lineage", help="show a model and the models it was fine-tuned from")
    lineage.add_argument("name")
    lineage.set_defaults(func=_lineage)
