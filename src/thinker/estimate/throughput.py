"""backend=local's tokens per second: configured (budget.tokens_per_sec), measured by earlier runs of the same
model, method, accelerator and precision on this machine, or assumed from the model's size.

Every finished local training appends its measurement to `outputs/throughput.jsonl` (THINKER_THROUGHPUT_FILE
overrides): one JSON line, no secret, the processed tokens over the training's seconds."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

ENV = "THINKER_THROUGHPUT_FILE"
DEFAULT = Path("outputs") / "throughput.jsonl"
RECENT = 3  # measurements averaged: the newest ones of the same setup


def ledger_path() -> Path:
    return Path(os.environ.get(ENV) or DEFAULT)


def setup_key(cfg: DictConfig) -> dict[str, Any]:
    """What a measurement is valid for: the same model, method and hardware settings on this host."""
    return {"host": socket.gethostname(), "model": str(cfg.model.name), "method": str(cfg.method.name),
            "accelerator": str(cfg.trainer.accelerator), "precision": str(cfg.trainer.precision),
            "max_seq_length": int(cfg.trainer.max_seq_length), "batch_size": int(cfg.trainer.batch_size)}


def record_measurement(cfg: DictConfig, tokens: int, seconds: float) -> None:
    """Append one finished training's throughput (best effort: an unwritable ledger only loses the sample)."""
    if tokens <= 0 or seconds <= 0:
        return
    path = ledger_path()
    line = json.dumps({**setup_key(cfg), "tokens": int(tokens), "seconds": round(float(seconds), 3)})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    except OSError:
        pass


def measured_tokens_per_sec(cfg: DictConfig) -> float | None:
    """Tokens/s of the newest RECENT measurements of this setup (their tokens over their seconds)."""
    path = ledger_path()
    if not path.is_file():
        return None
    key = setup_key(cfg)
    found = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a torn last line
        if isinstance(entry, dict) and all(entry.get(k) == v for k, v in key.items()):
            found.append(entry)
    recent = found[-RECENT:]
    seconds = sum(float(e.get("seconds", 0)) for e in recent)
    return sum(int(e.get("tokens", 0)) for e in recent) / seconds if recent and seconds > 0 else None


def assumed_tokens_per_sec(cfg: DictConfig, table: dict[str, Any] | None) -> float | None:
    """From the model's size: effective FLOP/s over 6 x parameters (conf/prices/local.yaml); None without a size."""
    params = cfg.model.get("params")
    flops = (table or {}).get("assumed_flops") or {}
    device = "cpu" if str(cfg.trainer.accelerator) == "cpu" else "gpu"
    if not params or device not in flops:
        return None
    return float(flops[device]) / (6.0 * float(params))


def tokens_per_sec(cfg: DictConfig, table: dict[str, Any] | None) -> tuple[float | None, str]:
    """(tokens/s, where it comes from: configured | measured | assumed | unknown)."""
    configured = cfg.get("budget") and cfg.budget.get("tokens_per_sec")
    if configured:
        return float(configured), "configured"
    measured = measured_tokens_per_sec(cfg)
    if measured:
        return measured, "measured"
    assumed = assumed_tokens_per_sec(cfg, table)
    return (assumed, "assumed") if assumed else (None, "unknown")
