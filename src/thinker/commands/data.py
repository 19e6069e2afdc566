"""`thinker data ...`: prepare training data files."""

from __future__ import annotations

import argparse


def _convert_scifact(args: argparse.Namespace) -> int:
    from thinker.data.scifact import convert_scifact

    count = convert_scifact(args.claims, args.corpus, args.out)
    print(f"[thinker] wrote {count} prompt/completion records to {args.out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="prepare training data files")
    sub = data.add_subparsers(dest="data_command", required=True)
    convert = sub.add_parser("convert-scifact", help="SciFact release files -> prompt/completion JSONL")
    convert.add_argument("--claims", required=True, help="claims_*.jsonl (id, claim, evidence, cited_doc_ids)")
    convert.add_argument("--corpus", required=True, help="corpus.jsonl (doc_id, title, abstract)")
    convert.add_argument("--out", required=True, help="output JSONL (written atomically)")
    convert.set_defaults(func=_convert_scifact)
