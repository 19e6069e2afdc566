"""What backend=local can refuse at config check about this machine, before the validation gate: a CUDA-only
setting without a CUDA GPU, and a gated hub model without a token. Neither imports torch: the GPU is found the
way the NVIDIA driver shows it (docs/backends/local.md)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from thinker.errors import ThinkerError

NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")  # one folder per GPU the loaded driver sees (Linux)


def cuda_visible(env: Mapping[str, str], gpus_dir: Path = NVIDIA_GPUS) -> bool:
    """Whether a CUDA GPU is visible to this process: CUDA_VISIBLE_DEVICES not emptied, and the driver shows a
    GPU (its /proc folder, else `nvidia-smi -L`, as on WSL). Cheaper than importing torch to ask it."""
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    try:
        if gpus_dir.is_dir() and any(gpus_dir.iterdir()):
            return True
    except OSError:
        pass
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def cuda_only_settings(cfg: DictConfig) -> list[tuple[str, str]]:
    """(key, setting) pairs of the config that train only on CUDA GPUs."""
    found = []
    if str(cfg.trainer.accelerator) in ("gpu", "cuda"):
        found.append(("trainer.accelerator", f"trainer={cfg.trainer.name} (trainer.accelerator={cfg.trainer.accelerator})"))
    if "flash_attention" in {str(o) for o in cfg.trainer.optimizations}:
        found.append(("trainer.optimizations", "trainer.optimizations flash_attention (FlashAttention 2 is CUDA-only)"))
    return found


def check_cuda(cfg: DictConfig, env: Mapping[str, str], gpus_dir: Path = NVIDIA_GPUS) -> None:
    if str(cfg.stage) not in ("train", "run"):
        return
    needs = cuda_only_settings(cfg)
    if needs and not cuda_visible(env, gpus_dir):
        key, setting = needs[0]
        raise ThinkerError(f"{setting} needs a CUDA GPU and this machine shows none", key,
                           "use trainer=cpu (or trainer=quick) here, or run on a machine with an NVIDIA GPU")


def check_hub_access(cfg: DictConfig, env: Mapping[str, str]) -> None:
    """A gated hub model (model.source a hub id) without HF_TOKEN, when its weights are not cached here."""
    from thinker.models.hub_access import needs_token
    from thinker.models.loading import looks_like_hub_id

    source = str(cfg.model.source)
    if str(cfg.stage) == "validate" or not looks_like_hub_id(source):
        return
    revision = str(cfg.model.revision) if cfg.model.revision else None
    if needs_token(source, revision, env):
        raise ThinkerError(
            f"{source} is a gated repository on the hub and HF_TOKEN is not set (its weights are not cached here)",
            f"model={cfg.model.name} (model.source)",
            "request access on its hub page, then export HF_TOKEN with a token that has it")


def check_machine(cfg: DictConfig, env: Any) -> None:
    check_cuda(cfg, env)
    check_hub_access(cfg, env)
