"""The local backend's speed and memory switches, applied to a loaded (and LoRA-wrapped) model.

Each follows the config, each falls back cleanly where it cannot apply, and none changes what is computed
beyond float rounding (docs/backends/local.md, "Speed and memory"):

- packed rows (trainer.optimizations sequence_packing): attention that never computes a block across two
  examples (thinker.backends.local.packed_attention: flex_attention on CUDA, per-example SDPA elsewhere);
  flash_attention keeps flash-attn's own varlen path;
- `fused_kernels`: the loss from the last hidden states, never the full-vocabulary logits
  (thinker.backends.local.losses: Liger's kernel on CUDA when installed, chunks otherwise);
- `trainer.compile`: torch.compile of each decoder layer in place (parameter names, checkpoints and saved
  weights unchanged); a layer the compiler cannot handle runs eagerly;
- gradient checkpointing (trainer.optimizations gradient_checkpointing) is applied with the method
  (thinker.backends.local.training_model.apply_method), so compiled layers are the checkpointed ones.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("thinker")


@dataclass
class Speedups:
    attention: str | None = None  # the attention implementation packed rows use (None: the model's own)
    hidden_state_loss: Any = None  # thinker.backends.local.losses.HiddenStateLoss, or None: the logits path
    compiled_layers: int = 0
    notes: list[str] = field(default_factory=list)  # what was asked for and could not apply, and why

    def summary(self) -> str:
        parts = [f"packed attention {self.attention}" if self.attention else None,
                 f"loss {self.hidden_state_loss.kernel}" if self.hidden_state_loss is not None else None,
                 f"{self.compiled_layers} layers compiled" if self.compiled_layers else None]
        return ", ".join(p for p in parts if p) or "none"


def decoder_layers(model: Any) -> list[Any]:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    return list(getattr(decoder, "layers", None) or [])


def compile_layers(model: Any) -> int:
    """torch.compile each decoder layer in place (nn.Module.compile keeps the module and its parameter names);
    returns how many. A graph the compiler cannot build falls back to eager instead of failing the run."""
    import torch._dynamo

    torch._dynamo.config.suppress_errors = True
    layers = decoder_layers(model)
    for layer in layers:
        layer.compile()
    return len(layers)


def apply_speedups(model: Any, cfg: Any, device: str) -> Speedups:
    """Switch `model` (after apply_method) to what cfg.trainer asks for on `device`."""
    from thinker.backends.local.losses import HiddenStateLoss
    from thinker.backends.local.packed_attention import use_packed_attention

    optimizations = {str(o) for o in cfg.trainer.optimizations}
    out = Speedups()
    if "sequence_packing" in optimizations and "flash_attention" not in optimizations:
        out.attention = use_packed_attention(model, device)
    if "fused_kernels" in optimizations:
        why_not = HiddenStateLoss.supports(model)
        if why_not is None:
            out.hidden_state_loss = HiddenStateLoss(model, device)
        else:
            out.notes.append(f"fused_kernels: the loss comes from the logits, as {why_not}")
    if bool(cfg.trainer.get("compile", False)):
        out.compiled_layers = compile_layers(model)
        if not out.compiled_layers:
            out.notes.append("trainer.compile: the model has no decoder layers to compile")
    for note in out.notes:
        log.warning("%s", note)
    log.info("speedups: %s", out.summary())
    return out
