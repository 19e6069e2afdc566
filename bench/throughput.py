"""Training throughput of the local backend vs a plain Hugging Face Trainer + PEFT LoRA baseline.

    python bench/throughput.py                      # lora, batch 8, 768 tokens, default steps
    python bench/throughput.py --steps 10 --method qlora

Both sides fine-tune the builtin tiny-qwen model on the same train split of data/sample/claims.jsonl with
the same batch size, maximum length, number of optimizer steps, LoRA settings, AdamW hyper-parameters and
cosine schedule, in this one process (baseline first, then ours).

- baseline: what a typical user writes. Each example is tokenised (prompt tokens masked to -100; the ids
  and labels are exactly ours, minus our loss weights), batches are padded to their longest example with
  an attention mask (DataCollatorForSeq2Seq), and transformers.Trainer runs `max_steps` steps on the CPU.
- ours: thinker.backends.local.backend.train() with sequence packing (rows of max_seq_length, several
  examples each, position_ids restarting per example, no padding inside a row).
- ours without packing (trainer.optimizations=[]), for reference.

The metric is NON-PADDING input tokens per second of training: a packed batch holds more examples than a
padded one, which is the point of packing. Only the training loop is timed (trainer.train() and
Lightning's fit); building and loading the model and tokenising are not. No side evaluates. Our side
also writes its checkpoints inside fit, as a real run does; the "steps s" column is the time inside
optimizer steps only, so the difference shows the per-run overhead.

The machine may be shared: other jobs on the cores slow a 2-thread run several-fold. So every run first
waits (up to --idle-wait s) for the other processes to pause, the three runs are repeated --repeats
times in rounds, and each side's fastest run counts; the "others" column shows how busy the cores were.

The last line is the ratio of our packed tokens/s to the baseline's (goal >= 1.5x).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import ROOT, compose, quiet

# No held-out part: neither side evaluates, so the timed loop is training only, on the same examples.
VALIDATION_SPLIT = 0.0
# Other jobs on a 2-core machine slow a 2-thread OpenMP run several-fold (threads spin at barriers),
# so each run starts only once other processes use less than this many cores (or after --idle-wait s).
IDLE_CORES = 0.15
BASELINE, OURS, UNPACKED = "HF Trainer + PEFT (padded)", "ours (packed)", "ours (packing off)"


@dataclass
class Result:
    name: str
    seconds: float  # wall time of the training loop
    tokens: int = 0  # non-padding input tokens in the batches consumed
    losses: list[float] = field(default_factory=list)  # mean token cross-entropy per optimizer step
    step_seconds: list[float] = field(default_factory=list)  # wall time inside each optimizer step
    step_cpu: list[float] = field(default_factory=list)  # process CPU time (all threads) inside each step
    examples: int = 0  # examples in the batches consumed
    slots: int = 0  # positions in the batches consumed, padding included
    others_cores: float = float("nan")  # cores busy with other processes meanwhile, on average

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)



def busy_seconds() -> float:
    """CPU seconds all processes have spent on this machine (Linux /proc/stat; nan elsewhere)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def watch_others(result: Result) -> Iterator[None]:
    """Record how many cores other processes kept busy: they slow the two 2-thread runs unequally."""
    wall, busy, own = time.perf_counter(), busy_seconds(), time.process_time()
    yield
    others = (busy_seconds() - busy) - (time.process_time() - own)
    result.others_cores = max(others, 0.0) / max(time.perf_counter() - wall, 1e-9)


def others_busy(seconds: float = 2.0) -> float:
    """Cores other processes kept busy over the next `seconds`."""
    busy, own = busy_seconds(), time.process_time()
    time.sleep(seconds)
    return max((busy_seconds() - busy) - (time.process_time() - own), 0.0) / seconds


def wait_for_idle(limit: float) -> None:
    deadline = time.monotonic() + limit
    while others_busy() > IDLE_CORES and time.monotonic() < deadline:
        pass


