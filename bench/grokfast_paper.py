"""The Grokfast paper's own setting (Lee et al. 2024, the "Algorithmic Data (Transformer decoder, Grokfast)" table
of its README): x * y mod 97, a 2-layer transformer decoder, steps to 95% validation accuracy.

What the paper's code (github.com/ironjr/grokfast, main.py) does, and this module does too:
  - data: every equation "x op y = r" with 0 <= x < 97, 0 < y < 97 (9,312 of them; tokens 0..96, op 98, = 97),
    shuffled and cut in half: 4,656 train, 4,656 validation. The loss and the accuracy are on the answer only
    (the logits at "=").
  - model: token + learned position embeddings, 2 pre-norm causal blocks of width 128, 4 heads, a GELU MLP of
    4 x 128, a final LayerNorm and a bias-free head over 99 tokens. The paper's block adds the attention output
    to the *normalised* input (x = ln_1(x); x = x + attn(x)); kept, since it is what the table measured.
  - optimizer: lr 1e-3, betas (0.9, 0.98), a linear warm-up over the first 10 updates, batch 512, one
    validation pass per epoch (10 updates): the step counts below are multiples of 10, as the paper's are.
  - the table: baseline (no filter, no weight decay) 39,890 steps; Grokfast (alpha 0.98, lamb 2.0, weight decay
    0.005) 910 steps, x43.8.

Where ours differs and why: the paper uses torch.optim.Adam, whose weight_decay is an L2 term added to the
gradient after the filter, so Adam normalises it; GrokFastAdamW is AdamW (decoupled decay: p -= lr * wd * p),
so the same number means far less decay (PaperTask.weight_decay says what that did and what we use). Both keep
the paper's order: filter, then the optimizer's update. The baseline is GrokFastAdamW with lamb 0 (the same
code path) and, as the paper's, without weight decay; --baseline-weight-decay gives it the GrokFast run's to
separate the filter's share from the decay's.
"""

from __future__ import annotations

import math
import multiprocessing
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn


@dataclass(frozen=True)
class PaperTask:
    modulus: int = 97
    width: int = 128
    layers: int = 2
    heads: int = 4
    batch_size: int = 512
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.98)
    warmup: int = 10  # updates of linear LR warm-up
    alpha: float = 0.98
    lamb: float = 2.0
    # GrokFastAdamW's decoupled weight decay in the GrokFast run. The paper's 0.005 is Adam's L2 term, which Adam
    # divides by the gradient's running RMS: once the training set is memorised that RMS is tiny and the decay
    # strong. AdamW's decoupled 0.005 shrinks weights by lr * 0.005 = 5e-6 a step, nothing: with it GrokFast
    # memorised (train 0.98 at step 750) and stayed at 1% validation accuracy, like the paper's baseline. 1.0 is
    # the AdamW value of the grokking literature (Power et al. 2022).
    weight_decay: float = 1.0
    baseline_weight_decay: float = 0.0  # the paper's baseline: no filter, no weight decay
    # "adamw": GrokFastAdamW (ours). "adam-l2": the paper's optimizer, for comparison: GrokFastFilter, then
    # torch.optim.Adam, whose weight_decay is an L2 term (the paper's value: 0.005)
    optimizer: str = "adamw"
    threshold: float = 0.95  # validation accuracy that counts as generalised
    seed: int = 0


PAPER_L2 = 0.005  # the paper's weight decay, as Adam's L2 term


class PaperAdam(torch.optim.Adam):
    """The paper's update: the GrokFast-EMA filter on the gradients (ours, GrokFastFilter), then Adam, which adds
    the L2 term weight_decay * p to the filtered gradient and normalises both."""

    def __init__(self, params: Any, alpha: float, lamb: float, **adam: Any):
        params = list(params)
        super().__init__(params, **adam)
        from thinker.pretraining.grokfast import GrokFastFilter

        self.grokfast = GrokFastFilter(params, alpha, lamb)

    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        self.grokfast.apply_tensor()
        return super().step(closure)


