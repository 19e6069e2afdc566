"""A run's estimate: its token plan, then time and money on its backend (docs/costs.md).

- backend=local: hours = tokens / tokens per second (thinker.estimate.throughput); USD = hours x
  budget.device_hour_usd (null: your own machine, $0);
- backend=tinker: training tokens x the train price of model.tinker_name, plus the evaluation's sampling
  (at most evaluation.max_samples x max_new_tokens, twice with compare_base) at the sample price;
- backend=provider: the file's tokens x epochs x the provider's price for the base model, method and objective.
  The provider tokenises with its own tokenizer; the count is the model's tokenizer's.

The estimate of a run that cannot be priced (no published price for its model) says so; budget.max_usd then
refuses it rather than let an unknown cost through.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from thinker.errors import ThinkerError
from thinker.estimate.prices import Price, price_table, published_price, with_overrides
from thinker.estimate.tokens import TokenPlan

log = logging.getLogger("thinker")


@dataclass
class Estimate:
    backend: str
    tokens: TokenPlan | None = None
    seconds: float | None = None  # training time (backend=local; a provider's queue is not included)
    usd: float | None = None
    tokens_per_sec: float | None = None
    throughput: str | None = None  # configured | measured | assumed | unknown (backend=local)
    price: str | None = None  # what the cost is priced at, with its source and date
    unknown: str | None = None  # why tokens (or cost) are not known yet

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tokens"] = self.tokens.as_dict() if self.tokens else None
        return data

    def line(self) -> str:
        """One console line: `estimate: 24 steps, 41,234 tokens (12,345 trained), ~35 s, $0.00 (...)`."""
        if self.tokens is None:
            return f"estimate: tokens unknown before the run ({self.unknown}; `thinker estimate` counts them)"
        t = self.tokens
        parts = [f"{t.steps} steps" if t.steps is not None else f"{t.epochs} epoch(s)",
                 f"{t.tokens:,} tokens ({t.trained_tokens:,} trained)"]
        if self.seconds is not None:
            parts.append(f"~{format_seconds(self.seconds)} at {self.tokens_per_sec:,.0f} tokens/s ({self.throughput})")
        parts.append(f"${self.usd:,.4f}" if self.usd is not None else "cost unknown")
        return f"estimate: {', '.join(parts)}" + (f" [{self.price}]" if self.price else "")


def format_seconds(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _budget(cfg: DictConfig) -> Any:
    return OmegaConf.select(cfg, "budget", default=None)


def _tokenizer(cfg: DictConfig, heavy: bool) -> tuple[Any, str | None]:
    """The run's tokenizer for counting: its tokenizer.json through `tokenizers` when it is on this machine;
    else, with `heavy`, the one training loads (building a builtin model, downloading a hub tokenizer)."""
    from thinker.estimate.light_tokenizer import light_tokenizer

    light, why = light_tokenizer(cfg)
    if light is not None and not _needs_template(cfg):
        return light, None
    if not heavy:
        return None, why if light is None else f"data.format={cfg.data.format} renders a chat template"
    from thinker.models.loading import load_training_tokenizer

    if str(cfg.backend.name) == "tinker" and cfg.model.tinker_name:
        from thinker.models.loading import load_tokenizer

        return load_tokenizer(str(cfg.model.tinker_name)), None
    return load_training_tokenizer(cfg), None


def _needs_template(cfg: DictConfig) -> bool:
    from thinker.tasks import task_of

    return task_of(cfg.data).renders_chat_template


def plan_of(cfg: DictConfig, heavy: bool = False, run_dir: Path | None = None) -> tuple[TokenPlan | None, str | None]:
    from thinker.data.source import effective_data_path
    from thinker.estimate.tokens import plan_tokens

    data_path = effective_data_path(cfg, run_dir or Path("outputs") / "adhoc")
    if not Path(data_path).is_file():
        return None, f"{data_path} is written by the validate stage"
    tokenizer, why = _tokenizer(cfg, heavy)
    if tokenizer is None:
        return None, why
    try:
        return plan_tokens(cfg, data_path, tokenizer), None
    except (AttributeError, KeyError, ValueError) as exc:  # a record the validate stage will report
        return None, f"the data could not be counted yet ({type(exc).__name__})"


def _sample_tokens(cfg: DictConfig) -> int:
    """Tokens the eval stage may generate: evaluation.max_samples x max_new_tokens, twice with compare_base."""
    if not cfg.evaluation.enabled or str(cfg.stage) not in ("run", "eval"):
        return 0
    samples = int(cfg.evaluation.max_samples or 0)
    return samples * int(cfg.evaluation.decoding.max_new_tokens) * (2 if cfg.evaluation.compare_base else 1)


def price_of(cfg: DictConfig) -> Price | None:
    """The price this run's training is billed at; None for backend=local (billed by the hour)."""
    backend = str(cfg.backend.name)
    objective = str(OmegaConf.select(cfg, "objective.name", default="sft") or "sft")
    method = str(cfg.method.name)
    params = int(cfg.model.params) if cfg.model.get("params") else None
    if backend == "tinker":
        price = published_price("tinker", str(cfg.model.tinker_name or cfg.model.name), params, method, objective)
    elif bool(cfg.backend.get("uses_provider", False)):
        name = str(cfg.provider.name)
        price = published_price(name, str(cfg.provider.base_model or ""), params, method, objective)
    else:
        return None
    return with_overrides(price, _budget(cfg))


