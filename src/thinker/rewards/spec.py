"""`objective.rewards` -> the weighted reward callables of a run.

`objective.rewards` is a list (a command-line override replaces it whole); each item is a name (weight 1), a
{name: weight}, or a {name: {weight: w, <arguments>}}:

    objective.rewards: [gsm8k_answer, {length_penalty: 0.1}]
    'objective.rewards=[{regex:{weight:1.0,pattern:"^CLAIM"}}]'
    objective.rewards: [{mine: {weight: 1.0, _target_: mypkg.rewards.exact}}]

A name is a conf/reward/<name>.yaml option (its `_target_` and arguments, which the mapping overrides), or a
callable's dotted path (`mypkg.rewards.exact`), or any name when the mapping gives `_target_`. A target that is a
class is built with the arguments and then called; a function is called with them bound. The resolution is
light (the config check runs it, nothing is imported); `build_rewards` imports the targets at train time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thinker.errors import ThinkerError
from thinker.paths import project_root

WHERE = "objective.rewards"


@dataclass(frozen=True)
class RewardSpec:
    name: str
    weight: float
    target: str
    arguments: dict[str, Any] = field(default_factory=dict)


def reward_options_dir() -> Path | None:
    root = project_root()
    return None if root is None else root / "conf" / "reward"


def shipped_reward_names() -> list[str]:
    folder = reward_options_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder is not None and folder.is_dir() else []


def _option(name: str) -> dict[str, Any] | None:
    """conf/reward/<name>.yaml as a plain dict, None when there is no such option."""
    from omegaconf import OmegaConf

    folder = reward_options_dir()
    path = folder / f"{name}.yaml" if folder is not None else None
    if path is None or not path.is_file():
        return None
    loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    return dict(loaded) if isinstance(loaded, dict) else {}


def reward_specs(rewards: Any) -> list[RewardSpec]:
    """The run's rewards in config order; a ThinkerError (config stage) for anything that cannot be one."""
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(rewards, resolve=True) if OmegaConf.is_config(rewards) else rewards
    if not isinstance(plain, list) or not plain:
        raise ThinkerError(f"{WHERE} must list at least one reward, not {plain!r}", WHERE,
                           f"e.g. {WHERE}=[gsm8k_answer,{{length_penalty:0.1}}] (shipped: "
                           f"{', '.join(shipped_reward_names())})")
    items: list[tuple[str, Any]] = []
    for item in plain:
        if isinstance(item, str):
            items.append((item, 1.0))
        elif isinstance(item, dict) and len(item) == 1:
            items.append(next(iter(item.items())))
        else:
            raise ThinkerError(f"{WHERE} item {item!r} is not a reward name, {{name: weight}} or "
                               "{name: {weight: w, <arguments>}}", WHERE, f"e.g. {WHERE}=[gsm8k_answer,{{length_penalty:0.1}}]")
    names = [name for name, _ in items]
    if len(set(names)) != len(names):
        raise ThinkerError(f"{WHERE} names a reward twice ({', '.join(names)})", WHERE,
                           "list each reward once (its arguments and weight in one item)")
    specs = []
    for name, value in items:
        where = f"{WHERE}: {name}"
        settings = dict(value) if isinstance(value, dict) else {"weight": value}
        weight = settings.pop("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
            raise ThinkerError(f"reward {name!r} has weight {weight!r}, not a number", where,
                               f"give a finite number, e.g. {{{name}: 1.0}}")
        option = _option(str(name)) if "_target_" not in settings else None
        if option is not None:  # the shipped option's target and arguments, the mapping's arguments on top
            settings = {**option, **settings}
        elif "_target_" not in settings:
            if "." not in str(name):
                raise ThinkerError(
                    f"reward {name!r} is neither a conf/reward option nor a dotted path to a callable", where,
                    f"use one of {', '.join(shipped_reward_names())}, or mypkg.module.function on PYTHONPATH")
            settings["_target_"] = str(name)
        target = str(settings.pop("_target_"))
        from thinker.config.targets import missing_package

        if package := missing_package(target):
            raise ThinkerError(f"reward {name!r} names {target}, whose package {package} is not installed", where,
                               "install it, or put your module on PYTHONPATH")
        specs.append(RewardSpec(str(name), float(weight), target, settings))
    return specs


@dataclass
class Reward:
    """A built reward: `fn(prompt, completion, record) -> float`, or with `batched` lists in, a list out."""

    name: str
    weight: float
    fn: Any
    batched: bool = False


def build_rewards(specs: list[RewardSpec]) -> list[Reward]:
    """Import each target and bind its arguments (Hydra's instantiate): a class is built, a function bound."""
    from hydra.utils import get_object, instantiate

    built = []
    for spec in specs:
        where = f"{WHERE}: {spec.name}"
        try:
            target = get_object(spec.target)
            node = {"_target_": spec.target, **spec.arguments}
            fn = instantiate(node) if isinstance(target, type) else (
                instantiate({**node, "_partial_": True}) if spec.arguments else target)
        except Exception as exc:  # noqa: BLE001 - any failure to build it is the user's config, said in one line
            raise ThinkerError(f"reward {spec.name!r} ({spec.target}) could not be built: {_first_line(exc)}",
                               where, "fix its _target_ or arguments", stage="train") from exc
        if not callable(fn):
            raise ThinkerError(f"reward {spec.name!r} ({spec.target}) is not callable", where,
                               "name a function (prompt, completion, record) -> float, or a class with __call__",
                               stage="train")
        built.append(Reward(spec.name, spec.weight, fn, bool(getattr(fn, "batched", False))))
    return built


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _describe(record: Any) -> str:
    return repr(record) if len(repr(record)) <= 120 else repr(record)[:117] + "..."


def score(rewards: list[Reward], prompts: list[str], completions: list[str], records: list[Any],
          record_ids: list[Any] | None = None) -> tuple[list[float], dict[str, list[float]]]:
    """Each completion's weighted total and each reward's own values. A reward that raises, or returns something
    other than a finite number, is one train-stage ThinkerError naming the reward and the record."""
    ids = record_ids if record_ids is not None else list(range(len(records)))
    per_reward: dict[str, list[float]] = {}
    for reward in rewards:
        where = f"{WHERE}: {reward.name}"
        if reward.batched:
            try:
                values = list(reward.fn(prompts, completions, records))
            except Exception as exc:  # noqa: BLE001 - a user's reward failing is one line, not a traceback
                raise ThinkerError(f"reward {reward.name!r} raised {_first_line(exc)} on a batch of records "
                                   f"{ids[0]}..{ids[-1]}", where, "fix the reward function", stage="train") from exc
            if len(values) != len(completions):
                raise ThinkerError(f"reward {reward.name!r} returned {len(values)} values for {len(completions)} "
                                   "completions", where, "return one float per completion", stage="train")
        else:
            values = []
            for i, (prompt, completion, record) in enumerate(zip(prompts, completions, records, strict=True)):
                try:
                    values.append(reward.fn(prompt, completion, record))
                except Exception as exc:  # noqa: BLE001 - a user's reward failing is one line, not a traceback
                    raise ThinkerError(f"reward {reward.name!r} raised {_first_line(exc)} on record {ids[i]} "
                                       f"{_describe(record)}", where, "fix the reward function",
                                       stage="train") from exc
        for i, value in enumerate(values):
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ThinkerError(f"reward {reward.name!r} returned {value!r} for record {ids[i]} "
                                   f"{_describe(records[i])}, not a finite number", where,
                                   "return a float", stage="train")
        per_reward[reward.name] = [float(v) for v in values]
    totals = [sum(r.weight * per_reward[r.name][i] for r in rewards) for i in range(len(completions))]
    return totals, per_reward
