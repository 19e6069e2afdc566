"""Peak memory of training a ~100M-parameter Qwen2 model with full fine-tuning, LoRA and QLoRA on the CPU.

    python bench/memory.py                  # all four variants, 2 steps each
    python bench/memory.py --steps 3 --variants lora-bf16 qlora
    python bench/memory.py --device cuda --shape 7b --batch-size 4 --seq-len 1024 --variants lora-bf16 qlora

On CUDA (--device cuda) each variant's peak is torch.cuda.max_memory_allocated (loading, and training alone),
every variant computes under bf16 autocast (Lightning's bf16-mixed), and --shape 0.5b / 1.5b / 7b builds
Qwen2.5's config of that size with random weights (bench/_common.py; no hub). There, lora-bf16 is the
baseline as users write it (HF + PEFT: the base in bf16, the loss from the logits); lora and qlora are ours:
the local backend's loading (frozen base in bf16, adapters fp32), the switches of --optimizations (default
fused_kernels: the loss never holds the full logits) and its weighted loss.

A random-initialised Qwen2 model (hidden 768, 12 layers, 12 heads / 4 KV heads, MLP 2048, vocab 32000,
tied embeddings: ~100M parameters) is saved once with save_pretrained (safetensors). Each variant then
runs in a FRESH Python process, so one variant's peak cannot hide in another's: it imports everything,
notes its resident memory (RSS), loads the model with thinker.models.loading.load_causal_lm, applies the
method as the local backend does (thinker.backends.local.training_model.apply_method: peft all-linear rank 16,
and prepare_model_for_kbit_training for qlora) and runs a few training steps (forward, backward, AdamW
step) on a random batch of 2 x 256 tokens.

    full       every weight trains, fp32
    lora       LoRA on an fp32 base (what the local backend loads today)
    lora-bf16  LoRA on a bf16 base: the reference of the goal "qlora <= 0.4x lora in bf16"
    qlora      LoRA on an NF4 (double-quantised) base, fp32 compute
    qlora-gc   (only with --variants) qlora with gradient checkpointing, which the local backend enables
               on a GPU only

Time: bf16 matrix products on a CPU without AVX512-BF16 are slow (here the backward one is ~60x slower
than fp32), so lora-bf16 takes most of the run (~5 min for 2 steps on 2 cores).

By default the processes run with glibc's default allocator settings, as a user's would; with
--fixed-mmap-threshold, glibc returns freed large blocks to the system at once, so the peaks show the
tensors alive at once rather than what the heap kept from earlier steps.

Reported, in MiB above the RSS after imports: the peak while loading, the RSS once loaded, the peak while
training (Linux lets a process reset its high-water mark, /proc/self/clear_refs), and the overall peak.
Also the bytes of the weights (state_dict tensors, 4-bit storage and quantisation state included) and of
the trainable state (gradients + optimizer state). The last line is the overall-peak ratio of qlora to
lora-bf16 (goal <= 0.4).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import ROOT, SHAPES, compose, cuda_peak_bytes, quiet, save_random_qwen2

ARCH = {
    "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "num_key_value_heads": 4,
    "intermediate_size": 2048, "vocab_size": 32000, "max_position_embeddings": 1024,
    "tie_word_embeddings": True,
}
# variant -> (thinker method, dtype of the unquantised weights)
VARIANTS = {
    "full": ("full", "fp32"),
    "lora": ("lora", "fp32"),
    "lora-bf16": ("lora", "bf16"),
    "qlora": ("qlora", "fp32"),
    "qlora-gc": ("qlora", "fp32"),  # not run by default: what gradient checkpointing would save
}
DEFAULT_VARIANTS = ["full", "lora", "lora-bf16", "qlora"]
LABELS = {
    "full": "full (fp32)", "lora": "lora (fp32 base)", "lora-bf16": "lora (bf16 base)",
    "qlora": "qlora (nf4 base, fp32 compute)", "qlora-gc": "qlora + gradient checkpointing",
}
RESULT_PREFIX = "RESULT "
MIB = 1024 * 1024
# glibc raises its mmap threshold (up to 32 MiB) each time a large block is freed, after which freed
# tensors stay in the heap and in RSS; --fixed-mmap-threshold pins it so RSS follows live tensors.
FIXED_MMAP_THRESHOLD = "131072"


# ---------------------------------------------------------------- resident memory (Linux /proc)


def rss_bytes() -> int:
    return _status_kib("VmRSS") * 1024


def peak_bytes() -> int:
    """High-water mark of RSS since the process started or since the last reset_peak()."""
    try:
        return _status_kib("VmHWM") * 1024
    except (OSError, AttributeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def reset_peak() -> bool:
    """Make the high-water mark the current RSS (Linux >= 4.0), so one phase's peak can be read alone."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    return int(match.group(1))  # type: ignore[union-attr]


# ---------------------------------------------------------------- the model


