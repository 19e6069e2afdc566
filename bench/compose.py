"""Wall time of composing the config (`python launch.py --cfg job`) vs `python -c "import hydra"`.

Goal: composing stays under 1.0 s on a 2-core machine, i.e. nothing heavy is imported to compose.
Prints the ratio to the bare Hydra import as the last line.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    baseline = timed([sys.executable, "-c", "import hydra"], args.repeats)
    compose = timed([sys.executable, str(ROOT / "launch.py"), "--cfg", "job"], args.repeats)
    b, c = statistics.median(baseline), statistics.median(compose)
    print(f"python -c 'import hydra'       median {b:.3f} s  (min {min(baseline):.3f})")
    print(f"python launch.py --cfg job      median {c:.3f} s  (min {min(compose):.3f})  goal < 1.0 s")
    print(f"ratio compose/import-hydra: {c / b:.2f}x")


if __name__ == "__main__":
    main()
