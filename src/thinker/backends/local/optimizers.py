"""The optimizer an `optimizer=` option names in `_target_` (conf/optimizer/*.yaml): torch's AdamW, Adam and SGD,
bitsandbytes' 8-bit and paged AdamW, GrokFast, or a class of your own; built when the model's parameters exist.

bitsandbytes optimizers need a device it supports; where it does not, the user gets a clear error before
training starts instead of a crash at the first step.
"""

from __future__ import annotations

from typing import Any

import torch

from thinker.config.targets import partial_from
from thinker.errors import ThinkerError

# optimizer.* keys thinker reads itself (the option's name, gradient clipping, the schedule), never the target's
THINKER_KEYS = ("name", "max_grad_norm", "scheduler")


def build_optimizer(cfg: Any, params: list[torch.nn.Parameter], device_type: str) -> torch.optim.Optimizer:
    name, target = str(cfg.name), str(cfg._target_)
    if target.rsplit(".", 1)[-1].startswith("Paged") and device_type != "cuda":  # bitsandbytes' Paged* family
        raise ThinkerError(
            f"optimizer={name} pages optimizer state through CUDA unified memory and needs a CUDA GPU",
            f"optimizer={name}, trainer on {device_type}",
            "use optimizer=adamw_8bit or adamw on this machine, or trainer=gpu on a CUDA machine",
            stage="train",
        )
    try:
        return partial_from(cfg, THINKER_KEYS)(params)
    except Exception as exc:  # noqa: BLE001 - bitsandbytes reports unsupported devices in many ways
        raise ThinkerError(
            f"{target} cannot run optimizer={name} on {device_type} ({type(exc).__name__}: {exc})",
            f"optimizer._target_={target}",
            "use optimizer=adamw",
            stage="train",
        ) from exc
