"""The model a local run trains: the start point (a registered fine-tune merged into its base), the tokenizer,
the base loaded in the training precision (4-bit for QLoRA) and the method applied (full / LoRA / QLoRA),
seeded. Shared by every local objective (sft, dpo, grpo), and by the benches that build the same model.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from thinker.errors import ThinkerError
from thinker.paths import resolve_input

log = logging.getLogger("thinker")


def base_weights_dtype(method: str, precision: str) -> str:
    """Frozen base weights load in the training precision (bf16 halves a GPU's memory for LoRA); a full
    fine-tune keeps fp32 master weights and lets Lightning's mixed precision cast per operation."""
    return "fp32" if method == "full" else precision


def apply_method(model: Any, method: DictConfig, checkpointing: bool) -> Any:
    """full: every weight trains. lora/qlora: peft adapters on a frozen (for qlora 4-bit) base.

    `checkpointing` (trainer.optimizations has gradient_checkpointing) recomputes activations in backward:
    less memory for more compute. The non-reentrant variant needs no input-grad hooks for frozen bases.
    """
    name = str(method.name)
    checkpoint_kwargs = {"use_reentrant": False}
    if name == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpoint_kwargs)
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if name == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing,
                                                gradient_checkpointing_kwargs=checkpoint_kwargs)
    elif checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpoint_kwargs)
    targets = str(method.target_modules)
    target_modules: Any = targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()]
    config = LoraConfig(
        r=int(method.rank), lora_alpha=float(method.alpha), lora_dropout=float(method.dropout),
        target_modules=target_modules, bias=str(method.bias), task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        raise ThinkerError(
            f"LoRA could not be applied: {exc}", f"method.target_modules={targets}",
            "use all-linear or module names that exist in this model (e.g. q_proj,v_proj)", stage="train",
        ) from exc


def qlora_settings(cfg: DictConfig) -> dict[str, Any]:
    """The 4-bit settings: method.quant_type / double_quant, compute in method.compute_dtype (null: the
    training precision). Saved with the adapter, so evaluation and merge rebuild exactly this base."""
    compute = cfg.method.compute_dtype if cfg.method.compute_dtype is not None else cfg.trainer.precision
    return {"quant_type": str(cfg.method.quant_type), "double_quant": bool(cfg.method.double_quant),
            "compute_dtype": str(compute)}


def load_training_model(cfg: DictConfig) -> tuple[Path, Any, Any, dict[str, Any] | None]:
    """(start-point path, tokenizer, model with the method applied, 4-bit settings or None), seeded."""
    import lightning.pytorch as pl
    import torch

    from thinker.models.adapter_weights import training_start_point
    from thinker.models.loading import count_parameters, load_causal_lm, load_tokenizer, resolve_model_path

    method, precision = str(cfg.method.name), str(cfg.trainer.precision)
    optimizations = {str(o) for o in cfg.trainer.optimizations}
    # model: a registered LoRA fine-tune starts from its parent merged into its base (not the plain base)
    path = resolve_model_path(cfg.model, int(cfg.seed), [resolve_input(p) for p in cfg.model.tokenizer_corpus])
    path = training_start_point(path)
    # seeded after the model folder exists: building it on first use must not shift the adapters' init
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    tokenizer = load_tokenizer(path, cfg.model.revision)
    quant = qlora_settings(cfg) if method == "qlora" else None
    model = load_causal_lm(path, method=method, quant=quant, dtype=base_weights_dtype(method, precision),
                           revision=cfg.model.revision,
                           attn_implementation="flash_attention_2" if "flash_attention" in optimizations else "sdpa")
    # the adapters' initial values depend on the seed alone (what backend=tinker asks its service for too)
    torch.manual_seed(int(cfg.seed))
    model = apply_method(model, cfg.method, checkpointing="gradient_checkpointing" in optimizations)
    trainable, total = count_parameters(model)
    log.info("parameters: %s trainable of %s total (%.2f%%)", f"{trainable:,}", f"{total:,}",
             100.0 * trainable / max(total, 1))
    return path, tokenizer, model, quant
