"""Write a large prompt/completion JSONL (default 2 GB) for the bounded-memory checks of docs/data.md,
"Large files and hub datasets":

    python bench/big_jsonl.py /tmp/big.jsonl --gb 2
    /usr/bin/time -v thinker validate data=jsonl data.path=/tmp/big.jsonl      # Maximum resident set size

The records are bench/validate.py's (the shipped sample schema: a CLAIM[c1] line, typed metadata), so the
file validates against conf/data/sample.yaml and conf/data/jsonl.yaml alike. Delete the file afterwards.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from validate import make_record  # noqa: E402  (bench/ is not a package)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--gb", type=float, default=2.0, help="size in GB (10^9 bytes; default 2)")
    args = parser.parse_args()
    rng, target, written, records = random.Random(0), int(args.gb * 1e9), 0, 0
    with open(args.path, "w", encoding="utf-8") as f:
        while written < target:
            line = json.dumps(make_record(rng, records), ensure_ascii=False) + "\n"
            f.write(line)
            written += len(line.encode("utf-8"))
            records += 1
    print(f"{args.path}: {written / 1e9:.2f} GB, {records} records")


if __name__ == "__main__":
    main()