class StepClock:
    """Wall and CPU time of one step. CPU time is steadier when other jobs share the cores."""

    def start(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self, result: Result) -> None:
        result.step_seconds.append(time.perf_counter() - self.wall)
        result.step_cpu.append(time.process_time() - self.cpu)


# ---------------------------------------------------------------- shared setup


def overrides(args: argparse.Namespace, packed: bool) -> list[str]:
    out = [
        f"method={args.method}", "logger=none",
        f"trainer.max_steps={args.steps}", f"trainer.batch_size={args.batch_size}",
        f"trainer.max_seq_length={args.max_seq_length}", "trainer.grad_accum=1", "trainer.evaluations=1",
        f"data.validation_split={VALIDATION_SPLIT}",
    ]
    return out if packed else [*out, "trainer.optimizations=[]"]


def model_path(cfg: Any) -> str:
    """The builtin model's folder (built on first use under THINKER_MODELS_DIR); the same for both sides."""
    from thinker.models.loading import resolve_model_path
    from thinker.paths import resolve_input

    return resolve_model_path(cfg.model, int(cfg.seed), [resolve_input(p) for p in cfg.model.tokenizer_corpus])


def train_examples(cfg: Any) -> list[Any]:
    from thinker.data.examples import read_examples, split_examples
    from thinker.paths import resolve_input

    examples = read_examples(resolve_input(str(cfg.data.path)), cfg.data.prompt_field, cfg.data.completion_field,
                             cfg.data.max_examples)
    return split_examples(examples, float(cfg.data.validation_split), int(cfg.seed))[0]


# ---------------------------------------------------------------- baseline: transformers.Trainer + PEFT


def baseline_dataset(cfg: Any, tokenizer: Any) -> list[dict[str, list[int]]]:
    from thinker.data.tokenize import tokenize_example

    max_len = int(cfg.trainer.max_seq_length)
    return [
        {"input_ids": t.input_ids, "labels": t.labels}
        for t in (tokenize_example(tokenizer, ex.prompt, ex.completion, max_length=max_len)
                  for ex in train_examples(cfg))
    ]