class Block(nn.Module):
    """The paper's causal block (sequence-first, as nn.MultiheadAttention's default)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.ln_2 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, last_only: bool = False) -> torch.Tensor:
        """last_only: the last position's output alone (what the answer's logits need from the top block); it
        attends to every position, so no mask is needed, and the other positions' MLPs are skipped."""
        x = self.ln_1(x)
        query = x[-1:] if last_only else x
        x = query + self.attn(query, x, x, attn_mask=None if last_only else mask, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class Decoder(nn.Module):
    def __init__(self, task: PaperTask, length: int = 4):
        super().__init__()
        tokens = task.modulus + 2
        self.token_embeddings = nn.Embedding(tokens, task.width)
        self.position_embeddings = nn.Embedding(length + 1, task.width)  # the paper's seq_len=5
        self.layers = nn.ModuleList(Block(task.width, task.heads) for _ in range(task.layers))
        self.ln_f = nn.LayerNorm(task.width)
        self.head = nn.Linear(task.width, tokens, bias=False)
        self.register_buffer("mask", torch.triu(torch.full((length, length), float("-inf")), diagonal=1),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (length, batch) token ids; the logits at the last position (the answer's)."""
        h = self.token_embeddings(x) + self.position_embeddings(torch.arange(x.shape[0], device=x.device))[:, None]
        for layer in self.layers[:-1]:
            h = layer(h, self.mask)
        h = self.layers[-1](h, self.mask, last_only=True)  # the paper computes every position, then keeps the last
        return self.head(self.ln_f(h[-1]))


def equations(modulus: int) -> torch.Tensor:
    """(5, 97 * 96): rows x, op, y, =, x * y mod p, for 0 <= x < p and 0 < y < p."""
    x, y = torch.cartesian_prod(torch.arange(modulus), torch.arange(1, modulus)).T
    op, eq = torch.full_like(x, modulus + 1), torch.full_like(x, modulus)
    return torch.stack([x, op, y, eq, x * y % modulus])


def split(task: PaperTask) -> tuple[torch.Tensor, torch.Tensor]:
    data = equations(task.modulus)
    generator = torch.Generator().manual_seed(task.seed)
    train_idx, valid_idx = torch.randperm(data.shape[1], generator=generator).split(data.shape[1] // 2)
    return data[:, train_idx], data[:, valid_idx]


@dataclass(frozen=True)
class PaperOutcome:
    steps: int | None  # first step (a multiple of the epoch) with validation accuracy >= threshold; None: capped
    ran: int  # steps run
    train_accuracy: float  # at the end
    val_accuracy: float
    seconds: float


def build(task: PaperTask, grokfast: bool, weight_decay: float) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The model (seeded: both runs start from the same weights) and GrokFastAdamW, its filter off (lamb 0)
    for the baseline, so both runs take the same code path."""
    from thinker.pretraining.grokfast import GrokFastAdamW

    torch.manual_seed(task.seed)
    model = Decoder(task)
    if task.optimizer == "adam-l2":
        return model, PaperAdam(model.parameters(), task.alpha, task.lamb if grokfast else 0.0, lr=task.lr,
                                betas=task.betas, weight_decay=weight_decay)
    optimizer = GrokFastAdamW(model.parameters(), lr=task.lr, betas=task.betas, weight_decay=weight_decay,
                              alpha=task.alpha, lamb=task.lamb if grokfast else 0.0)
    return model, optimizer


def train(task: PaperTask, grokfast: bool, weight_decay: float, max_steps: int, deadline: float = math.inf,
          progress: Callable[[int, float, float], None] | None = None) -> PaperOutcome:
    """One run to `task.threshold`, stopped at `max_steps` or when time.monotonic() passes `deadline` (checked
    once per epoch). `progress(step, train accuracy, validation accuracy)` after each epoch."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matmuls: a second thread mostly waits, and on a busy machine far worse
    try:
        return _train(task, grokfast, weight_decay, max_steps, deadline, progress)
    finally:
        torch.set_num_threads(threads)


def _train(task: PaperTask, grokfast: bool, weight_decay: float, max_steps: int, deadline: float,
           progress: Callable[[int, float, float], None] | None) -> PaperOutcome:
    started = time.perf_counter()
    train_data, valid_data = split(task)
    model, optimizer = build(task, grokfast, weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda update: min(1.0, update / task.warmup))
    shuffle = torch.Generator().manual_seed(task.seed + 1)
    step, train_acc, val_acc = 0, 0.0, 0.0
    while step < max_steps and time.monotonic() < deadline:
        epoch = train_data[:, torch.randperm(train_data.shape[1], generator=shuffle)]
        correct = 0
        model.train()
        for batch in epoch.split(task.batch_size, dim=1):
            logits = model(batch[:-1])
            loss = F.cross_entropy(logits, batch[-1])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            correct += int((logits.argmax(-1) == batch[-1]).sum())
            step += 1
        train_acc = correct / train_data.shape[1]  # during the epoch, as the paper's code counts it
        val_acc = accuracy(model, valid_data)
        if progress is not None:
            progress(step, train_acc, val_acc)
        if val_acc >= task.threshold:
            return PaperOutcome(step, step, train_acc, val_acc, time.perf_counter() - started)
    return PaperOutcome(None, step, train_acc, val_acc, time.perf_counter() - started)


@torch.no_grad()
def accuracy(model: nn.Module, data: torch.Tensor) -> float:
    model.eval()
    return float((model(data[:-1]).argmax(-1) == data[-1]).float().mean())


# ---------------------------------------------------------------- python bench/grokfast.py --paper


PAPER_BASELINE_STEPS = 39_890  # the paper's table: baseline, steps to 95% validation accuracy
PAPER_GROKFAST_STEPS = 910  # Grokfast (EMA, alpha 0.98, lamb 2.0): x43.8


def add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("--paper (the Grokfast paper's x * y mod 97 transformer)")
    group.add_argument("--minutes", type=float, default=24.0,
                       help="wall-clock limit for both runs together (default 24): the baseline stops there")
    group.add_argument("--baseline-steps", type=int, default=40_000,
                       help="baseline steps at most (default 40000, past the paper's 39890)")
    group.add_argument("--grokfast-steps", type=int, default=5_000, help="GrokFast steps at most (default 5000)")
    group.add_argument("--optimizer", choices=("adamw", "adam-l2"), default="adamw",
                       help="adamw: GrokFastAdamW (default); adam-l2: the paper's, our filter then torch.optim.Adam "
                            "with an L2 weight decay")
    group.add_argument("--weight-decay", type=float, default=None,
                       help=f"the GrokFast run's weight decay (default {PaperTask.weight_decay} for adamw, "
                            f"{PAPER_L2} for adam-l2)")
    group.add_argument("--baseline-weight-decay", type=float, default=PaperTask.baseline_weight_decay,
                       help="the baseline's weight decay (default 0, the paper's baseline)")
    group.add_argument("--seed", type=int, default=0, help="split, initial weights and batch order (default 0)")


def _report(label: str) -> Callable[[int, float, float], None]:
    def progress(step: int, train_acc: float, val_acc: float) -> None:
        if step % 250 == 0:
            print(f"  [{label}] step {step}: train {train_acc:.3f}, validation {val_acc:.3f}", file=sys.stderr,
                  flush=True)
    return progress


def _run_for(task: PaperTask, grokfast: bool, max_steps: int, seconds: float) -> PaperOutcome:
    """One run in a worker process, stopped `seconds` after it starts."""
    label = "grokfast" if grokfast else "baseline"
    decay = task.weight_decay if grokfast else task.baseline_weight_decay
    return train(task, grokfast, decay, max_steps, time.monotonic() + seconds, _report(label))


def main_paper(args: Any) -> None:
    """Both runs at once, one process and one thread each (a 2-core CPU runs them side by side), then the table
    and, last, the ratio baseline / GrokFast of the steps to 95% validation accuracy."""
    decay = args.weight_decay if args.weight_decay is not None else (
        PAPER_L2 if args.optimizer == "adam-l2" else PaperTask.weight_decay)
    task = PaperTask(seed=args.seed, weight_decay=decay, baseline_weight_decay=args.baseline_weight_decay,
                     optimizer=args.optimizer)
    started = time.monotonic()
    budget = args.minutes * 60  # each worker's own clock starts with its run
    print(f"x * y mod {task.modulus}, 50/50 split, {task.layers}-layer transformer decoder (width {task.width}, "
          f"{task.heads} heads), batch {task.batch_size}, "
          f"{'GrokFastAdamW' if task.optimizer == 'adamw' else 'GrokFastFilter + Adam (L2)'} lr {task.lr} betas {task.betas}, warm-up "
          f"{task.warmup}; GrokFast alpha {task.alpha} lamb {task.lamb} weight decay {task.weight_decay}; baseline "
          f"the same optimizer with lamb 0, weight decay {task.baseline_weight_decay}; steps to "
          f"{task.threshold:.0%} validation accuracy (checked every epoch); within {args.minutes:g} minutes")
    context = multiprocessing.get_context("spawn")  # torch in a forked child can hang on its thread pool
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        fast_job = pool.submit(_run_for, task, True, args.grokfast_steps, budget)
        base_job = pool.submit(_run_for, task, False, args.baseline_steps, budget)
        fast, base = fast_job.result(), base_job.result()
    print(f"{'run':<10}{'steps to 95%':>14}{'steps run':>11}{'train acc':>11}{'val acc':>9}{'wall s':>8}"
          f"{'paper':>8}")
    for name, outcome, paper in (("baseline", base, PAPER_BASELINE_STEPS), ("grokfast", fast, PAPER_GROKFAST_STEPS)):
        reached = str(outcome.steps) if outcome.steps is not None else "not yet"
        print(f"{name:<10}{reached:>14}{outcome.ran:>11}{outcome.train_accuracy:>11.3f}"
              f"{outcome.val_accuracy:>9.3f}{outcome.seconds:>8.0f}{paper:>8}")
    print(f"wall time {time.monotonic() - started:.0f} s")
    if fast.steps is None:
        print(f"GrokFast did not reach {task.threshold:.0%} within {fast.ran} steps: no ratio")
        sys.exit(1)
    if base.steps is None:  # capped: the baseline needs more than the steps it ran
        print(f"baseline / grokfast steps to {task.threshold:.0%} (baseline capped at {base.ran}, a lower bound; "
              f"paper {PAPER_BASELINE_STEPS / PAPER_GROKFAST_STEPS:.1f}x): >= {base.ran / fast.steps:.1f}x")
    else:
        print(f"baseline / grokfast steps to {task.threshold:.0%} (paper {PAPER_BASELINE_STEPS / PAPER_GROKFAST_STEPS:.1f}x): "
              f"{base.steps / fast.steps:.1f}x")

