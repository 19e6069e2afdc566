"""objective=dpo on the local backend vs TRL's DPOTrainer: training tokens per second and peak memory.

    python bench/dpo.py                     # 48 pairs, batch 4, one epoch (12 steps), LoRA, on this machine
    python bench/dpo.py --pairs 96 --batch-size 8 --device cuda

Both sides train LoRA adapters (rank 8, alpha 16, every linear layer, no dropout) on the builtin tiny-qwen with the
sigmoid loss at beta 0.1, the reference being the base with the adapters off, on the same first `--pairs` pairs of
data/preference/claims_pairs.jsonl (text prompts rendered as thinker renders them, the completion ending
with the end-of-sequence token), for exactly one epoch of `--batch-size` pairs a step, AdamW at the same
constant learning rate, no held-out evaluation, no checkpoints on TRL's side (thinker writes its periodic
checkpoints inside fit, as a real run does). Each side runs in its own process, so its peak memory is its own:
the process's peak resident memory on the CPU, torch.cuda.max_memory_allocated on a GPU.

tokens/s: every non-padding token of both rows of every pair of the epoch (the same for both sides: one
epoch each), over the seconds of the training loop only (Lightning's fit, trainer.train()); loading the model
and tokenising are not timed. The last line is the ratio of thinker's tokens/s to TRL's.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from _common import compose, quiet, run_sides_in_children

LR = 1e-3
BETA = 0.1


def overrides(args: argparse.Namespace, run_dir: Path) -> list[str]:
    return ["experiment=claims_dpo", "logger=none", "callbacks=none", f"data.max_examples={args.pairs}",
            "data.validation_split=0", "trainer.evaluations=0", f"trainer.batch_size={args.batch_size}",
            "trainer.max_steps=-1", "trainer.epochs=1", "trainer.grad_accum=1", f"optimizer.lr={LR}",
            "optimizer.scheduler.type=constant", "optimizer.scheduler.warmup_ratio=0", "method.rank=8",
            "method.alpha=16", "method.dropout=0", f"objective.beta={BETA}", "trainer.max_seq_length=1024",
            f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}", f"output.dir={run_dir}"]


def epoch_tokens(cfg, tokenizer) -> int:
    from thinker.data.source import effective_data_path
    from thinker.tasks import task_of
    from thinker.tasks.preference import tokenize_pairs

    pairs = task_of(cfg.data).read(effective_data_path(cfg, "."), cfg.data, cfg.data.max_examples)
    kept, _ = tokenize_pairs(tokenizer, pairs, int(cfg.trainer.max_seq_length))
    return sum(len(c) + len(r) for c, r in kept)


def peak_memory_mb(device: str) -> float:
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def run_thinker(args: argparse.Namespace) -> dict:
    from thinker.backends.local.backend import train

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(overrides(args, Path(tmp)))
        if args.device == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats()
        report = train(cfg, Path(tmp))  # objective=dpo: thinker.backends.local.dpo
        tokens = epoch_tokens(cfg, report.objects["tokenizer"])
        losses = [h["loss"] for h in report.extra["dpo_history"]]
        return {"side": "thinker", "seconds": report.metrics["train_seconds"], "tokens": tokens,
                "steps": int(report.metrics["optimizer_steps"]), "loss": sum(losses) / len(losses),
                "peak_mb": peak_memory_mb(args.device)}


def run_trl(args: argparse.Namespace) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    from thinker.data.tokenize import render_prompt
    from thinker.models.loading import load_causal_lm, load_tokenizer, resolve_model_path
    from thinker.paths import resolve_input
    from thinker.tasks import task_of

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(overrides(args, Path(tmp)))
        path = resolve_model_path(cfg.model, int(cfg.seed), [resolve_input(p) for p in cfg.model.tokenizer_corpus])
        tokenizer = load_tokenizer(path)
        torch.manual_seed(int(cfg.seed))
        model = load_causal_lm(path, method="lora", quant=None, dtype="fp32")
        pairs = task_of(cfg.data).read(resolve_input(str(cfg.data.path)), cfg.data, cfg.data.max_examples)
        data = Dataset.from_list([{"prompt": render_prompt(p.prompt), "chosen": p.chosen, "rejected": p.rejected}
                                  for p in pairs])
        config = DPOConfig(output_dir=tmp, beta=BETA, loss_type=["sigmoid"], learning_rate=LR,
                           lr_scheduler_type="constant", warmup_steps=0, per_device_train_batch_size=args.batch_size,
                           gradient_accumulation_steps=1, num_train_epochs=1, max_length=1024, report_to=[],
                           save_strategy="no", logging_steps=10_000, use_cpu=args.device != "cuda", bf16=False,
                           disable_dropout=True, seed=int(cfg.seed), max_grad_norm=1.0)
        lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
        trainer = DPOTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer,
                             peft_config=lora)
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - started
        tokens = epoch_tokens(cfg, tokenizer)
        return {"side": "TRL DPOTrainer", "seconds": seconds, "tokens": tokens, "steps": result.global_step,
                "loss": result.training_loss, "peak_mb": peak_memory_mb(args.device)}  # the mean over the steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--side", choices=["thinker", "trl"], help=argparse.SUPPRESS)  # one side, in a child
    args = parser.parse_args(argv)
    quiet()
    if args.side:
        result = run_thinker(args) if args.side == "thinker" else run_trl(args)
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    rows = run_sides_in_children(__file__, list(argv or sys.argv[1:]), ("trl", "thinker"))
    if rows is None:
        return 1
    print(f"DPO, LoRA on tiny-qwen, {args.pairs} pairs x 1 epoch, batch {args.batch_size}, {args.device}")
    print(f"{'side':<16}{'steps':>6}{'seconds':>9}{'tokens/s':>10}{'peak MB':>9}{'mean loss':>10}")
    for r in rows:
        print(f"{r['side']:<16}{r['steps']:>6}{r['seconds']:>9.2f}{r['tokens'] / r['seconds']:>10.0f}"
              f"{r['peak_mb']:>9.0f}{r['loss']:>10.4f}")
    trl, ours = rows
    ratio = (ours["tokens"] / ours["seconds"]) / (trl["tokens"] / trl["seconds"])
    print(f"tokens/s ratio thinker / TRL: {ratio:.2f}x (peak memory {ours['peak_mb'] / trl['peak_mb']:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
