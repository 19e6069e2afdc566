"""The `cognate` family's specification (docs/decisions/0010-cognate-pretraining-path.md): its sizes, parameter
budgets and the CognateConfig settings of a model option. Light (no torch, no transformers): the registry, the
config check, the adapter (thinker.models.adapters.cognate) and the model (cognate_model) read it.

The 25M specification is fixed (an immutable model specification): SPECS holds it, the model option
conf/model/cognate-25m.yaml mirrors it (a test keeps the two equal), and building `model=cognate-25m` with any
other `arch` value is refused. Its parameter count is checked against PARAM_BUDGETS at construction; only a
config built with `param_budget=None` (tests, small experiments) skips that check.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from thinker.errors import ThinkerError

# Bump when the architecture's code changes what a given config computes: builtin folders hash it.
FORMAT_VERSION = 1
PARAM_TOLERANCE = 0.01  # the "25M ± 1%"

# The architecture keys (config.json and a model option's `arch`) with the values of the 25M specification.
SPEC_25M = MappingProxyType({
    "vocab_size": 8192,  # the locally built byte-level BPE tokenizer's size (rows beyond it stay unused)
    "d_model": 512,
    "n_heads": 8,
    "d_ff": 2096,  # 4 x d_model, widened so the whole model lands on the 25M budget
    "n_layers": 4,  # plain decoder blocks before the memory
    "act_layers": 2,  # the transition: blocks shared by every ACT step
    "max_ponder_steps": 4,
    "act_threshold": 0.99,  # a token halts when its cumulative halting probability reaches 1 - epsilon
    "ponder_weight": 0.01,  # tau: the ponder cost's weight in the loss
    "memory_slots": 64,
    "memory_chunk": 64,  # tokens per memory write; a token reads what earlier chunks wrote
    "max_seq_len": 1024,  # rotary positions: the evaluation's prompt budget, not a hard limit
    "rope_theta": 10000.0,
    "tie_word_embeddings": True,
})
SPECS: Mapping[str, Mapping[str, Any]] = MappingProxyType({"cognate-25m": SPEC_25M})
PARAM_BUDGETS: Mapping[str, int] = MappingProxyType({"cognate-25m": 25_000_000})
ARCH_KEYS = tuple(SPEC_25M)


def parameter_count(arch: Mapping[str, Any]) -> int:
    """The exact number of parameters a config builds (the model checks itself against this at construction).

    A block: two LayerNorms, q/k/v/o projections with bias, a GELU MLP with bias. The memory: the learned
    initial slots, a LayerNorm and q/k/v/o for reading, a LayerNorm and content/address projections plus a
    scalar gate for writing. ACT: one step embedding per step, a LayerNorm and the halting unit.
    """
    a = {**SPEC_25M, **dict(arch)}
    d, ff, vocab = int(a["d_model"]), int(a["d_ff"]), int(a["vocab_size"])
    block = 2 * d + 4 * (d * d + d) + 2 * d + (d * ff + ff) + (ff * d + d)
    memory = int(a["memory_slots"]) * d + 2 * d + 4 * (d * d + d) + 2 * d + 2 * (d * d + d) + (d + 1)
    act = int(a["max_ponder_steps"]) * d + 2 * d + (d + 1)
    embeddings = vocab * d * (1 if a["tie_word_embeddings"] else 2)
    return embeddings + (int(a["n_layers"]) + int(a["act_layers"])) * block + memory + act + 2 * d


def budget_range(budget: int, tolerance: float = PARAM_TOLERANCE) -> tuple[int, int]:
    return int(budget * (1 - tolerance)), int(budget * (1 + tolerance))


def check_budget(count: int, budget: int | None, tolerance: float = PARAM_TOLERANCE) -> None:
    """ValueError naming the count and the allowed range when `count` is off the budget (None: no budget)."""
    if budget is None:
        return
    low, high = budget_range(budget, tolerance)
    if not low <= count <= high:
        raise ValueError(f"this cognate specification has {count:,} parameters, outside the allowed "
                         f"{low:,}..{high:,} ({budget:,} ± {tolerance:.0%})")


def spec_violation(model_cfg: Any) -> str | None:
    """Why `model_cfg.arch` breaks its option's fixed specification, or None. Light: the config check can call it."""
    spec = SPECS.get(str(model_cfg.name))
    if spec is None:
        return None
    arch = dict(model_cfg.arch or {})
    unknown = sorted(set(arch) - set(spec))
    if unknown:
        return f"model.arch.{unknown[0]} is not a key of the {model_cfg.name} specification"
    for key, value in spec.items():
        if key in arch and arch[key] != value:
            return f"model.arch.{key}={arch[key]} differs from the fixed {model_cfg.name} specification ({value})"
    return None


def config_settings(model_cfg: Any, tokenizer: Any = None) -> dict[str, Any]:
    """CognateConfig keyword arguments for a model option: its fixed spec (refusing any other arch) or, for a
    cognate option without one, its `arch` on top of the 25M values. With a tokenizer, its special token ids."""
    name = str(model_cfg.name)
    problem = spec_violation(model_cfg)
    if problem:
        raise ThinkerError(problem, f"model={name}", "drop the model.arch override: the specification is "
                           "immutable; define a new cognate model option for another size", stage="train")
    spec = SPECS.get(name)
    settings: dict[str, Any] = dict(spec) if spec is not None else {**SPEC_25M, **dict(model_cfg.arch or {})}
    settings["param_budget"] = PARAM_BUDGETS.get(name)  # only a fixed specification has a budget
    if tokenizer is not None:
        if len(tokenizer) > int(settings["vocab_size"]):
            raise ThinkerError(f"the tokenizer has {len(tokenizer)} tokens, more than the model's vocab_size "
                               f"{settings['vocab_size']}", f"model={name}", "train the tokenizer to at most "
                               "vocab_size tokens", stage="train")
        settings.update(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                        bos_token_id=tokenizer.bos_token_id)
    return settings