def save_random_model(folder: Path) -> int:
    """Save a random-initialised ~100M Qwen2 model into `folder`; return its parameter count."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(Qwen2Config(**ARCH), dtype=torch.float32)
    model.save_pretrained(folder, safe_serialization=True)
    return sum(p.numel() for p in model.parameters())


def unique_bytes(tensors: Any) -> int:
    """Bytes of distinct storages (tied weights appear twice in a state_dict but are stored once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        if hasattr(t, "untyped_storage"):
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


# ---------------------------------------------------------------- one variant (runs in its own process)


def cuda_worker(variant: str, model_dir: str, args: argparse.Namespace) -> dict[str, Any]:
    """One variant on CUDA: peaks from torch.cuda.max_memory_allocated, bf16 autocast throughout."""
    import torch

    from thinker.backends.local.module import FineTuneModule
    from thinker.backends.local.optimizers import build_optimizer
    from thinker.backends.local.speedups import apply_speedups
    from thinker.backends.local.training_model import apply_method, qlora_settings
    from thinker.models.loading import count_parameters, load_causal_lm

    method_name, _ = VARIANTS[variant]
    ours = variant != "lora-bf16"
    optimizations = [o for o in args.optimizations.split(",") if o] if ours else []
    if variant == "qlora-gc":
        optimizations.append("gradient_checkpointing")
    cfg = compose([f"method={method_name}", "optimizer=adamw", "trainer.accelerator=gpu", "trainer.precision=bf16",
                   f"trainer.optimizations=[{','.join(['sequence_packing', *optimizations])}]"])
    cuda_peak_bytes(reset=True)
    quant = qlora_settings(cfg) if method_name == "qlora" else None
    dtype = "fp32" if method_name == "full" else "bf16"  # a full fine-tune keeps fp32 master weights
    model = load_causal_lm(model_dir, method=method_name, quant=quant, dtype=dtype, device_map={"": 0})
    model = apply_method(model, cfg.method, checkpointing="gradient_checkpointing" in optimizations)
    speedups = apply_speedups(model, cfg, "cuda") if ours else None
    model.train()
    load_peak = cuda_peak_bytes(reset=True)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(cfg.optimizer, params, "cuda")
    vocab = model.config.vocab_size if hasattr(model, "config") else model.get_base_model().config.vocab_size
    ids = torch.randint(0, vocab, (args.batch_size, args.seq_len), generator=torch.Generator().manual_seed(0)).cuda()
    batch = {"input_ids": ids, "labels": ids, "weights": torch.ones_like(ids, dtype=torch.float32),
             "position_ids": torch.arange(args.seq_len, device="cuda").expand_as(ids)}
    module = FineTuneModule(model, cfg.optimizer, 1, "cuda",
                            hidden_state_loss=speedups.hidden_state_loss if speedups else None)
    started = time.perf_counter()
    for _ in range(args.steps):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            if ours:
                weighted, _losses = module.weighted_and_token_losses(batch)
                loss = weighted / (args.batch_size * (args.seq_len - 1))
            else:  # HF + PEFT as users write it: the model's own loss from the full logits
                loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        optimizer.step()
        trainable_state = unique_bytes([p.grad for p in params if p.grad is not None]) + unique_bytes(
            v for state in optimizer.state.values() for v in state.values())
        optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / args.steps
    train_peak = cuda_peak_bytes()
    trainable, total = count_parameters(model)
    return {
        "variant": variant, "trainable": trainable, "total": total, "base_rss": 0,
        "weights": unique_bytes(model.state_dict().values()), "trainable_state": trainable_state,
        "load_peak": load_peak, "loaded": unique_bytes(model.state_dict().values()), "train_peak": train_peak,
        "peak": max(load_peak, train_peak), "seconds_per_step": seconds, "loss": float(loss),
        "speedups": speedups.summary() if speedups else "HF + PEFT",
    }


def worker(variant: str, model_dir: str, steps: int, batch: int, seq_len: int) -> dict[str, Any]:
    import bitsandbytes  # noqa: F401  (imported before the baseline, like everything else)
    import peft  # noqa: F401
    import torch
    import transformers.models.qwen2.modeling_qwen2  # noqa: F401  (transformers imports it lazily)

    from thinker.backends.local.optimizers import build_optimizer
    from thinker.backends.local.training_model import apply_method, qlora_settings
    from thinker.models.loading import count_parameters, load_causal_lm

    method_name, dtype = VARIANTS[variant]
    cfg = compose([f"method={method_name}", "optimizer=adamw"])
    base = rss_bytes()
    can_reset = reset_peak()

    quant = qlora_settings(cfg) if method_name == "qlora" else None
    model = load_causal_lm(model_dir, method=method_name, quant=quant, dtype=dtype)
    # qlora-gc: what trainer.optimizations=[...,gradient_checkpointing] (the GPU profiles' default) saves
    model = apply_method(model, cfg.method, checkpointing=variant == "qlora-gc")
    model.train()
    load_peak, loaded = peak_bytes(), rss_bytes()
    reset_peak()

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(cfg.optimizer, params, "cpu")
    ids = torch.randint(0, ARCH["vocab_size"], (batch, seq_len), generator=torch.Generator().manual_seed(0))
    started = time.perf_counter()
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        optimizer.step()
        trainable_state = unique_bytes([p.grad for p in params if p.grad is not None]) + unique_bytes(
            v for state in optimizer.state.values() for v in state.values())
        optimizer.zero_grad(set_to_none=True)
    seconds = (time.perf_counter() - started) / steps

    trainable, total = count_parameters(model)
    return {
        "variant": variant, "trainable": trainable, "total": total, "base_rss": base,
        "weights": unique_bytes(model.state_dict().values()), "trainable_state": trainable_state,
        "load_peak": load_peak - base, "loaded": loaded - base,
        "train_peak": peak_bytes() - base if can_reset else float("nan"),
        "peak": max(load_peak, peak_bytes()) - base,  # the reset lowered ru_maxrss too: combine the phases
        "seconds_per_step": seconds, "loss": float(loss),
    }


def run_variant(variant: str, model_dir: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one variant in a fresh interpreter and parse the JSON line it prints."""
    cmd = [sys.executable, __file__, "--worker", variant, "--model-dir", model_dir, "--steps", str(args.steps),
           "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len), "--device", args.device,
           "--optimizations", args.optimizations]
    env = dict(os.environ)
    if args.fixed_mmap_threshold:
        env["MALLOC_MMAP_THRESHOLD_"] = FIXED_MMAP_THRESHOLD
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"variant {variant} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


# ---------------------------------------------------------------- report


def print_table(results: list[dict[str, Any]]) -> None:
    def mib(x: float) -> str:
        return f"{x / MIB:8.0f}"

    print(f"{'':31} {'trainable':>11} {'weights':>8} {'grad+opt':>8} {'load pk':>8} {'loaded':>8} "
          f"{'train pk':>8} {'peak':>8} {'s/step':>7}")
    for r in results:
        print(f"{LABELS[r['variant']]:31} {r['trainable']:11,d} {mib(r['weights'])} {mib(r['trainable_state'])} "
              f"{mib(r['load_peak'])} {mib(r['loaded'])} {mib(r['train_peak'])} {mib(r['peak'])} "
              f"{r['seconds_per_step']:7.1f}")
    print("MiB above the RSS after imports (CUDA: allocated bytes), except weights (state_dict tensors,")
    print("quantisation state included)")
    print("and grad+opt (gradients + AdamW state of the trainable parameters). load pk: peak while loading;")
    print("loaded: RSS once loaded; train pk: peak during the steps; peak: the process's overall peak.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2, help="training steps per variant (bf16 on a CPU is slow)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=DEFAULT_VARIANTS)
    parser.add_argument("--fixed-mmap-threshold", action="store_true",
                        help=f"run the variants with MALLOC_MMAP_THRESHOLD_={FIXED_MMAP_THRESHOLD} (see above)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--shape", choices=("100m", *SHAPES), default="100m",
                        help="100m: the ~100M model above; else Qwen2.5's config of that size, random weights")
    parser.add_argument("--optimizations", default="fused_kernels",
                        help="CUDA: our trainer.optimizations besides sequence_packing (comma-separated)")
    parser.add_argument("--worker", choices=list(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    quiet()

    if args.worker and args.device == "cuda":
        result = cuda_worker(args.worker, args.model_dir, args)
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return
    if args.worker:
        result = worker(args.worker, args.model_dir, args.steps, args.batch_size, args.seq_len)
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return

    with tempfile.TemporaryDirectory() as model_dir:
        if args.shape == "100m":
            n_params = save_random_model(Path(model_dir))
            arch = ARCH
        else:
            n_params = save_random_qwen2(args.shape, Path(model_dir), device=args.device)
            arch = f"Qwen2.5-{args.shape} shape"
        allocator = f"MALLOC_MMAP_THRESHOLD_={FIXED_MMAP_THRESHOLD}" if args.fixed_mmap_threshold else "default"
        where = "torch.cuda.max_memory_allocated" if args.device == "cuda" else f"RSS, glibc malloc {allocator}"
        print(f"random-init Qwen2 {arch}: {n_params:,} parameters; batch {args.batch_size} x {args.seq_len} "
              f"tokens, {args.steps} steps per variant, each in a fresh process on {args.device}; {where}")
        results = [run_variant(v, model_dir, args) for v in args.variants]
    if args.device == "cuda":
        LABELS["lora-bf16"] = "HF + PEFT lora (bf16 base)"
        LABELS["lora"] = "ours lora (bf16 base)"
        for r in results:
            print(f"  {LABELS[r['variant']]}: {r['speedups']}")
    print_table(results)
    by_name = {r["variant"]: r for r in results}
    if "qlora" in by_name and "lora-bf16" in by_name:
        q, ref = by_name["qlora"], by_name["lora-bf16"]
        print(f"ratio qlora/lora-bf16 training-phase peak: {q['train_peak'] / ref['train_peak']:.2f}x")
        print(f"ratio qlora/lora-bf16 peak memory: {q['peak'] / ref['peak']:.2f}x (goal <= 0.4)")


if __name__ == "__main__":
    main()
