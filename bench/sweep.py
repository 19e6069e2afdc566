"""Wall time of one 4-job sweep with the basic launcher (one job after another) vs the joblib launcher.

    python bench/sweep.py                   # 4 jobs of the embedded default, 4 optimizer steps each
    python bench/sweep.py --steps 8 --workers 2 --repeats 2

Each sweep is `python launch.py -m optimizer.lr=1e-3,2e-3,3e-3,4e-3 trainer.max_steps=N` of the default
experiment (tiny-qwen, QLoRA on the CPU, validation gate, held-out evaluation), run from its own empty
folder (a fresh mlflow.db and multirun/), as a user would. A warm-up run first builds the builtin model and
caches the base model's evaluation in a models folder the sweeps share, so neither launcher pays for them.
The launchers take turns (best of --repeats each). joblib caps each worker's OpenMP threads at
CPUs // workers, which alone makes a tiny model's jobs faster on a small machine, so a third row runs the basic
launcher with one thread per job too, and a basic sweep is launched twice from one folder: the second time every
job reuses its finished twin (sweep.reuse). The last line is the ratio basic/joblib: the speed-up.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LRS = "optimizer.lr=1e-3,2e-3,3e-3,4e-3"
JOBS = 4
RELAUNCH = "basic, re-launched"  # the same sweep again: nothing trains


def run(args: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], cwd=cwd, env=env,
                         capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"launch.py {' '.join(args)} exited {out.returncode}:\n{out.stderr[-3000:]}")
    return seconds


def sweep(launcher: list[str], steps: int, env: dict[str, str], scratch: Path, cwd: Path | None = None) -> float:
    """One sweep from `cwd` (default: a fresh folder, so a fresh MLflow store and multirun/)."""
    cwd = cwd or Path(tempfile.mkdtemp(prefix="sweep-", dir=scratch))
    return run(["-m", *launcher, LRS, f"trainer.max_steps={steps}"], cwd, env)


def single_threaded(env: dict[str, str]) -> dict[str, str]:
    """What joblib's workers get: it caps each worker's OpenMP/BLAS threads at CPUs // n_jobs."""
    return {**env, **{name: "1" for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per job (default 4)")
    parser.add_argument("--workers", type=int, default=2, help="joblib workers (default 2)")
    parser.add_argument("--repeats", type=int, default=1, help="sweeps per launcher, best taken (default 1)")
    args = parser.parse_args()

    basic, joblib = "basic", f"joblib, {args.workers} workers"
    launchers = {  # name -> (overrides, single-threaded jobs)
        basic: ([], False),
        joblib: (["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.workers}"], False),
        "basic, 1 thread/job": ([], True),  # how much of joblib's gain is only its thread cap
    }
    with tempfile.TemporaryDirectory(prefix="thinker-bench-") as tmp:
        scratch = Path(tmp)
        env = {**os.environ, "THINKER_MODELS_DIR": str(scratch / "models"), "HF_HUB_OFFLINE": "1"}
        warm = run(["trainer.max_steps=1", "logger=none", f"hydra.run.dir={scratch / 'warmup'}"], scratch, env)
        print(f"{os.cpu_count()} CPUs; {JOBS} jobs of {args.steps} steps per sweep; warm-up run {warm:.1f} s "
              f"(builds the builtin model, caches the base model's evaluation)")
        best = dict.fromkeys(launchers, float("inf"))
        for _ in range(args.repeats):
            for name, (launcher, one_thread) in launchers.items():
                job_env = single_threaded(env) if one_thread else env
                best[name] = min(best[name], sweep(launcher, args.steps, job_env, scratch))
        # the same sweep again in the same folder: every job finds its finished twin in MLflow (sweep.reuse)
        folder = Path(tempfile.mkdtemp(prefix="sweep-", dir=scratch))
        first = sweep([], args.steps, env, scratch, folder)
        best[RELAUNCH] = sweep([], args.steps, env, scratch, folder)
    print(f"{'launcher':<22}{'wall s':>9}{'s / job':>10}")
    for name, seconds in best.items():
        print(f"{name:<22}{seconds:>9.1f}{seconds / JOBS:>10.1f}")
    print(f"re-launch / first launch: {best[RELAUNCH] / first:.2f}x (every job reused, {first:.1f} s the first time)")
    print(f"ratio basic/joblib: {best[basic] / best[joblib]:.2f}x (speed-up of {args.workers} workers)")


if __name__ == "__main__":
    main()
