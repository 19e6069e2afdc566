"""Cognate generation on the CPU: generate() with the KV cache (CognateCache) against without it.

    python bench/cognate_generate.py                         # cognate-25m shape, 4 prompts of 64 tokens, 32 new
    python bench/cognate_generate.py --batch 8 --prompt 128 --new 64

The model is the cognate-25m specification with random weights (nothing is downloaded or built on disk); the
prompts are random token ids. Both paths decode greedily from the same prompts (the third row left-padded, as
the held-out evaluation pads a batch); the bench checks that they produce the same tokens, then prints each
path's new tokens per second and, last, the ratio cached / uncached. Without the cache every new token runs the
whole sequence through the plain layers, the memory and every ACT step again, so the ratio grows with the
length of the sequence.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
try:
    from thinker.models.adapters.cognate_model import CognateConfig, CognateForCausalLM
except ImportError:  # run from a checkout that is not pip-installed
    sys.path.insert(0, str(ROOT / "src"))
    from thinker.models.adapters.cognate_model import CognateConfig, CognateForCausalLM


def timed_generate(model: CognateForCausalLM, ids: torch.Tensor, mask: torch.Tensor, new: int,
                   use_cache: bool) -> tuple[torch.Tensor, float]:
    started = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                             do_sample=False, use_cache=use_cache, pad_token_id=0, eos_token_id=None)
    return out, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4, help="prompts per generate() call (default 4)")
    parser.add_argument("--prompt", type=int, default=64, help="prompt tokens (default 64)")
    parser.add_argument("--new", type=int, default=32, help="new tokens per prompt (default 32)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    config = CognateConfig()  # the cognate-25m specification
    model = CognateForCausalLM(config).eval()
    ids = torch.randint(3, config.vocab_size, (args.batch, args.prompt), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    if args.batch > 2:
        mask[2, : args.prompt // 3] = 0  # a shorter prompt, left-padded

    timed_generate(model, ids[:, -8:], mask[:, -8:], 2, use_cache=True)  # warm-up: first-call allocations
    cached, cached_s = timed_generate(model, ids, mask, args.new, use_cache=True)
    uncached, uncached_s = timed_generate(model, ids, mask, args.new, use_cache=False)
    same = torch.equal(cached, uncached)
    tokens = args.batch * args.new
    print(f"cognate-25m ({model.num_parameters():,} parameters, random weights), CPU, {args.threads} threads; "
          f"{args.batch} prompts x {args.prompt} tokens, {args.new} new tokens each, greedy")
    print(f"{'path':<10}{'seconds':>10}{'new tokens/s':>14}")
    print(f"{'uncached':<10}{uncached_s:>10.2f}{tokens / uncached_s:>14.1f}")
    print(f"{'cached':<10}{cached_s:>10.2f}{tokens / cached_s:>14.1f}")
    print(f"same greedy tokens: {'yes' if same else 'NO'}")
    print(f"cached / uncached tokens/s: {uncached_s / cached_s:.1f}x")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
