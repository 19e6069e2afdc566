"""hparams_search: the metric a sweep optimises, its direction, and where an Optuna study is kept.

- search_problems(cfg): what the config check refuses (thinker.config.rules.hparams_search_valid, in every job,
  and launch_problems in the launching process, before the sweeper creates its study): a direction other than
  minimize | maximize, an objective the run cannot produce (knowable from stage, trainer.evaluations,
  data.validation_split, evaluation.enabled and data.format), a storage that is not an RDB URL.
- objective_setting(cfg): the objective name a job returns to the sweeper (without hparams_search: the data
  task's own when it is not val_loss, e.g. pref_accuracy; else None: the sweep ranks val_loss, else train_loss).
- the two resolvers conf/hparams_search/optuna.yaml fills hydra.sweeper.storage and study_name with
  (register_resolvers, called by thinker.launch.app before Hydra composes):
  `${thinker_optuna_storage:...}`: hparams_search.storage, else `optuna.db` beside MLflow's SQLite store (the
  working directory's mlflow.db by default; not inside it: MLflow and Optuna both keep their schema version in
  alembic's `alembic_version` table, so one SQLite file cannot hold both), else in the working directory;
  `${thinker_optuna_study:...}`: `thinker-<objective>-<direction>-<hash of the search>`, the same for the same
  command, so running it again adds its trials to the same study;
  `${thinker_lr_interval:...}`: the optimizer.lr range, centred on the model's recommended_lr (lr_interval).

Light: no optuna, no mlflow.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from thinker.tasks.base import HELDOUT_METRICS

DIRECTIONS = ("minimize", "maximize")
STUDY_FILE = "optuna.db"  # the default study storage, beside mlflow.db
STORAGE_RESOLVER = "thinker_optuna_storage"
STUDY_RESOLVER = "thinker_optuna_study"
LR_RANGE_RESOLVER = "thinker_lr_interval"
LR_RANGE_FACTOR = 10.0  # the searched learning rates: recommended_lr / 10 .. recommended_lr x 10
LR_MAX = 1.0  # optimizer.lr's valid range is (0, 1] (thinker.config.ranges)

TRAINING_METRICS = ("train_loss", "val_loss")

Problem = tuple[str, str, str]  # what, where, what to do


def _value(node: Any) -> str:
    return str(node.value if hasattr(node, "value") else node)


def objective_setting(cfg: Any) -> str | None:
    """hparams_search.objective; without hparams_search the data task's own objective when it has one other
    than the held-out loss (task_default); else None."""
    name = OmegaConf.select(cfg, "hparams_search.objective", default=None)
    if name:
        return str(name)
    default = task_default(cfg)
    return default[0] if default else None


def task_default(cfg: Any) -> tuple[str, str] | None:
    """Without hparams_search: (the data task's default_objective, its default_direction) when that is not
    val_loss, so that `-m objective.beta=0.05,0.1` over preference data ranks by pref_accuracy, maximised
    (docs/objectives.md); None otherwise (the sweep ranks val_loss, else train_loss, as before)."""
    if OmegaConf.select(cfg, "hparams_search", default=None) is not None:
        return None
    from thinker.errors import ThinkerError

    try:
        task = data_task(cfg)
    except ThinkerError:  # the config check reports an unknown data format
        return None
    if task.default_objective == "val_loss":
        return None
    return str(task.default_objective), str(task.default_direction)


def data_task(cfg: Any) -> Any:
    from thinker.tasks import task_of

    data = OmegaConf.select(cfg, "data", default=None)
    if data is None:  # a config without a data group: the data schema's default task
        from thinker.config.schema import DataConfig

        data = OmegaConf.structured(DataConfig)
    return task_of(data)


def produced_metrics(cfg: Any) -> tuple[list[str], dict[str, str]]:
    """(the objective-worthy metrics this config's run reports, {metric it does not report: why not}).
    stage=eval takes the training metrics of the folder's record as they are."""
    stage = _value(cfg.stage)
    produced: list[str] = []
    missing: dict[str, str] = {}
    eval_names = list(data_task(cfg).eval_metrics)  # what the data task's eval stage reports
    if stage == "validate":
        for name in [*TRAINING_METRICS, *eval_names]:
            missing[name] = "stage=validate trains and evaluates nothing"
        return produced, missing
    held_out = (int(OmegaConf.select(cfg, "trainer.evaluations", default=1)) > 0
                and float(OmegaConf.select(cfg, "data.validation_split", default=0.1)) > 0)
    no_held_out = "trainer.evaluations=0 or data.validation_split=0 turns held-out evaluation off"
    produced.append("train_loss")
    if held_out or stage == "eval":
        produced.append("val_loss")
    else:
        missing["val_loss"] = no_held_out
    evaluates = stage in ("run", "eval") and bool(OmegaConf.select(cfg, "evaluation.enabled", default=True))
    for name in eval_names:
        if not evaluates:
            missing[name] = ("stage=train does not evaluate" if stage == "train"
                             else "evaluation.enabled=false turns evaluation off")
        elif name in HELDOUT_METRICS and "val_loss" in missing:
            missing[name] = no_held_out
        else:
            produced.append(name)
    return produced, missing


def search_problems(cfg: Any) -> list[Problem]:
    """What is wrong with hparams_search (nothing without the group)."""
    search = OmegaConf.select(cfg, "hparams_search", default=None)
    if search is None:
        return []
    problems: list[Problem] = []
    direction = str(search.direction)
    if direction not in DIRECTIONS:
        problems.append((f"hparams_search.direction={direction} is neither minimize nor maximize",
                         "config key hparams_search.direction",
                         "pass hparams_search.direction=minimize (lower is better: val_loss) or maximize "
                         "(higher is better: an evaluation score such as c1_exact_match_rate)"))
    objective = str(search.objective or "")
    produced, missing = produced_metrics(cfg)
    if objective not in produced:
        default = data_task(cfg).default_objective  # the data task's own choice, when this run reports it
        choose = (f"choose one this run reports ({', '.join(produced)})"
                  + (f", {default} is this data's default" if default in produced else "") if produced
                  else "search over stage=run or stage=train")
        if objective in missing:
            problems.append((f"hparams_search.objective={objective} is not reported by this run: "
                             f"{missing[objective]}", "config key hparams_search.objective",
                             f"{choose}, or change what stops it"))
        else:
            problems.append((f"hparams_search.objective={objective or '(empty)'} is not a metric thinker runs "
                             f"report", "config key hparams_search.objective", choose))
    storage = search.storage
    if storage is not None and "://" not in str(storage):
        problems.append((f"hparams_search.storage={storage} is not a database URL",
                         "config key hparams_search.storage",
                         "pass an RDB URL such as sqlite:///optuna.db or postgresql://host/db, or null for "
                         "optuna.db beside mlflow.db"))
    return problems


def launch_problems(config: Any) -> list[Problem]:
    """search_problems of a multirun's config, plus the sweeper's own direction, which must be the one the
    summary ranks by (conf/hparams_search/optuna.yaml interpolates it from hparams_search.direction)."""
    problems = search_problems(config)
    if problems or OmegaConf.select(config, "hparams_search", default=None) is None:
        return problems
    swept = OmegaConf.select(config, "hydra.sweeper.direction", default=None)
    wanted = str(config.hparams_search.direction)
    if swept is not None and not isinstance(swept, ListConfig | list) and _value(swept) != wanted:
        problems.append((f"hydra.sweeper.direction={_value(swept)} disagrees with hparams_search.direction={wanted}",
                         "config key hydra.sweeper.direction",
                         f"set hparams_search.direction={_value(swept)} instead (the sweeper follows it)"))
    return problems


# ---------------------------------------------------------------- resolvers for hydra.sweeper


def default_storage(explicit: Any = None, tracking_uri: Any = None, mlflow: Any = False) -> str:
    """`explicit` when given; else `sqlite:///<folder>/optuna.db`, the folder being that of MLflow's SQLite
    store (a logger option with `mlflow: true` and a sqlite:/// tracking URI) or the working directory."""
    if explicit:
        return str(explicit)
    folder = Path.cwd()
    if str(mlflow).lower() == "true":  # the logger option's flag (conf/logger/*.yaml), whatever its name
        from thinker.tracking.mlflow_run import tracking_uri as resolve_uri

        uri = resolve_uri(str(tracking_uri) if tracking_uri else None)
        if uri.startswith("sqlite:///"):
            store = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
            folder = (store if store.is_absolute() else Path.cwd() / store).parent
    return f"sqlite:///{(folder / STUDY_FILE).resolve()}"


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=False) if isinstance(node, DictConfig | ListConfig) else node


def study_name(objective: Any, direction: Any, overrides: Any = None, params: Any = None) -> str:
    """`thinker-<objective>-<direction>-<8 hex>`: the hash of the search space (hydra.sweeper.params) and the
    command's overrides (order aside), so the same command names the same study."""
    search = {"params": sorted((str(k), str(v)) for k, v in (_plain(params) or {}).items()),
              "overrides": sorted(str(o) for o in (_plain(overrides) or []))}
    digest = hashlib.sha256(json.dumps(search, sort_keys=True).encode()).hexdigest()[:8]
    return f"thinker-{objective}-{direction}-{digest}"


def lr_interval(recommended_lr: Any) -> str:
    """`interval(lo, hi)` around the model's recommended learning rate, a factor LR_RANGE_FACTOR each way and
    clipped to optimizer.lr's (0, 1]: hydra.sweeper.params' optimizer.lr, so tiny-qwen's 3e-3 and qwen-0.5b's
    2e-4 are both inside their search (a fixed [1e-5, 1e-3] missed tiny-qwen's)."""
    centre = float(recommended_lr)
    if not 0 < centre <= LR_MAX:
        raise ValueError(f"model.recommended_lr={centre} is outside (0, {LR_MAX:g}]: no learning-rate range")
    low, high = centre / LR_RANGE_FACTOR, min(centre * LR_RANGE_FACTOR, LR_MAX)
    return f"interval({low:.3g}, {high:.3g})"


def register_resolvers() -> None:
    for name, fn in ((STORAGE_RESOLVER, default_storage), (STUDY_RESOLVER, study_name),
                     (LR_RANGE_RESOLVER, lr_interval)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn, use_cache=False)


def masked_storage(storage: Any) -> str | None:
    if storage is None:
        return None
    from thinker.tracking.secrets import mask_text

    return mask_text(str(storage))

