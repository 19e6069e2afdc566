"""Published prices, read from conf/prices/<name>.yaml (THINKER_PRICES_DIR: a folder of your own): each file
names its source and date, and budget.train_usd_per_mtok / sample_usd_per_mtok override a price for one run.

`verified: false` (for a whole file, or an entry; an entry's may name objectives: {sft: true, dpo: false}) marks
a figure that could not be checked against the provider's own page: the estimate then says "unverified price"
(docs/costs.md, Prices). A file without the key is the user's own and is not marked."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thinker.paths import project_root

PRICES_DIR_ENV = "THINKER_PRICES_DIR"


@dataclass(frozen=True)
class Price:
    """USD per million tokens for training (and sampling, where the backend samples at a price)."""

    train: float | None
    sample: float | None = None
    prefill: float | None = None
    source: str | None = None
    as_of: str | None = None
    verified: bool | None = None  # False: not checked against the provider's page; None: not said

    def describe(self) -> str:
        where = f"{self.source}, {self.as_of}" if self.as_of else str(self.source)
        if self.train is None:
            return f"no price ({where})"
        return f"${self.train:g}/M train tokens ({where}{'; unverified price' if self.verified is False else ''})"


def prices_dir() -> Path:
    configured = os.environ.get(PRICES_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    root = project_root()
    return (root or Path.cwd()) / "conf" / "prices"


@functools.lru_cache(maxsize=32)
def _table(folder: str, name: str) -> dict[str, Any] | None:
    from omegaconf import OmegaConf

    path = Path(folder) / f"{name}.yaml"
    if not path.is_file():
        return None
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)  # type: ignore[return-value]


def price_table(name: str) -> dict[str, Any] | None:
    """conf/prices/<name>.yaml as plain data; None when there is no such file."""
    return _table(str(prices_dir()), name)


def _size_row(table: dict[str, Any], params: int | None) -> dict[str, Any] | None:
    if params is None:
        return None
    for size in table.get("sizes") or []:
        if params <= int(size["max_params"]):
            return size
    return None


def _verified(flag: Any, objective: str) -> bool | None:
    """An entry's `verified`: a bool, or one per objective ({sft: true, dpo: false})."""
    if isinstance(flag, dict):
        flag = flag.get(objective)
    return None if flag is None else bool(flag)


def published_price(table_name: str, model_id: str | None, params: int | None, method: str,
                    objective: str) -> Price:
    """The price `table_name` publishes for `model_id` (or, for tables by size, a model of `params`
    parameters) trained with `method` (lora / full) and `objective` (sft / dpo)."""
    table = price_table(table_name)
    if table is None:
        return Price(None, source=f"no conf/prices/{table_name}.yaml")
    source, as_of = table.get("source"), table.get("as_of")
    entry = (table.get("models") or {}).get(model_id or "")
    if entry is not None:
        train = entry.get("train", entry.get(objective))
        verified = _verified(entry.get("verified", table.get("verified")), objective)
        return Price(train, entry.get("sample"), entry.get("prefill"), source, as_of, verified)
    row = _size_row(table, params) or {}
    train = (row.get("lora" if method == "qlora" else method) or {}).get(objective)
    verified = _verified(row.get("verified", table.get("verified")), objective)
    return Price(train, source=source, as_of=as_of, verified=verified)


def with_overrides(price: Price, budget: Any) -> Price:
    """budget.train_usd_per_mtok / sample_usd_per_mtok in place of the published ones."""
    train = getattr(budget, "train_usd_per_mtok", None) if budget is not None else None
    sample = getattr(budget, "sample_usd_per_mtok", None) if budget is not None else None
    if train is None and sample is None:
        return price
    return Price(float(train) if train is not None else price.train,
                 float(sample) if sample is not None else price.sample, price.prefill,
                 "budget.*_usd_per_mtok (this run's override)", None)
