"""`thinker data ...`: prepare training data files, and preview them as the model sees them."""

from __future__ import annotations

import argparse


def _convert_scifact(args: argparse.Namespace) -> int:
    from thinker.data.scifact import convert_scifact

    count = convert_scifact(args.claims, args.corpus, args.out)
    print(f"[thinker] wrote {count} prompt/completion records to {args.out}")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _add_preview_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """The preview's own options; `defaults=False` leaves them None to tell given from not given."""
    parser.add_argument("-n", "--num", type=_positive, default=3 if defaults else None, metavar="N",
                        help="how many examples to show token by token (default 3)")
    parser.add_argument("--limit", type=_positive, default=None, metavar="N",
                        help="packing statistics over the first N examples only (default: the whole file)")
    parser.add_argument("--color", dest="color", action="store_const", const=True, default=None,
                        help="ANSI colours even when piped (default: only in a terminal)")
    parser.add_argument("--no-color", dest="color", action="store_const", const=False,
                        help="plain markers ([masked], {w=N}) even in a terminal")


def _preview(args: argparse.Namespace) -> int:
    from thinker.commands.data_preview import preview

    # options may come after the first override (`data=jsonl -n 5`): argparse hands those over unparsed
    late = argparse.ArgumentParser(prog="thinker data preview", add_help=False)
    _add_preview_options(late, defaults=False)
    options, overrides = late.parse_known_args(args.overrides)
    flags = [arg for arg in overrides if arg.startswith("-") or "=" not in arg]
    if flags:
        late.error(f"not an option or a key=value override: {' '.join(flags)}")
    for name in ("num", "limit", "color"):
        if getattr(options, name) is not None:
            setattr(args, name, getattr(options, name))
    return preview(overrides, n=args.num, limit=args.limit, color=args.color)


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="prepare and preview training data files")
    sub = data.add_subparsers(dest="data_command", required=True)
    convert = sub.add_parser("convert-scifact", help="SciFact release files -> prompt/completion JSONL")
    convert.add_argument("--claims", required=True, help="claims_*.jsonl (id, claim, evidence, cited_doc_ids)")
    convert.add_argument("--corpus", required=True, help="corpus.jsonl (doc_id, title, abstract)")
    convert.add_argument("--out", required=True, help="output JSONL (written atomically)")
    convert.set_defaults(func=_convert_scifact)

    preview = sub.add_parser(
        "preview", help="show the training data as the model sees it (masked prompt, loss weights, packing)",
        description="Compose the config as a run would (same overrides), tokenise the first examples with the "
                    "model's tokenizer exactly as training does, and show masked prompt tokens, completion "
                    "tokens with their loss weights and truncation at trainer.max_seq_length; then the packing "
                    "statistics of the dataset.",
        epilog="e.g. thinker data preview data=jsonl data.path=train.jsonl trainer.max_seq_length=256 -n 5")
    _add_preview_options(preview, defaults=True)
    preview.add_argument("overrides", nargs=argparse.REMAINDER, metavar="OVERRIDE",
                         help="Hydra overrides, as for `python launch.py` (data=..., model=..., trainer....)")
    preview.set_defaults(func=_preview)
    from thinker.commands.cli import help_when_bare

    help_when_bare(data, sub)  # no natural default: bare `thinker data` shows its commands
