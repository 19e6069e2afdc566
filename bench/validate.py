"""Benchmark: validate_dataset against a bare json.loads loop over the same JSONL file.

    python bench/validate.py            # ~100 MB file
    python bench/validate.py --mb 20

Writes a file of prompt/completion/metadata records of varied lengths to a temporary folder (deleted
afterwards), times each reader best of 3, and prints MB/s. The validator checks the shipped schema of
conf/data/sample.yaml (the completion's CLAIM[c1] pattern, the typed metadata fields and their ranges), read
from that file so the bench follows it. The last line is the ratio, goal <= 2.0x.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from omegaconf import OmegaConf

from thinker.validation.dataset import FieldSpec, validate_dataset

WORDS = (
    "the a cell protein gene expression increases reduces patients study trial risk mice tumour dose "
    "significant association cohort receptor pathway inhibitor response mortality years treatment"
).split()
SHIPPED_DATA_CONFIG = Path(__file__).resolve().parents[1] / "conf" / "data" / "sample.yaml"
SCHEMA = FieldSpec.from_config(OmegaConf.load(SHIPPED_DATA_CONFIG).schema)
REPEATS = 3


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choices(WORDS, k=words))


def make_record(rng: random.Random, index: int) -> dict:
    evidence = rng.randint(0, 3)
    claims = [f"CLAIM[c{i + 1}]: {sentence(rng, rng.randint(5, 25))}" for i in range(evidence + 1)]
    relations = [f"RELATION: c{i + 2} {rng.choice(['supports', 'refutes'])} c1" for i in range(evidence)]
    return {
        "prompt": f"Extract the claims from: {sentence(rng, rng.randint(10, 300))}",
        "completion": "\n".join(claims + relations),
        "metadata": {
            "claim_id": index,
            "doc_ids": [rng.randint(1, 99999) for _ in range(rng.randint(1, 3))],
            "labels": [rng.choice(["SUPPORT", "CONTRADICT"]) for _ in range(evidence)],
        },
    }


def write_dataset(path: Path, megabytes: float) -> int:
    """Write records until the file reaches `megabytes`; return the record count."""
    rng = random.Random(0)
    target = int(megabytes * 1_000_000)
    written = records = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            line = json.dumps(make_record(rng, records), ensure_ascii=False) + "\n"
            f.write(line)
            written += len(line)
            records += 1
    return records


def json_loads_loop(path: Path) -> None:
    with open(path, "rb") as f:
        for line in f:
            json.loads(line)


def run_validator(path: Path) -> None:
    result = validate_dataset(path, SCHEMA)
    if not result.ok:
        raise SystemExit(f"the benchmark file should be valid:\n{result.summary(5)}")


def best_seconds(readers: list[Callable[[Path], None]], path: Path) -> list[float]:
    """Best of REPEATS per reader, taking turns so a noisy spell on the machine hits both alike."""
    best = [float("inf")] * len(readers)
    for _ in range(REPEATS):
        for i, read in enumerate(readers):
            start = time.perf_counter()
            read(path)
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--mb", type=float, default=100.0, help="size of the generated file in MB (default 100)"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="thinker-bench-") as tmp:
        path = Path(tmp) / "bench.jsonl"
        records = write_dataset(path, args.mb)
        size_mb = path.stat().st_size / 1_000_000
        print(f"file: {size_mb:.1f} MB, {records} records (best of {REPEATS})")
        baseline, validator = best_seconds([json_loads_loop, run_validator], path)
    print(f"json.loads loop:  {baseline:6.2f} s  {size_mb / baseline:7.1f} MB/s")
    print(f"validate_dataset: {validator:6.2f} s  {size_mb / validator:7.1f} MB/s")
    print(f"ratio validator/json.loads: {validator / baseline:.2f}x (goal <= 2.0x)")


if __name__ == "__main__":
    main()