def baseline_model(cfg: Any, path: str) -> Any:
    """The base model loaded as ours loads it, with the same LoRA adapters (peft, all-linear)."""
    import transformers
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    from thinker.backends.local.backend import qlora_settings
    from thinker.models.loading import load_causal_lm

    transformers.set_seed(int(cfg.seed))
    method = cfg.method
    quant = qlora_settings(cfg) if str(method.name) == "qlora" else None
    model = load_causal_lm(path, method=str(method.name), quant=quant, dtype="fp32")
    if quant is not None:
        # as ours does on a CPU: gradient checkpointing would only add recomputation here
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    lora = LoraConfig(r=int(method.rank), lora_alpha=float(method.alpha), lora_dropout=float(method.dropout),
                      target_modules=str(method.target_modules), bias=str(method.bias), task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def baseline_arguments(cfg: Any, out_dir: str) -> Any:
    from transformers import TrainingArguments

    opt = cfg.optimizer
    return TrainingArguments(
        output_dir=out_dir, per_device_train_batch_size=int(cfg.trainer.batch_size),
        gradient_accumulation_steps=1, max_steps=int(cfg.trainer.max_steps),
        learning_rate=float(opt.lr), weight_decay=float(opt.weight_decay), adam_beta1=float(opt.betas[0]),
        adam_beta2=float(opt.betas[1]), adam_epsilon=float(opt.eps), max_grad_norm=float(opt.max_grad_norm),
        optim="adamw_torch", lr_scheduler_type=str(opt.scheduler.type),
        warmup_steps=float(opt.scheduler.warmup_ratio),  # a float below 1 is a ratio of the total steps
        logging_steps=1, report_to="none", save_strategy="no", eval_strategy="no", use_cpu=True,
        seed=int(cfg.seed), dataloader_num_workers=0, disable_tqdm=True,
    )


def run_baseline(cfg: Any, path: str) -> Result:
    import torch
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback

    from thinker.models.loading import load_tokenizer

    tokenizer = load_tokenizer(path)
    dataset = baseline_dataset(cfg, tokenizer)
    model = baseline_model(cfg, path)
    result = Result(BASELINE, 0.0)

    class CountingTrainer(Trainer):
        # counted where a batch is consumed: the accelerate loader fetches one batch ahead of use
        def training_step(self, model: Any, inputs: dict[str, torch.Tensor], *rest: Any, **kw: Any) -> Any:
            result.tokens += int(inputs["attention_mask"].sum())
            result.examples += int(inputs["input_ids"].size(0))
            result.slots += int(inputs["input_ids"].numel())
            return super().training_step(model, inputs, *rest, **kw)

    class StepTimer(TrainerCallback):
        clock = StepClock()

        def on_step_begin(self, *_: Any, **__: Any) -> None:
            self.clock.start()

        def on_step_end(self, *_: Any, **__: Any) -> None:
            self.clock.stop(result)

    with tempfile.TemporaryDirectory() as out_dir:
        trainer = CountingTrainer(
            model=model, args=baseline_arguments(cfg, out_dir), train_dataset=dataset,
            data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
            callbacks=[StepTimer()],
        )
        with contextlib.redirect_stdout(io.StringIO()), watch_others(result):  # it prints its logs there
            started = time.perf_counter()
            trainer.train()
            result.seconds = time.perf_counter() - started
    result.losses = [float(e["loss"]) for e in trainer.state.log_history if "loss" in e]
    return result


# ---------------------------------------------------------------- ours: the local backend


def served_rows(trainer: Any, batch_idx: int) -> list[Any]:
    """The rows of train step `batch_idx` (all its micro-batches), in the order our loader serves them."""
    loader = trainer.train_dataloader  # the ResumableLoader itself (a single train loader)
    return [row for micro in loader.rows_of(batch_idx, loader.epoch) for row in micro]


def ours_recorder(result: Result) -> Any:
    """A Lightning callback that counts served tokens and records per-step loss and time into `result`."""
    import lightning.pytorch as pl

    class Recorder(pl.Callback):
        clock = StepClock()

        def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
            rows = served_rows(trainer, batch_idx)  # one batch = one optimizer step: a list of micro-batches
            assert len(rows) == sum(b["input_ids"].size(0) for b in batch), "row bookkeeping out of step"
            result.tokens += sum(len(r) for r in rows)
            result.examples += sum(r.n_examples for r in rows)
            result.slots += sum(int(b["input_ids"].numel()) for b in batch)
            self.clock.start()

        def on_train_batch_end(self, trainer: Any, module: Any, *_: Any) -> None:
            self.clock.stop(result)
            result.losses.append(float(module.last_train_loss))

    return Recorder()


def run_ours(cfg: Any, name: str) -> Result:
    from thinker.backends.local.backend import train

    result = Result(name, 0.0)
    with (tempfile.TemporaryDirectory() as run_dir, contextlib.redirect_stdout(io.StringIO()),
          watch_others(result)):
        # stdout swallowed: Lightning's progress bar (kept on, as in a real run) writes there
        report = train(cfg, Path(run_dir), session=None, callbacks=(ours_recorder(result),))
    quiet()  # train() resets Lightning's loggers
    result.seconds = report.metrics["train_seconds"]
    steps = int(report.metrics["optimizer_steps"])
    assert len(result.losses) == steps * int(cfg.trainer.grad_accum), "a batch was not counted"
    return result


# ---------------------------------------------------------------- rounds and report


def print_table(results: list[Result]) -> None:
    print(f"{'':28} {'tokens/s':>8} {'tokens':>7} {'examples':>8} {'fill':>5} {'seconds':>7} {'steps s':>7} "
          f"{'s/step':>6} {'ms/slot':>7} {'cpu s':>6} {'others':>6} {'final loss':>10}")
    for r in results:
        median_step = statistics.median(r.step_seconds) if r.step_seconds else float("nan")
        final = r.losses[-1] if r.losses else float("nan")
        steps_s = sum(r.step_seconds)
        print(f"{r.name:28} {r.tokens_per_second:8.0f} {r.tokens:7d} {r.examples:8d} {r.tokens / r.slots:5.2f} "
              f"{r.seconds:7.2f} {steps_s:7.2f} {median_step:6.2f} {1000 * steps_s / r.slots:7.3f} "
              f"{sum(r.step_cpu):6.1f} {r.others_cores:6.2f} {final:10.4f}")
    print("fill: tokens / (batch rows x width); seconds: wall time of trainer.train() / Lightning fit;")
    print("steps s: of that, inside optimizer steps; s/step: median step; ms/slot: step time per position")
    print("(padding included); cpu s: process CPU time inside steps (all threads); others: cores other")
    print("processes kept busy meanwhile (above ~0.2 the wall times are inflated).")


def print_loss_comparison(baseline: Result, others: list[Result]) -> None:
    print("\nloss curves (mean token cross-entropy on completions, per optimizer step). Packing changes what a")
    print("step contains (more, different examples per batch), ours weights some lines in its objective and")
    print("its warmup starts at lr/warmup where the Trainer's starts at 0, so the curves are not expected to")
    print("coincide, only to fall alike.")
    for r in others:
        n = min(len(baseline.losses), len(r.losses))
        mad = sum(abs(a - b) for a, b in zip(baseline.losses[:n], r.losses[:n], strict=True)) / max(n, 1)
        print(f"  {r.name:20} vs baseline: mean |diff| over {n} steps {mad:.4f}; first {r.losses[0]:.4f} vs "
              f"{baseline.losses[0]:.4f}; final {r.losses[-1]:.4f} vs {baseline.losses[-1]:.4f}")


def run_rounds(args: argparse.Namespace) -> dict[str, list[Result]]:
    """`--repeats` rounds of baseline, ours, ours unpacked; each run waits for the other jobs to pause."""
    packed_cfg, unpacked_cfg = compose(overrides(args, True)), compose(overrides(args, False))
    path = model_path(packed_cfg)
    sides = {
        BASELINE: lambda: run_baseline(packed_cfg, path),
        OURS: lambda: run_ours(packed_cfg, OURS),
        UNPACKED: lambda: run_ours(unpacked_cfg, UNPACKED),
    }
    runs: dict[str, list[Result]] = {name: [] for name in sides}
    for _ in range(args.repeats):
        for name, run in sides.items():
            wait_for_idle(args.idle_wait)
            runs[name].append(run())
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per run")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-seq-length", type=int, default=768)
    parser.add_argument("--method", choices=("lora", "qlora"), default="lora")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of the three runs; the fastest counts")
    parser.add_argument("--idle-wait", type=float, default=30.0,
                        help="seconds to wait at most for other jobs to leave the cores before each run")
    args = parser.parse_args()
    quiet()
    os.chdir(ROOT)  # the config's data and corpus paths are relative to the project

    with tempfile.TemporaryDirectory() as models:
        os.environ.setdefault("THINKER_MODELS_DIR", models)  # reuse a models folder if one is configured
        runs = run_rounds(args)
    # noise (other jobs, frequency changes) only ever slows a run down: the fastest run of each is its figure
    best = {name: max(rs, key=lambda r: r.tokens_per_second) for name, rs in runs.items()}
    baseline, ours = best[BASELINE], best[OURS]

    print(f"\n{args.method}, batch {args.batch_size}, max length {args.max_seq_length}, {args.steps} optimizer "
          f"steps per run, {len(train_examples(compose(overrides(args, True))))} train examples, "
          f"{os.cpu_count()} cores; fastest of {args.repeats} runs each:")
    print_table(list(best.values()))
    for name, rs in runs.items():
        print(f"  {name:28} tokens/s of each run: {', '.join(f'{r.tokens_per_second:.0f}' for r in rs)}")
    print_loss_comparison(baseline, [ours, best[UNPACKED]])
    print(f"ratio ours/baseline tokens/s: {ours.tokens_per_second / baseline.tokens_per_second:.2f}x (goal >= 1.5)")


if __name__ == "__main__":
    main()
