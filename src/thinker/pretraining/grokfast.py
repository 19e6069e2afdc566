"""GrokFast-EMA (Lee et al. 2024, "Grokfast: Accelerated Grokking by Amplifying Slow Gradients").

Each step, for every parameter that has a gradient g:

    ema <- alpha * ema + (1 - alpha) * g        (the first time: ema <- g, as the paper's code does)
    g   <- g + lamb * ema

The EMA is a low-pass filter of the gradient sequence; adding it back amplifies the slow components that drive
generalisation, so a model "groks" in far fewer steps (bench/grokfast.py measures it). Defaults are the
paper's (docs/decisions/0010-cognate-pretraining-path.md): alpha 0.98, lamb 2.0 (optimizer=grokfast: optimizer.grokfast_alpha,
optimizer.grokfast_lamb). Pretraining only: thinker.config.rules.grokfast_only_for_pretraining refuses it for
fine-tuning.

Two ways to use it:

    GrokFastFilter(params, alpha, lamb)   .apply() between backward and any optimizer's step; it returns the
                                          EMA's global L2 norm (the "filter norm" metric)
    GrokFastAdamW(params, lr, ..., alpha, lamb)
                                          a torch.optim.AdamW whose step() filters first, so it works
                                          unchanged with LR schedulers and with Lightning's automatic
                                          optimization (which passes step() a closure that runs backward)

Both save the EMA in state_dict(), so a resumed run continues the filter instead of restarting it.

Only the training path imports this module (it imports torch).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

DEFAULT_ALPHA = 0.98
DEFAULT_LAMB = 2.0


class GrokFastFilter:
    """The GrokFast-EMA filter over a fixed list of parameters; `apply()` filters their `.grad` in place."""

    def __init__(self, params: Iterable[torch.Tensor], alpha: float = DEFAULT_ALPHA, lamb: float = DEFAULT_LAMB):
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"GrokFast alpha must be in [0, 1), got {alpha}")
        if lamb < 0.0:
            raise ValueError(f"GrokFast lamb must be >= 0, got {lamb}")
        self.params: list[torch.Tensor] = list(params)
        self.alpha = float(alpha)
        self.lamb = float(lamb)
        # param index -> EMA; a parameter gets one the first time it has a gradient
        self.ema: dict[int, torch.Tensor] = {}
        self.steps = 0

    @torch.no_grad()
    def apply_tensor(self) -> torch.Tensor | None:
        """Filter every gradient in place; the EMA's global L2 norm as a 0-dim fp32 tensor (None: no gradient
        at all). Nothing here waits for the device, so an optimizer step can call it without a sync."""
        new, old_emas, old_grads = [], [], []
        for index, p in enumerate(self.params):
            grad = p.grad
            if grad is None:  # frozen, or unused this step: its EMA (if any) is left as it was
                continue
            if grad.is_sparse:
                raise ValueError("GrokFast does not support sparse gradients")
            ema = self.ema.get(index)
            if ema is None:
                # the paper's code starts the EMA at the first gradient: a zero start would damp the filter
                # for about 1 / (1 - alpha) steps
                self.ema[index] = grad.detach().clone()
                new.append((grad, self.ema[index]))
            else:
                old_emas.append(ema)
                old_grads.append(grad)
        if old_emas:
            torch._foreach_mul_(old_emas, self.alpha)
            torch._foreach_add_(old_emas, old_grads, alpha=1.0 - self.alpha)
        grads = old_grads + [g for g, _ in new]
        emas = old_emas + [e for _, e in new]
        if not grads:
            return None
        if self.lamb:
            torch._foreach_add_(grads, emas, alpha=self.lamb)
        self.steps += 1
        device = emas[0].device
        norms = [n.to(device=device, dtype=torch.float32) for n in torch._foreach_norm(emas)]
        return torch.linalg.vector_norm(torch.stack(norms))

    def apply(self) -> float:
        """Filter every gradient in place and return the EMA's global L2 norm (0.0 when no parameter had a
        gradient). Reading the norm waits for the device; GrokFastAdamW logs the tensor instead."""
        norm = self.apply_tensor()
        return 0.0 if norm is None else float(norm)

    def state_dict(self) -> dict[str, Any]:
        """The EMA per parameter index (the order of `params`) and the number of filtered steps."""
        return {"ema": {index: ema.detach().clone() for index, ema in self.ema.items()}, "steps": self.steps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a state_dict(); alpha and lamb stay the ones this filter was built with (the config's).
        Each EMA moves to its parameter's device and dtype."""
        ema: dict[int, torch.Tensor] = {}
        for key, tensor in state["ema"].items():
            index = int(key)
            if not 0 <= index < len(self.params):
                raise ValueError(f"GrokFast state has an EMA for parameter {index}, but there are "
                                 f"{len(self.params)} parameters: it comes from another model")
            param = self.params[index]
            if tuple(tensor.shape) != tuple(param.shape):
                raise ValueError(f"GrokFast state: the EMA of parameter {index} has shape {tuple(tensor.shape)}, "
                                 f"the parameter {tuple(param.shape)}: it comes from another model")
            ema[index] = tensor.detach().to(device=param.device, dtype=param.dtype, copy=True)
        self.ema = ema
        self.steps = int(state.get("steps", 0))


