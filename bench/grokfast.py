"""Steps to generalise on modular addition: GrokFast-EMA + AdamW vs plain AdamW, same seed, data, model and budget.

    python bench/grokfast.py                       # seeds 0 1 2, 10000 steps each at most
    python bench/grokfast.py --seeds 0 1 2 3 4 5 --budget 15000
    python bench/grokfast.py --paper               # the paper's own table: x * y mod 97 (bench/grokfast_paper.py)

The task: (a + b) mod 47. Half of the 47 x 47 pairs train, the other half is held out. A small MLP (each of a and
b embedded in 32 dimensions, concatenated, one ReLU layer of 128, logits over the 47 residues) is trained on
minibatches of 16 by AdamW (lr 2e-3, betas 0.9 / 0.98 as in the GrokFast paper, weight decay 1.0), once plain
and once with GrokFast's defaults (alpha 0.98, lamb 2.0, thinker.pretraining.grokfast.GrokFastAdamW). Both runs
of a seed see the same split, the same initial weights and the same minibatches. Every 100 steps the held-out
accuracy is measured; a run's result is the first step at which it reaches 0.9, and the first at which the
training accuracy reaches 0.99 (memorised). A run that does not reach 0.9 within the budget is capped: it
counts as the budget, and the ratio printed for it is an upper bound (shown with "<=").

Why this setting: with Adam-style normalisation, adding lamb x EMA to the gradient raises the signal-to-noise
ratio of the slow gradient component by up to 1 + lamb. Here the minibatch gradients are noisy and the weight
decay is strong, so plain AdamW fits the training set slowly or not at all within the budget, while GrokFast
memorises it within about 2,500 steps and then generalises (grokking: training accuracy at 0.99 a thousand or
more steps before held-out accuracy reaches 0.9). Where both memorise quickly (in hand runs: a 256-wide MLP on
(a + b) mod 31, minibatches of 32, lr 1e-3), the wait before generalising is set by the weight decay and was
about the same for both (GrokFast / plain 1.03-1.18 over three seeds): decoupled weight decay is not part of
the gradient that GrokFast filters.

The last line is the ratio GrokFast / plain of the steps to generalise (the median over the seeds): below 1,
GrokFast is faster. tests/test_grokfast.py::test_grokfast_groks_faster runs seed 0 of this task.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
try:
    from thinker.pretraining.grokfast import GrokFastAdamW
except ImportError:  # run from a checkout that is not pip-installed
    sys.path.insert(0, str(ROOT / "src"))
    from thinker.pretraining.grokfast import GrokFastAdamW


@dataclass(frozen=True)
class Task:
    modulus: int = 47
    train_fraction: float = 0.5
    embed_dim: int = 32
    hidden: int = 128
    batch_size: int = 16
    lr: float = 2e-3
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 1.0
    alpha: float = 0.98  # GrokFast: optimizer=grokfast's defaults
    lamb: float = 2.0
    threshold: float = 0.9  # held-out accuracy that counts as generalised
    memorised: float = 0.99  # training accuracy that counts as memorised
    eval_every: int = 100
    budget: int = 10_000  # optimizer steps at most


@dataclass(frozen=True)
class Outcome:
    steps: int | None  # first evaluated step with held-out accuracy >= threshold; None: not within the budget
    memorised: int | None  # first evaluated step with training accuracy >= task.memorised
    seconds: float

    def capped(self, task: Task) -> int:
        """Steps to generalise, a run that never did counting as the whole budget."""
        return self.steps if self.steps is not None else task.budget


def train(task: Task, seed: int, grokfast: bool) -> Outcome:
    """One run: the split, the initial weights and the minibatch order depend on `seed` only."""
    started = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: threads only add overhead, and one thread gives the same numbers
    try:
        return _train(task, seed, grokfast, started)
    finally:
        torch.set_num_threads(threads)


def _train(task: Task, seed: int, grokfast: bool, started: float) -> Outcome:
    p = task.modulus
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    x, y = torch.stack([a.flatten(), b.flatten()], dim=1), (a + b).flatten() % p
    order = torch.Generator().manual_seed(seed)
    perm = torch.randperm(p * p, generator=order)
    n_train = int(task.train_fraction * p * p)
    train_idx, heldout_idx = perm[:n_train], perm[n_train:]

    torch.manual_seed(seed)
    model = nn.Sequential(nn.Embedding(p, task.embed_dim), nn.Flatten(), nn.Linear(2 * task.embed_dim, task.hidden),
                          nn.ReLU(), nn.Linear(task.hidden, p))
    common = {"lr": task.lr, "betas": task.betas, "weight_decay": task.weight_decay}
    optimizer = (GrokFastAdamW(model.parameters(), alpha=task.alpha, lamb=task.lamb, **common) if grokfast
                 else torch.optim.AdamW(model.parameters(), **common))

    batches_per_epoch = n_train // task.batch_size
    memorised = None
    for step in range(1, task.budget + 1):
        k = (step - 1) % batches_per_epoch
        if k == 0:
            epoch = train_idx[torch.randperm(n_train, generator=order)]
        batch = epoch[k * task.batch_size : (k + 1) * task.batch_size]
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[batch]), y[batch]).backward()
        optimizer.step()
        if step % task.eval_every == 0:
            with torch.no_grad():
                if memorised is None and _accuracy(model, x, y, train_idx) >= task.memorised:
                    memorised = step
                if _accuracy(model, x, y, heldout_idx) >= task.threshold:
                    return Outcome(step, memorised, time.perf_counter() - started)
    return Outcome(None, memorised, time.perf_counter() - started)


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> float:
    return (model(x[idx]).argmax(-1) == y[idx]).float().mean().item()


def compare(task: Task, seed: int) -> tuple[Outcome, Outcome]:
    """(plain AdamW, GrokFast) on one seed."""
    return train(task, seed, grokfast=False), train(task, seed, grokfast=True)


def _steps(outcome: Outcome) -> str:
    return str(outcome.steps) if outcome.steps is not None else "never"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds to run (default 0 1 2)")
    parser.add_argument("--budget", type=int, default=Task.budget, help=f"steps per run at most ({Task.budget})")
    parser.add_argument("--paper", action="store_true",
                        help="the Grokfast paper's x * y mod 97 transformer instead (bench/grokfast_paper.py)")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import grokfast_paper

    grokfast_paper.add_arguments(parser)
    args = parser.parse_args()
    if args.paper:
        grokfast_paper.main_paper(args)
        return
    task = Task(budget=args.budget)

    print(f"(a + b) mod {task.modulus}, {task.train_fraction:.0%} of pairs for training, MLP {task.embed_dim}x2 -> "
          f"{task.hidden} -> {task.modulus}, batch {task.batch_size}, AdamW lr {task.lr} weight decay "
          f"{task.weight_decay}; GrokFast alpha {task.alpha} lamb {task.lamb}; held-out accuracy >= "
          f"{task.threshold} within {task.budget} steps")
    print(f"{'seed':<6}{'plain steps':>12}{'grokfast':>10}{'ratio':>9}{'memorised: plain':>18}{'grokfast':>10}"
          f"{'wall s':>8}")
    ratios = []
    for seed in args.seeds:
        plain, fast = compare(task, seed)
        ratio = fast.capped(task) / plain.capped(task)
        ratios.append(ratio)
        shown = f"{'<=' if plain.steps is None else ''}{ratio:.2f}"  # capped plain run: an upper bound
        print(f"{seed:<6}{_steps(plain):>12}{_steps(fast):>10}{shown:>9}{plain.memorised or 'never':>18}"
              f"{fast.memorised or 'never':>10}{plain.seconds + fast.seconds:>8.1f}")
    print(f"ratio grokfast/plain (steps to held-out accuracy {task.threshold}): {statistics.median(ratios):.2f}x "
          f"median over seeds {' '.join(map(str, args.seeds))} (per seed: {', '.join(f'{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
    main()
