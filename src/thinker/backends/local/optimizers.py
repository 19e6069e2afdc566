"""Optimizers by name: torch's adamw/adam/sgd, bitsandbytes' 8-bit and paged AdamW.

bitsandbytes optimizers need a device it supports; where it does not, the user gets a clear error
before training starts instead of a crash at the first step.
"""

from __future__ import annotations

from typing import Any

import torch

from thinker.errors import ThinkerError


def build_optimizer(cfg: Any, params: list[torch.nn.Parameter], device_type: str) -> torch.optim.Optimizer:
    name = str(cfg.name)
    lr, wd = float(cfg.lr), float(cfg.weight_decay)
    betas = tuple(float(b) for b in cfg.betas)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd, betas=betas, eps=float(cfg.eps))
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd, betas=betas, eps=float(cfg.eps))
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd, momentum=float(cfg.momentum))
    if name in ("adamw_8bit", "paged_adamw"):
        return _bitsandbytes_optimizer(name, params, lr, wd, betas, device_type)
    raise ThinkerError(
        f"optimizer={name} cannot fine-tune on the local backend",
        "optimizer",
        "use optimizer=adamw, adam, sgd, adamw_8bit or paged_adamw",
        stage="train",
    )


def _bitsandbytes_optimizer(name, params, lr, wd, betas, device_type):
    if name == "paged_adamw" and device_type != "cuda":
        raise ThinkerError(
            "optimizer=paged_adamw pages optimizer state through CUDA unified memory and needs a CUDA GPU",
            f"optimizer={name}, trainer on {device_type}",
            "use optimizer=adamw_8bit or adamw on this machine, or trainer=gpu on a CUDA machine",
            stage="train",
        )
    try:
        import bitsandbytes as bnb

        cls = bnb.optim.PagedAdamW if name == "paged_adamw" else bnb.optim.AdamW8bit
        optimizer = cls(params, lr=lr, weight_decay=wd, betas=betas)
    except Exception as exc:  # noqa: BLE001 - bitsandbytes reports unsupported devices in many ways
        raise ThinkerError(
            f"bitsandbytes cannot run optimizer={name} on {device_type} ({type(exc).__name__}: {exc})",
            f"optimizer={name}",
            "use optimizer=adamw",
            stage="train",
        ) from exc
    return optimizer