class GrokFastAdamW(torch.optim.AdamW):
    """AdamW whose step() applies the GrokFast-EMA filter to the gradients first.

    A real torch Optimizer (an AdamW), so LR schedulers, Lightning (automatic or manual optimization, gradient
    clipping, fp16 loss scaling) and checkpoints treat it as AdamW. With a closure (Lightning's automatic
    optimization) the closure runs first, then the filter, then the AdamW update; Lightning clips gradients and
    unscales fp16 ones inside that closure, so the filter sees the unscaled, clipped gradient and its
    amplification is not clipped away. A step that GradScaler skips (inf/nan) does not touch the EMA.

    `filter_norm` is the last step's EMA norm (0-dim tensor, or None before any step) to log as a metric;
    `grokfast` is the filter. state_dict() holds AdamW's state plus the filter's under "grokfast".
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        alpha: float = DEFAULT_ALPHA,
        lamb: float = DEFAULT_LAMB,
        **adamw_options: Any,
    ):
        # built before AdamW's __init__, which calls add_param_group for each group
        self.grokfast = GrokFastFilter([], alpha, lamb)
        self.filter_norm: torch.Tensor | None = None
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, **adamw_options)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        # the filter indexes parameters in param_groups order, as Optimizer.state_dict does
        self.grokfast.params.extend(self.param_groups[-1]["params"])

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.filter_norm = self.grokfast.apply_tensor()
        _adamw_step(self)
        return loss

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["grokfast"] = self.grokfast.state_dict()
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        state = dict(state_dict)
        grokfast = state.pop("grokfast", None)
        super().load_state_dict(state)
        # a plain AdamW checkpoint has no filter state: the EMA starts again from the next gradient
        self.grokfast.load_state_dict(grokfast if grokfast is not None else {"ema": {}, "steps": 0})


def _adamw_step(optimizer: torch.optim.Optimizer) -> None:
    # Optimizer wraps each class's step() once to run the step hooks (and marks the wrapper `hooked`);
    # GrokFastAdamW.step is wrapped already, so AdamW's own update is called unwrapped, and the hooks run once.
    step = torch.optim.AdamW.step
    while getattr(step, "hooked", False):
        step = step.__wrapped__  # type: ignore[attr-defined]
    step(optimizer)


def grokfast_adamw(params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                   eps: float = 1e-8, weight_decay: float = 1e-2, grokfast_alpha: float = DEFAULT_ALPHA,
                   grokfast_lamb: float = DEFAULT_LAMB) -> GrokFastAdamW:
    """optimizer=grokfast's `_target_`: GrokFastAdamW from the option's keys (optimizer.grokfast_alpha, _lamb)."""
    return GrokFastAdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, alpha=grokfast_alpha,
                         lamb=grokfast_lamb)
