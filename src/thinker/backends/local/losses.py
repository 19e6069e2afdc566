"""The weighted completion-only loss, from logits or straight from the last hidden states.

The plain path asks the model for its logits: a (rows, length, vocabulary) tensor, in fp32 for the loss, plus
its log-softmax and its gradient, each as large again (a packed 16 x 1024 batch over Qwen's 152k vocabulary is
10 GB a copy). trainer.optimizations `fused_kernels` computes the same loss without ever holding them:

- `chunked_linear_cross_entropy`: the output layer and the cross-entropy chunk by chunk of tokens; each chunk's
  gradients (for the hidden states, and for the output weight when it trains) are computed right away and its
  logits freed, so at most one chunk's logits exist at a time. Any device; our per-token loss weights.
- on CUDA with `liger-kernel` installed, Liger's fused linear cross-entropy (Triton) does the same in fused
  kernels; it has no per-token weights, so each distinct weight's tokens go through it once and the sums are
  weighted (the weights take a handful of values: 1, the data's line weights). Imported lazily; without it
  the chunked path runs.

Both give `(weighted_sum, token_losses)`: the sum over target positions of weight x cross-entropy (what the
module backpropagates) and each position's unweighted cross-entropy (0 where the label is ignored), as the
plain path computes them (thinker.backends.local.module.token_losses), within float rounding.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812

from thinker.data.tokenize import IGNORE_INDEX

log = logging.getLogger("thinker")

# fp32 logits held at once by one chunk (elements), a chunk being this many / vocabulary tokens: 64 MB on a
# CPU; 256 MB on a GPU, where larger matrix products use it better (Qwen's 152k vocabulary: 441 tokens)
CHUNK_ELEMENTS = {"cpu": 1 << 24, "cuda": 1 << 26}
# architectures whose logits are exactly lm_head(last hidden state): no scaling, soft-capping or bias
LINEAR_HEAD_MODEL_TYPES = frozenset({"qwen2", "qwen3", "llama", "mistral"})


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """sum_i w_i * CE(hidden_i @ weight.T, target_i) without the full logits; gradients computed in forward."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                token_weights: torch.Tensor, chunk: int, grads: bool) -> tuple[torch.Tensor, torch.Tensor]:
        n = hidden.size(0)
        valid = targets != IGNORE_INDEX
        safe = targets.clamp_min(0)
        scale = token_weights.float() * valid
        losses = torch.zeros(n, dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.zeros_like(hidden) if grads and ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if grads and ctx.needs_input_grad[1] else None
        for start in range(0, n, chunk):
            end = min(start + chunk, n)
            h = hidden[start:end]
            logits = (h @ weight.t()).float()
            lse = torch.logsumexp(logits, dim=-1)
            rows = torch.arange(end - start, device=h.device)
            losses[start:end] = (lse - logits[rows, safe[start:end]]) * valid[start:end]
            if grad_hidden is None and grad_weight is None:
                continue
            # d(w * CE)/d(logits) = w * (softmax - onehot), formed in place in the logits' memory
            probs = logits.sub_(lse[:, None]).exp_()
            probs[rows, safe[start:end]] -= 1.0
            probs.mul_(scale[start:end, None])
            if grad_hidden is not None:
                grad_hidden[start:end] = (probs.to(weight.dtype) @ weight).to(hidden.dtype)
            if grad_weight is not None:
                grad_weight.add_(probs.t() @ h.float())
        ctx.mark_non_differentiable(losses)
        ctx.grad_hidden, ctx.grad_weight, ctx.weight_dtype = grad_hidden, grad_weight, weight.dtype
        return (losses * scale).sum(), losses

    @staticmethod
    def backward(ctx: Any, grad_sum: torch.Tensor, _grad_losses: torch.Tensor) -> tuple[Any, ...]:
        grad_hidden = None if ctx.grad_hidden is None else ctx.grad_hidden * grad_sum.to(ctx.grad_hidden.dtype)
        grad_weight = None if ctx.grad_weight is None else (ctx.grad_weight * grad_sum).to(ctx.weight_dtype)
        return grad_hidden, grad_weight, None, None, None, None


def chunk_size(vocabulary: int, device: str = "cpu") -> int:
    return max(1, CHUNK_ELEMENTS.get(device, CHUNK_ELEMENTS["cpu"]) // max(1, vocabulary))


def chunked_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                                 token_weights: torch.Tensor, chunk: int | None = None
                                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """hidden (..., H), weight (V, H), targets and token_weights (...): (weighted sum, per-token losses (...))."""
    shape = targets.shape
    total, losses = ChunkedLinearCrossEntropy.apply(
        hidden.reshape(-1, hidden.size(-1)), weight, targets.reshape(-1), token_weights.reshape(-1),
        chunk or chunk_size(weight.size(0), hidden.device.type), torch.is_grad_enabled())  # forward runs without grad mode
    return total, losses.view(shape)


def liger_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                               token_weights: torch.Tensor, loss_class: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Liger's fused kernel once per distinct token weight (it has none of its own); per-token losses are
    not returned by its sum reduction, so they come back as each group's mean spread over the group, which
    the module only ever sums (train_loss: the mean over target tokens)."""
    flat_h = hidden.reshape(-1, hidden.size(-1))
    flat_t, flat_w = targets.reshape(-1), token_weights.reshape(-1).float()
    valid = flat_t != IGNORE_INDEX
    losses = torch.zeros(flat_t.shape, dtype=torch.float32, device=flat_h.device)
    total = flat_h.new_zeros((), dtype=torch.float32)
    for value in torch.unique(flat_w[valid]).tolist():
        index = (valid & (flat_w == value)).nonzero(as_tuple=True)[0]
        with torch.set_grad_enabled(torch.is_grad_enabled() and value != 0.0):
            group = loss_class(reduction="sum", ignore_index=IGNORE_INDEX)(weight, flat_h[index], flat_t[index])
        group = group[0] if isinstance(group, tuple) else group
        losses[index] = group.detach().float() / index.numel()
        if value != 0.0:
            total = total + value * group.float()
    return total, losses.view(targets.shape)


def liger_loss_class() -> Any:
    """Liger's LigerFusedLinearCrossEntropyLoss, or None where liger-kernel is not installed."""
    try:
        from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss
    except ImportError:
        return None
    return LigerFusedLinearCrossEntropyLoss


def shift_left(t: torch.Tensor, fill: float) -> torch.Tensor:
    """t[:, 1:] padded back to full length: position i holds what position i predicts (token i+1)."""
    return F.pad(t[:, 1:], (0, 1), value=fill)


class HiddenStateLoss:
    """The loss straight from the decoder's last hidden states (trainer.optimizations fused_kernels), for a
    transformers causal LM (or a peft model around one) whose logits are lm_head(hidden state)."""

    def __init__(self, model: torch.nn.Module, device: str):
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.decoder = base.get_decoder()
        self.head = base.get_output_embeddings()
        self.liger = liger_loss_class() if device == "cuda" else None
        self.kernel = "liger fused linear cross-entropy" if self.liger is not None else "chunked linear cross-entropy"

    @staticmethod
    def supports(model: torch.nn.Module) -> str | None:
        """Why the hidden-state loss cannot replace this model's logits (None: it can)."""
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        config = getattr(base, "config", None)
        if getattr(config, "model_type", None) not in LINEAR_HEAD_MODEL_TYPES:
            return f"its logits are not a plain output layer ({getattr(config, 'model_type', type(base).__name__)})"
        head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
        if type(head) is not torch.nn.Linear or head.bias is not None:  # LoRA on lm_head, or a biased head
            return f"its output layer is a {type(head).__name__}"
        return None

    def __call__(self, inputs: dict[str, torch.Tensor], labels: torch.Tensor, weights: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.decoder(**inputs, use_cache=False).last_hidden_state
        targets = shift_left(labels, IGNORE_INDEX)
        token_weights = shift_left(weights, 0.0)
        if self.liger is not None and hidden.is_cuda:
            return liger_linear_cross_entropy(hidden, self.head.weight, targets, token_weights, self.liger)
        return chunked_linear_cross_entropy(hidden, self.head.weight, targets, token_weights)