def estimate_run(cfg: DictConfig, heavy: bool = False, run_dir: Path | None = None) -> Estimate:
    """The run's estimate. `heavy`: load the real tokenizer when its tokenizer.json is not on this machine
    (thinker estimate, and a run with budget.max_usd); else such a run's tokens stay unknown until it trains."""
    backend = str(cfg.backend.name)
    plan, why = plan_of(cfg, heavy, run_dir)
    est = Estimate(backend=backend, tokens=plan, unknown=why)
    if plan is None:
        return est
    price = price_of(cfg)
    if price is None:  # this machine, by the hour
        from thinker.estimate.throughput import tokens_per_sec

        rate, source = tokens_per_sec(cfg, price_table("local"))
        est.tokens_per_sec, est.throughput = rate, source
        est.seconds = plan.tokens / rate if rate else None
        hourly = OmegaConf.select(cfg, "budget.device_hour_usd", default=None)
        if hourly is None:
            est.usd, est.price = 0.0, "own machine: set budget.device_hour_usd to price its hours"
        elif est.seconds is not None:
            est.usd, est.price = est.seconds / 3600 * float(hourly), f"${float(hourly):g}/device-hour"
        else:
            est.price = "no throughput for this setup: set budget.tokens_per_sec"
        return est
    est.price = price.describe()
    if price.train is None:
        est.unknown = f"no published price for this model and method in conf/prices/{_table_name(cfg)}.yaml"
        return est
    usd = plan.tokens / 1e6 * price.train
    if backend == "tinker" and price.sample is not None:
        usd += _sample_tokens(cfg) / 1e6 * price.sample
    est.usd = usd
    return est


def _table_name(cfg: DictConfig) -> str:
    return "tinker" if str(cfg.backend.name) == "tinker" else str(cfg.provider.name)


def check_budget(estimates: list[Estimate], max_usd: float | None, what: str) -> None:
    """budget.max_usd: refuse a run (or a whole sweep, `estimates` of every job) whose cost is above it or
    cannot be known. Raised at config check, before anything trains."""
    if max_usd is None:
        return
    unknown = [e for e in estimates if e.usd is None]
    if unknown:
        raise ThinkerError(
            f"{what} cannot be priced ({unknown[0].unknown or unknown[0].price or 'no price'}) and budget.max_usd="
            f"{max_usd:g} is set", "budget.max_usd",
            "set budget.train_usd_per_mtok (or budget.tokens_per_sec) so it can be priced, or drop budget.max_usd")
    total = sum(e.usd or 0.0 for e in estimates)
    if total > float(max_usd):
        raise ThinkerError(
            f"{what} is estimated at ${total:,.4f}, above budget.max_usd=${float(max_usd):g}", "budget.max_usd",
            "raise budget.max_usd, or train less (trainer.max_steps, trainer.epochs, data.max_examples, a smaller sweep)")


def budget_limit(cfg: DictConfig) -> float | None:
    value = OmegaConf.select(cfg, "budget.max_usd", default=None)
    return float(value) if value is not None else None


COUNT_AT_CHECK_BYTES = 64 * 1024 * 1024


def _data_bytes(cfg: DictConfig, run_dir: Path) -> int:
    from thinker.data.source import effective_data_path

    try:
        return Path(effective_data_path(cfg, run_dir)).stat().st_size
    except OSError:
        return 0


def estimate_at_config_check(cfg: DictConfig, run_dir: Path) -> Estimate | None:
    """The run's estimate, printed as one line, and budget.max_usd enforced; None for a stage that trains
    nothing. Tokens are counted with the tokenizer snapshot (no transformers import) unless budget.max_usd is
    set, where an unknown count would let any cost through: then the real tokenizer is loaded."""
    if str(cfg.stage) not in ("train", "run"):
        return None
    limit = budget_limit(cfg)
    size = _data_bytes(cfg, run_dir)
    if limit is None and size > COUNT_AT_CHECK_BYTES:  # tokenising it twice would double a big run's start
        log.info("estimate: not counted at config check for a %.0f MB data file (thinker estimate counts it; "
                 "budget.max_usd makes the check count it)", size / 1e6)
        return None
    try:
        est = estimate_run(cfg, heavy=limit is not None, run_dir=run_dir)
    except ThinkerError:
        raise
    except Exception as exc:  # noqa: BLE001 - the data is not validated yet (a record that is a list, a missing
        # field, bad JSON): the validate stage reports it with its line number; the estimate only steps aside
        reason = f"{type(exc).__name__}: {exc}"
        if limit is not None:
            raise ThinkerError(f"budget.max_usd={limit:g} needs the run's cost, and its data could not be counted "
                               f"({reason})", f"data.path={cfg.data.path}",
                               "run `thinker validate` with the same overrides to see the bad lines") from exc
        log.warning("no estimate: the data could not be counted before validation (%s)", reason)
        return None
    log.info("%s", est.line())
    check_budget([est], limit, "this run")
    return est
