"""After training: what it took and cost, beside the estimate (the run record's `cost`, MLflow metrics
`actual_usd`, `actual_seconds`, `estimated_usd`, `estimated_seconds`, `estimated_tokens`; docs/costs.md).

backend=local is billed by the hour: its training seconds x budget.device_hour_usd. A per-token backend is
billed by the tokens it trained: the estimate's price, over the estimate's tokens scaled by the trained tokens
the run reports against the estimate's (equal when the run went as planned)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from thinker.estimate.cost import price_of


def actual_cost(cfg: DictConfig, estimate: dict[str, Any] | None, metrics: dict[str, float]) -> dict[str, Any]:
    seconds = metrics.get("train_seconds")
    trained = metrics.get("trained_tokens")
    out: dict[str, Any] = {"seconds": seconds, "trained_tokens": trained, "usd": None}
    price = price_of(cfg)
    if price is None:  # this machine, by the hour
        hourly = OmegaConf.select(cfg, "budget.device_hour_usd", default=None)
        out["usd"] = 0.0 if hourly is None else (seconds / 3600 * float(hourly) if seconds is not None else None)
        return out
    planned = (estimate or {}).get("tokens") or {}
    billed = metrics.get("billed_tokens")  # a provider that reports what it billed
    if billed is None and trained is not None and planned.get("trained_tokens"):
        billed = planned["tokens"] * trained / planned["trained_tokens"]
    if billed is not None and price.train is not None:
        out["tokens"] = billed
        out["usd"] = billed / 1e6 * price.train
    return out


def cost_metrics(cost: dict[str, Any]) -> dict[str, float]:
    """The record's `cost` as MLflow metrics (only the numbers it has)."""
    estimate, actual = cost.get("estimate") or {}, cost.get("actual") or {}
    tokens = estimate.get("tokens") or {}
    found = {"estimated_usd": estimate.get("usd"), "estimated_seconds": estimate.get("seconds"),
             "estimated_tokens": tokens.get("tokens"), "estimated_trained_tokens": tokens.get("trained_tokens"),
             "actual_usd": actual.get("usd"), "actual_seconds": actual.get("seconds")}
    return {k: float(v) for k, v in found.items() if v is not None}


def remember_throughput(cfg: DictConfig, estimate: dict[str, Any] | None, metrics: dict[str, float]) -> None:
    """A local training that went as planned (its trained tokens are the estimate's) measured this machine's
    tokens/s for its setup: kept for the next estimate (thinker.estimate.throughput)."""
    from thinker.estimate.throughput import record_measurement

    planned = (estimate or {}).get("tokens") or {}
    if str(cfg.backend.name) != "local" or bool(cfg.resume) or not planned:
        return
    if metrics.get("trained_tokens") != planned.get("trained_tokens") or not metrics.get("train_seconds"):
        return
    record_measurement(cfg, int(planned["tokens"]), float(metrics["train_seconds"]))
