"""`thinker models import | list | info | rm | prune | lineage`: the model registry from the command line."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from thinker.errors import ThinkerError


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


RECENT_AUTO_NAMED = 5  # auto-named fine-tunes `thinker models list` shows; --all shows every one


def listing_order(entries: list, show_all: bool) -> tuple[list, int]:
    """The entries `thinker models list` shows, and how many it leaves out: the named ones (imports,
    output.name fine-tunes) newest first, then the RECENT_AUTO_NAMED newest auto-named ones (every one with
    `show_all`). Every run of 20+ steps adds an auto-named entry: without this the list grows without bound."""
    from thinker.models.registry import is_auto_named, newest_first

    ordered = newest_first(entries)
    named = [e for e in ordered if not is_auto_named(e)]
    auto = [e for e in ordered if is_auto_named(e)]
    shown = auto if show_all else auto[:RECENT_AUTO_NAMED]
    return named + shown, len(auto) - len(shown)


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
    shown, left_out = listing_order(entries, getattr(args, "all", False))
    print(f"registry ({registry.path}):")
    rows = [("NAME", "SOURCE", "SIZE", "BASE", "METHOD", "VAL_LOSS", "AGE")]
    for e in shown:
        source = e.model_id if e.source == "huggingface" else e.source
        val_loss = e.extra.get("val_loss")
        rows.append((e.model_name, source, format_params(e.params), e.fine_tuned_from or "-",
                     str(e.extra.get("method") or "-"), f"{float(val_loss):.4f}" if val_loss is not None else "-",
                     format_age(age_of(e))))
    print(table(rows))
    if left_out:
        print(f"... and {left_out} older auto-named fine-tunes (thinker models list --all shows them; "
              f"thinker models prune --keep {RECENT_AUTO_NAMED} forgets them)")
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
    from thinker.models.registry import Registry, age_of, format_age, parse_duration, plan_prune

    if args.older_than is None and args.keep is None:
        raise ThinkerError("thinker models prune needs --keep N, --older-than AGE or both", "thinker models prune",
                           "e.g. thinker models prune --keep 5 (the 5 newest auto-named fine-tunes stay)")
    registry = Registry()
    older_than = parse_duration(args.older_than) if args.older_than is not None else None
    rule = " and ".join(([f"beyond the {args.keep} newest"] if args.keep is not None else [])
                        + ([f"older than {args.older_than}"] if args.older_than is not None else []))
    bases = plan_prune(registry.entries(), older_than=older_than, keep=args.keep).bases
    for base in bases:  # lineage stays whole: say why a model that matches stays
        children = ", ".join(e.model_name for e in registry.children(base.model_name))
        print(f"[thinker] kept {base.model_name}: {children} was fine-tuned from it "
              f"(lineage is kept; prune or remove those first to prune it)")
    gone = registry.prune(older_than, keep=args.keep, dry_run=args.dry_run)
    if not gone:
        print(f"[thinker] nothing to prune: no auto-named fine-tune {rule} that nothing was fine-tuned from "
              f"in {registry.path}")
        return 0
    verb = "would forget" if args.dry_run else "forgot"
    print(f"[thinker] {verb} {len(gone)} auto-named fine-tune(s) {rule} "
          f"(the registry only forgets them: their weights stay in the run folders):")
    print(table([("NAME", "AGE", "WEIGHTS")] + [(e.model_name, format_age(age_of(e)), e.location or "-")
                                                 for e in gone]))
    if args.dry_run:
        print("[thinker] dry run: nothing was removed")
    return 0


def _count(text: str) -> int:
    """argparse check of --keep: a whole number, 0 or more."""
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a count: use a whole number, 0 or more")
    return int(text)


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
    listing = sub.add_parser("list", help="list the shipped model options and the registered models (named ones, "
                                          f"then the {RECENT_AUTO_NAMED} newest auto-named fine-tunes)")
    listing.add_argument("--all", action="store_true", help="every registered model, auto-named ones included")
    listing.set_defaults(func=_list)
    info = sub.add_parser("info", help="show one registry entry")
    info.add_argument("name")
    info.set_defaults(func=_info)
    rm = sub.add_parser("rm", help="remove a model from the registry (and its folder under models/)")
    rm.add_argument("name")
    rm.add_argument("--force", action="store_true", help="remove it even if other models were fine-tuned from it")
    rm.set_defaults(func=_rm)
    prune = sub.add_parser("prune", help="forget auto-named fine-tunes nothing was fine-tuned from "
                                         "(their weights stay in the run folders)")
    prune.add_argument("--keep", type=_count, metavar="N",
                       help="keep the N newest auto-named fine-tunes, forget the older ones")
    prune.add_argument("--older-than", type=_duration, metavar="AGE",
                       help="only fine-tunes registered longer ago than this: 7d, 12h, 30m (with --keep: both)")
    prune.add_argument("--dry-run", action="store_true", help="list what would be forgotten, change nothing")
    prune.set_defaults(func=_prune)
    lineage = sub.add_parser("lineage", help="show a model and the models it was fine-tuned from")
    lineage.add_argument("name")
    lineage.set_defaults(func=_lineage)
