"""Training throughput (and, on CUDA, peak memory) of the local backend vs a plain Hugging Face Trainer + PEFT
LoRA baseline.

    python bench/throughput.py                      # CPU: tiny-qwen, lora, batch 8, 768 tokens, 10 steps
    python bench/throughput.py --steps 10 --method qlora
    python bench/throughput.py --device cuda --shape 0.5b --batch-size 16 --max-seq-length 1024
    python bench/throughput.py --device cuda --shape 7b --method qlora --batch-size 4 --max-seq-length 1024

--shape 0.5b / 1.5b / 7b builds Qwen2.5's config of that size (transformers' Qwen2Config, published sizes in
bench/_common.py) with random weights, saved once (bf16 safetensors) with the tiny model's tokenizer: no hub.
On CUDA both sides train in bf16 as users write it: the baseline loads its weights in bf16 and sets
TrainingArguments(bf16=True); ours runs trainer.accelerator=gpu trainer.precision=bf16 (the frozen base in
bf16, adapters in fp32) with --optimizations (default there: sequence_packing,fused_kernels). Each run is a
fresh Python process (one variant's allocations cannot hide in another's), and on CUDA its peak memory is
torch.cuda.max_memory_allocated over the training loop (the weights included).

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

The last line is the ratio of our packed tokens/s to the baseline's (goal >= 1.5x on the CPU, >= 2x on a GPU).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from _common import ROOT, SHAPES, compose, cuda_peak_bytes, quiet, save_random_qwen2

# No held-out part: neither side evaluates, so the timed loop is training only, on the same examples.
VALIDATION_SPLIT = 0.0
# Other jobs on a 2-core machine slow a 2-thread OpenMP run several-fold (threads spin at barriers),
# so each run starts only once other processes use less than this many cores (or after --idle-wait s).
IDLE_CORES = 0.15
BASELINE, OURS, UNPACKED = "HF Trainer + PEFT (padded)", "ours (packed)", "ours (packing off)"
VARIANTS = {"baseline": BASELINE, "ours": OURS, "unpacked": UNPACKED}
RESULT_PREFIX = "RESULT "
GIB = 1024 ** 3


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
    peak_bytes: int = 0  # CUDA: torch.cuda.max_memory_allocated over the training loop (0 on the CPU)
    step_tokens: list[int] = field(default_factory=list)  # non-padding tokens of each optimizer step
    warmup_steps: int = 0  # first steps left out of tokens/s (CUDA: kernel autotuning and compilation)

    @property
    def tokens_per_second(self) -> float:
        if self.warmup_steps:
            timed = self.step_seconds[self.warmup_steps:]
            return sum(self.step_tokens[self.warmup_steps:len(self.step_seconds)]) / max(sum(timed), 1e-9)
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


def ours_optimizations(args: argparse.Namespace, packed: bool) -> list[str] | None:
    """trainer.optimizations for our side (None: the config's default); packing off drops sequence_packing."""
    chosen = args.optimizations if args.optimizations is not None else (
        "sequence_packing,fused_kernels" if args.device == "cuda" else None)
    if chosen is None:
        return None if packed else []
    names = [o.strip() for o in chosen.split(",") if o.strip()]
    return names if packed else [o for o in names if o != "sequence_packing"]


def overrides(args: argparse.Namespace, packed: bool) -> list[str]:
    out = [
        f"method={args.method}", "logger=none",
        f"trainer.max_steps={args.steps}", f"trainer.batch_size={args.batch_size}",
        f"trainer.max_seq_length={args.max_seq_length}", "trainer.grad_accum=1", "trainer.evaluations=1",
        f"data.validation_split={VALIDATION_SPLIT}",
    ]
    if args.device == "cuda":
        out += ["trainer.accelerator=gpu", "trainer.precision=bf16"]
    if args.shape != "tiny" and args.model_path:
        out += [f"model.source={args.model_path}"]
    if args.compile:
        out += ["trainer.compile=true"]
    chosen = ours_optimizations(args, packed)
    if chosen is not None:
        out += [f"trainer.optimizations=[{','.join(chosen)}]"]
    return out


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


def baseline_model(cfg: Any, path: str, device: str) -> Any:
    """The base model loaded as users load it (bf16 weights on CUDA, fp32 on the CPU), with the same LoRA
    adapters (peft, all-linear)."""
    import transformers
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    from thinker.backends.local.training_model import qlora_settings
    from thinker.models.loading import load_causal_lm

    transformers.set_seed(int(cfg.seed))
    method = cfg.method
    quant = qlora_settings(cfg) if str(method.name) == "qlora" else None
    model = load_causal_lm(path, method=str(method.name), quant=quant, dtype="bf16" if device == "cuda" else "fp32")
    if quant is not None:
        # as ours does on a CPU: gradient checkpointing would only add recomputation here
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    lora = LoraConfig(r=int(method.rank), lora_alpha=float(method.alpha), lora_dropout=float(method.dropout),
                      target_modules=str(method.target_modules), bias=str(method.bias), task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def baseline_arguments(cfg: Any, out_dir: str, device: str) -> Any:
    from transformers import TrainingArguments

    opt = cfg.optimizer
    return TrainingArguments(
        output_dir=out_dir, per_device_train_batch_size=int(cfg.trainer.batch_size),
        gradient_accumulation_steps=1, max_steps=int(cfg.trainer.max_steps),
        learning_rate=float(opt.lr), weight_decay=float(opt.weight_decay), adam_beta1=float(opt.betas[0]),
        adam_beta2=float(opt.betas[1]), adam_epsilon=float(opt.eps), max_grad_norm=float(opt.max_grad_norm),
        optim="adamw_torch", lr_scheduler_type=str(opt.scheduler.type),
        warmup_steps=float(opt.scheduler.warmup_ratio),  # a float below 1 is a ratio of the total steps
        logging_steps=1, report_to="none", save_strategy="no", eval_strategy="no", use_cpu=device == "cpu",
        bf16=device == "cuda",
        seed=int(cfg.seed), dataloader_num_workers=0, disable_tqdm=True,
    )


def run_baseline(cfg: Any, path: str, device: str) -> Result:
    import torch
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback

    from thinker.models.loading import load_tokenizer

    tokenizer = load_tokenizer(path)
    dataset = baseline_dataset(cfg, tokenizer)
    cuda_peak_bytes(reset=True)  # from before loading, as for ours (whose loading happens inside train())
    model = baseline_model(cfg, path, device)
    result = Result(BASELINE, 0.0)

    class CountingTrainer(Trainer):
        # counted where a batch is consumed: the accelerate loader fetches one batch ahead of use
        def training_step(self, model: Any, inputs: dict[str, torch.Tensor], *rest: Any, **kw: Any) -> Any:
            result.tokens += int(inputs["attention_mask"].sum())
            result.step_tokens.append(int(inputs["attention_mask"].sum()))
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
            model=model, args=baseline_arguments(cfg, out_dir, device), train_dataset=dataset,
            data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
            callbacks=[StepTimer()],
        )
        with contextlib.redirect_stdout(io.StringIO()), watch_others(result):  # it prints its logs there
            started = time.perf_counter()
            trainer.train()
            result.seconds = time.perf_counter() - started
            result.peak_bytes = cuda_peak_bytes()
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
            result.step_tokens.append(sum(len(r) for r in rows))
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
        cuda_peak_bytes(reset=True)  # our loading happens inside train(): the peak below includes it
        report = train(cfg, Path(run_dir), session=None, callbacks=(ours_recorder(result),))
        result.peak_bytes = cuda_peak_bytes()
    quiet()  # train() resets Lightning's loggers
    result.seconds = report.metrics["train_seconds"]
    steps = int(report.metrics["optimizer_steps"])
    assert len(result.losses) == steps * int(cfg.trainer.grad_accum), "a batch was not counted"
    return result


# ---------------------------------------------------------------- rounds and report


def print_table(results: list[Result]) -> None:
    print(f"{'':28} {'tokens/s':>8} {'tokens':>7} {'examples':>8} {'fill':>5} {'seconds':>7} {'steps s':>7} "
          f"{'s/step':>6} {'ms/slot':>7} {'cpu s':>6} {'others':>6} {'final loss':>10}"
          + (f" {'peak GiB':>8}" if any(r.peak_bytes for r in results) else ""))
    for r in results:
        median_step = statistics.median(r.step_seconds) if r.step_seconds else float("nan")
        final = r.losses[-1] if r.losses else float("nan")
        steps_s = sum(r.step_seconds)
        print(f"{r.name:28} {r.tokens_per_second:8.0f} {r.tokens:7d} {r.examples:8d} {r.tokens / r.slots:5.2f} "
              f"{r.seconds:7.2f} {steps_s:7.2f} {median_step:6.2f} {1000 * steps_s / r.slots:7.3f} "
              f"{sum(r.step_cpu):6.1f} {r.others_cores:6.2f} {final:10.4f}"
              + (f" {r.peak_bytes / GIB:8.1f}" if r.peak_bytes else ""))
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


def run_variant(args: argparse.Namespace, variant: str) -> Result:
    """One run in this process (the worker side of run_in_fresh_process)."""
    cfg = compose(overrides(args, variant != "unpacked"))
    if variant == "baseline":
        result = run_baseline(cfg, args.model_path or model_path(cfg), args.device)
    else:
        result = run_ours(cfg, VARIANTS[variant])
    result.warmup_steps = args.warmup_steps if args.warmup_steps is not None else int(args.device == "cuda")
    return result


def run_in_fresh_process(args: argparse.Namespace, variant: str) -> Result:
    """Run one variant in a new interpreter and parse the JSON line it prints."""
    cmd = [sys.executable, __file__, *sys.argv[1:], "--worker", variant, "--model-path", args.model_path]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{VARIANTS[variant]} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return Result(**json.loads(lines[-1][len(RESULT_PREFIX):]))


def prepare_model(args: argparse.Namespace, folder: Path) -> str:
    """The model both sides load: the builtin tiny-qwen (built on first use), or a random Qwen2.5 shape."""
    tiny = model_path(compose(overrides(argparse.Namespace(**{**vars(args), "shape": "tiny"}), True)))
    if args.shape == "tiny":
        return tiny
    count = save_random_qwen2(args.shape, folder, tokenizer_from=tiny, device=args.device)
    print(f"random-init Qwen2.5-{args.shape} shape ({count / 1e9:.2f}B parameters) saved to {folder}", flush=True)
    return str(folder)


def run_rounds(args: argparse.Namespace) -> dict[str, list[Result]]:
    """`--repeats` rounds of baseline, ours, ours unpacked, each a fresh process; each run waits for the other
    jobs to pause (on the CPU)."""
    runs: dict[str, list[Result]] = {name: [] for name in VARIANTS.values()}
    for _ in range(args.repeats):
        for variant, name in VARIANTS.items():
            if args.device == "cpu":
                wait_for_idle(args.idle_wait)
            runs[name].append(run_in_fresh_process(args, variant))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per run")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-seq-length", type=int, default=768)
    parser.add_argument("--method", choices=("lora", "qlora"), default="lora")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--shape", choices=("tiny", *SHAPES), default="tiny",
                        help="tiny: the builtin tiny-qwen; else Qwen2.5's config of that size, random weights")
    parser.add_argument("--optimizations", default=None,
                        help="our trainer.optimizations, comma-separated (default: the config's on the CPU, "
                             "sequence_packing,fused_kernels on CUDA); packing off drops sequence_packing")
    parser.add_argument("--compile", action="store_true", help="ours with trainer.compile=true")
    parser.add_argument("--warmup-steps", type=int, default=None,
                        help="first steps left out of tokens/s (default: 1 on CUDA, where the first step "
                             "autotunes and compiles kernels; 0 on the CPU: the whole loop is timed)")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of the three runs; the fastest counts")
    parser.add_argument("--idle-wait", type=float, default=30.0,
                        help="seconds to wait at most for other jobs to leave the cores before each run")
    parser.add_argument("--worker", choices=list(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--model-path", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    quiet()
    os.chdir(ROOT)  # the config's data and corpus paths are relative to the project

    if args.worker:
        result = run_variant(args, args.worker)
        print(RESULT_PREFIX + json.dumps(asdict(result)), flush=True)
        return

    with tempfile.TemporaryDirectory() as models, tempfile.TemporaryDirectory() as shape_dir:
        os.environ.setdefault("THINKER_MODELS_DIR", models)  # reuse a models folder if one is configured
        args.model_path = prepare_model(args, Path(shape_dir))
        runs = run_rounds(args)
    # noise (other jobs, frequency changes) only ever slows a run down: the fastest run of each is its figure
    best = {name: max(rs, key=lambda r: r.tokens_per_second) for name, rs in runs.items()}
    baseline, ours = best[BASELINE], best[OURS]

    extras = " ".join(o for o in overrides(args, True) if o.startswith(("trainer.optimizations", "trainer.compile")))
    print(f"\n{args.method}, {args.shape} shape on {args.device}, batch {args.batch_size}, max length "
          f"{args.max_seq_length}, {args.steps} optimizer steps per run, "
          f"{len(train_examples(compose(overrides(args, True))))} train examples, {os.cpu_count()} cores, "
          f"ours: {extras or 'the default trainer.optimizations'}; each run a fresh process; fastest of "
          f"{args.repeats} runs each:")
    print_table(list(best.values()))
    for name, rs in runs.items():
        print(f"  {name:28} tokens/s of each run: {', '.join(f'{r.tokens_per_second:.0f}' for r in rs)}")
    print_loss_comparison(baseline, [ours, best[UNPACKED]])
    per_slot = {r.name: sum(r.step_seconds) / r.slots for r in (baseline, best[UNPACKED])}
    print(f"per position, ours packing off / baseline: {per_slot[UNPACKED] / per_slot[BASELINE]:.2f}x "
          "(goal <= 1.0)")
    if baseline.peak_bytes:
        print(f"ratio ours/baseline peak memory: {ours.peak_bytes / baseline.peak_bytes:.2f}x (goal <= 1.0)")
    if args.device == "cpu":  # others' jobs inflate wall times unequally; CPU seconds inside the steps less so
        by_cpu = {r.name: r.tokens / max(sum(r.step_cpu), 1e-9) for r in (baseline, ours, best[UNPACKED])}
        print(f"tokens per CPU second inside the steps: baseline {by_cpu[BASELINE]:.0f}, ours {by_cpu[OURS]:.0f} "
              f"({by_cpu[OURS] / by_cpu[BASELINE]:.2f}x), packing off {by_cpu[UNPACKED]:.0f} "
              f"({by_cpu[UNPACKED] / by_cpu[BASELINE]:.2f}x); per position (CPU): "
              + ", ".join(f"{1000 * sum(r.step_cpu) / r.slots:.3f} ms" for r in (baseline, ours, best[UNPACKED])))
    goal = 2.0 if args.device == "cuda" else 1.5
    print(f"ratio ours/baseline tokens/s: {ours.tokens_per_second / baseline.tokens_per_second:.2f}x "
          f"(goal >= {goal})")


if __name__ == "__main__":
    main()
