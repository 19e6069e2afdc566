"""Write data/preference/claims_pairs.jsonl: preference pairs derived from the claim-extraction sample.

Each pair takes one record of data/sample/claims.jsonl (the first PAIRS of them, in file order): its prompt, its
correct completion as `chosen`, and a corrupted completion as `rejected`, made by one of two rules, chosen
deterministically (no randomness, so running the script again rewrites byte-identical files):

    wrong_claim       the CLAIM[c1] line names the next record's hypothesis instead of this one's
                      (every record without evidence, and every other record with evidence)
    dropped_evidence  the evidence CLAIM lines and RELATION lines are dropped, only CLAIM[c1] is left
                      (the other records with evidence)

    python scripts/make_preference_sample.py            # rewrites data/preference/claims_pairs.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "data" / "sample" / "claims.jsonl"
TARGET = ROOT / "data" / "preference" / "claims_pairs.jsonl"
PAIRS = 120
C1_LINE_PREFIX = "CLAIM[c1]:"  # thinker.data.claim_format's; repeated so the script runs without the package


def c1_line(completion: str) -> str:
    return next(line for line in completion.splitlines() if line.startswith(C1_LINE_PREFIX))


def wrong_claim(completion: str, other: str) -> str:
    """The completion with its CLAIM[c1] line replaced by `other`'s."""
    return completion.replace(c1_line(completion), c1_line(other), 1)


def dropped_evidence(completion: str) -> str:
    return c1_line(completion)


def pairs(records: list[dict]) -> list[dict]:
    out = []
    for index, record in enumerate(records):
        chosen = record["completion"]
        has_evidence = chosen.strip() != c1_line(chosen)
        if has_evidence and index % 2 == 1:
            rule, rejected = "dropped_evidence", dropped_evidence(chosen)
        else:
            # the next record whose claim differs (hypotheses are unique in the sample, so the first one does)
            others = records[index + 1:] + records[:index]
            other = next(r["completion"] for r in others if c1_line(r["completion"]) != c1_line(chosen))
            rule, rejected = "wrong_claim", wrong_claim(chosen, other)
        out.append({"prompt": record["prompt"], "chosen": chosen, "rejected": rejected,
                    "metadata": {"claim_id": record["metadata"]["claim_id"], "corruption": rule}})
    return out


def write(source: Path, target: Path, count: int = PAIRS) -> int:
    with source.open(encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()][:count]
    rows = pairs(records)
    target.parent.mkdir(parents=True, exist_ok=True)
    # explicit encoding and newline: the bytes must not depend on the platform
    with target.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SOURCE, help="claim-extraction prompt/completion JSONL")
    parser.add_argument("--out", type=Path, default=TARGET, help="the preference JSONL to write")
    args = parser.parse_args(argv)
    print(f"{args.out}: {write(args.source, args.out)} pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
