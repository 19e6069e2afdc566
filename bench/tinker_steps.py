"""Benchmark: optimizer steps/s of backend=tinker against `thinker tinker-serve` vs backend=local, same config.

    python bench/tinker_steps.py                 # tiny-qwen, 12 steps of 2 x 4 sequences
    python bench/tinker_steps.py --steps 24 --batch-size 8

Both train the same steps (packing off on both: a Tinker Datum is one sequence), LoRA rank 8, one held-out
evaluation and one saved state at the end. The server runs as its own process (`thinker tinker-serve`), as a
user would run it, on the same CPU cores as the client. backend=tinker is timed with 1 and with 2 steps in
flight (`backend.options.in_flight`). The time covers the training loop only (model load and the first
tokenisation excluded on both sides). The last line is the ratio tinker (in_flight=2) / local.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import compose, quiet  # noqa: E402

KEY = "tml-bench"


def common(args: argparse.Namespace) -> list[str]:
    return [f"trainer.max_steps={args.steps}", "trainer.evaluations=1", "trainer.optimizations=[]", "logger=none",
            f"trainer.batch_size={args.batch_size}", f"trainer.grad_accum={args.grad_accum}",
            f"trainer.max_seq_length={args.max_seq_length}", "data.max_examples=256"]


def local_steps_per_sec(args: argparse.Namespace, folder: Path) -> float:
    from thinker.backends.local.backend import train

    report = train(compose(["method=lora", "method.alpha=32", *common(args)]), folder, None)
    return report.metrics["optimizer_steps"] / report.metrics["train_seconds"]


def tinker_steps_per_sec(args: argparse.Namespace, folder: Path, url: str, in_flight: int) -> float:
    from thinker.backends.tinker.loop import TinkerTrainer

    cfg = compose(["backend=tinker", f"backend.options.in_flight={in_flight}", *common(args)])
    report = TinkerTrainer(cfg, folder, None, dict(cfg.backend.options), url).train()
    return report.metrics["steps_per_sec"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--grad-accum", type=int, default=2)
    parser.add_argument("--max-seq-length", type=int, default=512)
    args = parser.parse_args()
    quiet()
    from thinker.tinker_serve.server import spawn

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ.setdefault("THINKER_MODELS_DIR", str(root / "models"))
        os.environ["TINKER_API_KEY"] = KEY
        local = local_steps_per_sec(args, root / "local")  # also builds tiny-qwen for the server
        server = spawn("tiny-qwen", root / "state", env={**os.environ}, cwd=root)
        try:
            flights = {n: tinker_steps_per_sec(args, root / f"tinker{n}", server.base_url, n) for n in (1, 2)}
        finally:
            server.stop()
    print(f"{'run':<36}{'steps/s':>10}")
    print(f"{'backend=local (Lightning, in process)':<36}{local:>10.2f}")
    for n, rate in flights.items():
        print(f"{f'backend=tinker, in_flight={n}':<36}{rate:>10.2f}")
    print(f"in_flight 2 / 1: {flights[2] / flights[1]:.2f}x")
    print(f"ratio tinker (in_flight=2) / local: {flights[2] / local:.2f}x")


if __name__ == "__main__":
    main()
