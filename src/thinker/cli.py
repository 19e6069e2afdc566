"""The `thinker` console command: tools around runs (training itself is `python launch.py`).

    thinker models merge RUN_DIR --out DIR     # LoRA adapter + base -> standalone HF model
"""

from __future__ import annotations

import argparse
import logging
import sys

from thinker.errors import ThinkerError


def _merge(args: argparse.Namespace) -> int:
    from thinker.models.merge import merge_adapter

    out = merge_adapter(args.run, args.out)
    print(f"[thinker] merged model written to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="thinker", description="Thinker tools. Train with: python launch.py")
    parser.add_argument("--verbose", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True)
    models = sub.add_parser("models", help="work with trained and imported models")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    merge = models_sub.add_parser("merge", help="merge a run's LoRA adapter into its base model")
    merge.add_argument("run", help="a run folder (outputs/...) or its weights/ folder")
    merge.add_argument("--out", required=True, help="folder for the merged model (must not exist)")
    merge.set_defaults(func=_merge)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[thinker] %(message)s")
    try:
        return args.func(args)
    except ThinkerError as err:
        if args.verbose:
            raise
        print(err.line(), file=sys.stderr)
        return int(err.exit_code)


if __name__ == "__main__":
    sys.exit(main())
