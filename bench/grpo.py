"""objective=grpo on the local backend vs TRL's GRPOTrainer: optimizer steps and sampled tokens per second.

    python bench/grpo.py                       # 8 steps of 4 prompts x 8 completions of 32 tokens, LoRA, CPU
    python bench/grpo.py --steps 20 --device cuda

Both sides train LoRA adapters (rank 8, alpha 16, every linear layer, no dropout) on the builtin tiny-qwen from
the same prompts (the first of data/gsm8k/train.jsonl, rendered as thinker renders them), `--prompts` prompts a
step with `--group` completions each, sampled at temperature 1.0 (top_p 1, no top-k) up to `--tokens` new tokens,
scored by the same reward (thinker's length_penalty, scale 400 characters: it differs within a group, so every
step has advantages to learn from), group-normalised advantages, one policy update per generation, no KL term
(beta 0), AdamW at the same constant learning rate, no checkpoints on TRL's side (thinker writes its periodic
checkpoints inside fit, as a real run does). Each side runs in its own process.

steps/s: optimizer steps over the seconds of the training loop only (Lightning's fit, trainer.train()); loading
the model is not timed. tokens/s: completion tokens sampled (each up to and including its end-of-sequence
token) per second of that loop. The last line is the ratio of thinker's to TRL's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from _common import compose, quiet, run_sides_in_children

LR = 1e-3
SCALE_CHARS = 400  # a completion of 32 tokens is 60-150 characters: penalties that differ within a group


def overrides(args: argparse.Namespace, run_dir: Path) -> list[str]:
    return ["objective=grpo", "data=gsm8k", "logger=none", "callbacks=none", "validation.pytest.enabled=false",
            f"data.max_examples={args.prompts * args.steps + 8}", "data.shuffle=false",
            f"objective.rewards=[{{length_penalty:{{weight:1.0,scale_chars:{SCALE_CHARS}}}}}]", f"objective.group_size={args.group}",
            f"objective.max_new_tokens={args.tokens}", "objective.temperature=1.0", "objective.top_p=1.0",
            "objective.table_every=0", f"trainer.batch_size={args.prompts}", f"trainer.max_steps={args.steps}",
            "trainer.evaluations=1", f"optimizer.lr={LR}", "optimizer.scheduler.type=constant",
            "optimizer.scheduler.warmup_ratio=0", "method=lora", "method.rank=8", "method.alpha=16",
            "method.dropout=0", f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}",
            f"output.dir={run_dir}"]


def run_thinker(args: argparse.Namespace) -> dict:
    from thinker.backends.local.grpo import train_grpo

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(overrides(args, Path(tmp)))
        report = train_grpo(cfg, Path(tmp))
        history = report.extra["grpo_history"]
        return {"side": "thinker", "seconds": report.metrics["train_seconds"],
                "steps": int(report.metrics["optimizer_steps"]), "tokens": report.metrics["sampled_tokens"],
                "reward": sum(h["reward/mean"] for h in history) / len(history)}


def run_trl(args: argparse.Namespace) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from thinker.models.loading import load_causal_lm, load_tokenizer, resolve_model_path
    from thinker.paths import resolve_input
    from thinker.rewards.builtin import LengthPenalty
    from thinker.rewards.prompts import training_prompts

    penalty = LengthPenalty(scale_chars=SCALE_CHARS)

    def reward(prompts: list, completions: list, **_: object) -> list[float]:
        return [penalty(p, c, None) for p, c in zip(prompts, completions, strict=True)]

    class CountTokens(TrainerCallback):
        """Completion tokens sampled: each step's mean completion length x its completions (logged every step)."""

        tokens = 0.0

        def on_log(self, _args, state, control, logs=None, **kwargs):  # noqa: ANN001, ANN003
            if logs and "completions/mean_length" in logs:
                CountTokens.tokens += logs["completions/mean_length"] * args.prompts * args.group

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(overrides(args, Path(tmp)))
        path = resolve_model_path(cfg.model, int(cfg.seed), [resolve_input(p) for p in cfg.model.tokenizer_corpus])
        tokenizer = load_tokenizer(path)
        tokenizer.padding_side = "left"
        torch.manual_seed(int(cfg.seed))
        model = load_causal_lm(path, method="lora", quant=None, dtype="fp32")
        prompts, _ = training_prompts(cfg, Path(tmp), tokenizer)
        data = Dataset.from_list([{"prompt": p} for p in prompts[:args.prompts * args.steps]])
        config = GRPOConfig(output_dir=tmp, num_generations=args.group, max_completion_length=args.tokens,
                            per_device_train_batch_size=args.prompts * args.group, gradient_accumulation_steps=1,
                            num_iterations=1, temperature=1.0, top_p=1.0, top_k=0, beta=0.0,
                            scale_rewards="group", learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0,
                            max_steps=args.steps, logging_steps=1, report_to=[], save_strategy="no",
                            use_cpu=args.device != "cuda", bf16=False, disable_dropout=True, seed=int(cfg.seed),
                            max_grad_norm=1.0, shuffle_dataset=False)
        lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
        trainer = GRPOTrainer(model=model, reward_funcs=reward, args=config, train_dataset=data,
                              processing_class=tokenizer, peft_config=lora, callbacks=[CountTokens()])
        started = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - started
        rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
        return {"side": "TRL GRPOTrainer", "seconds": seconds, "steps": result.global_step,
                "tokens": CountTokens.tokens, "reward": sum(rewards) / max(1, len(rewards))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32)
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
    print(f"GRPO, LoRA on tiny-qwen, {args.steps} steps of {args.prompts} prompts x {args.group} completions "
          f"(<= {args.tokens} tokens), {args.device}")
    print(f"{'side':<18}{'steps':>6}{'seconds':>9}{'steps/s':>9}{'tokens/s':>10}{'mean reward':>13}")
    for r in rows:
        print(f"{r['side']:<18}{r['steps']:>6}{r['seconds']:>9.2f}{r['steps'] / r['seconds']:>9.3f}"
              f"{r['tokens'] / r['seconds']:>10.0f}{r['reward']:>13.4f}")
    trl, ours = rows
    steps_ratio = (ours["steps"] / ours["seconds"]) / (trl["steps"] / trl["seconds"])
    tokens_ratio = (ours["tokens"] / ours["seconds"]) / (trl["tokens"] / trl["seconds"])
    print(f"thinker / TRL: steps/s {steps_ratio:.2f}x, tokens/s {tokens_ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
