"""`thinker providers list | capabilities NAME`: what each hosted provider can fine-tune, from its adapter's
capabilities() (the same report the config check validates against)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from thinker.errors import ThinkerError


def provider_names() -> list[str]:
    """Every conf/provider option except `none`."""
    from pathlib import Path

    from thinker.launch.app import config_dir

    return sorted(p.stem for p in (Path(config_dir()) / "provider").glob("*.yaml") if p.stem != "none")


def adapter_named(name: str) -> Any:
    from hydra.errors import MissingConfigException

    from thinker.launch.app import compose_config
    from thinker.providers import adapter_for

    if name not in provider_names():
        raise ThinkerError(f"unknown provider {name!r}", "thinker providers",
                           f"choose one of {', '.join(provider_names())}")
    try:
        cfg = compose_config(["backend=provider", f"provider={name}"])
    except MissingConfigException as error:  # pragma: no cover - listed options compose
        raise ThinkerError(f"provider={name} does not compose ({error})", f"conf/provider/{name}.yaml",
                           "fix the option file") from error
    return adapter_for(cfg.provider)


NOTE_WIDTH = 72  # the list stays one screen wide; `thinker providers capabilities NAME` has the whole text


def shorten(text: str, width: int = NOTE_WIDTH) -> str:
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def summary_row(caps: Any) -> tuple[str, ...]:
    if not caps.available:
        return (caps.provider, "no", "-", "-", shorten(caps.unavailable_reason or ""))
    return (caps.provider, "yes", ",".join(caps.supported_methods), ",".join(caps.serverless_inference) or "-",
            shorten(caps.notes[0]) if caps.notes else "")


def markdown_table(caps: list[Any]) -> str:
    """The provider table of docs/providers.md (tests/test_provider_backend.py keeps the page equal to it)."""
    lines = ["| provider | fine-tunes | methods | `method.rank` | schedulers | `provider.options` | "
             "eval without a deployment | `objective=dpo` |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for c in caps:
        if not c.available:
            lines.append(f"| `{c.provider}` | no: {c.unavailable_reason} | - | - | - | - | - | - |")
            continue
        pref = c.preference
        dpo = (f"{', '.join(pref.methods)}; `objective.beta` in {pref.beta_range()}; loss "
               f"{', '.join(pref.losses)}" if pref else f"no: {c.preference_refusal or 'no preference jobs'}")
        rank = c.parameter_ranges.get("method.rank")
        rank_text = rank.describe() if rank and "lora" in c.supported_methods else "-"
        options = ", ".join(f"`{k}`" for k in sorted(c.custom_parameters)) or "-"
        lines.append(f"| `{c.provider}` | yes | {', '.join(c.supported_methods)} | {rank_text} | "
                     f"{', '.join(c.supported_schedulers) or 'its own'} | {options} | "
                     f"{', '.join(c.serverless_inference) or 'none (`evaluation.provider_deploy=true`)'} | {dpo} |")
    return "\n".join(lines)


def _list(args: argparse.Namespace) -> int:
    caps = [adapter_named(name).capabilities() for name in provider_names()]
    if args.json:
        print(json.dumps([c.as_dict() for c in caps], indent=2))
        return 0
    if args.markdown:
        print(markdown_table(caps))
        return 0
    from thinker.commands.model_registry import table

    print(table([("provider", "fine-tunes", "methods", "serverless eval", "note"), *map(summary_row, caps)],
                rule=True))
    return 0


def describe(caps: Any) -> str:
    if not caps.available:
        return (f"provider={caps.provider}: no fine-tuning. {caps.unavailable_reason}\n"
                f"use instead: {', '.join('provider=' + a for a in caps.alternatives)}")
    lines = [f"provider={caps.provider}",
             f"  methods:           {', '.join(caps.supported_methods)}",
             f"  serverless eval:   {', '.join(caps.serverless_inference) or 'none (evaluation.provider_deploy=true)'}",
             f"  schedulers:        {', '.join(caps.supported_schedulers) or 'none to choose'}",
             f"  precisions:        {', '.join(caps.supported_precisions) or '-'}",
             f"  optimizations:     {', '.join(caps.supported_optimizations) or 'the provider decides'}",
             f"  upload:            {caps.upload_format}, at least {caps.min_examples} training examples"
             + (f", at most {caps.max_file_bytes} bytes" if caps.max_file_bytes else "")]
    if caps.learning_rate_note:
        lines.append(f"  learning rate:     {caps.learning_rate_note}")
    lines.append(f"  preference (dpo):  {preference_line(caps)}")
    lines.append(f"  integrations:      {', '.join(caps.integrations) or 'none'} (provider.integrations); hardware: "
                 f"{'provider.hardware' if caps.hardware_selection else 'chosen by the provider'}; output.name "
                 f"{'names the fine-tune' if caps.output_suffix else 'does not reach it'}")
    if caps.parameter_ranges:
        lines.append("  ranges:")
        lines += [f"    {key:<28}{rng.describe()}" for key, rng in sorted(caps.parameter_ranges.items())]
    if caps.refused_keys:
        lines.append("  not honoured (refused when set):")
        lines += [f"    {key:<28}{why}" for key, why in sorted(caps.refused_keys.items())]
    if caps.ignored_keys:
        lines.append("  not settable (dropped with a warning when set):")
        lines += [f"    {key:<28}{why}" for key, why in sorted(caps.ignored_keys.items())]
    if caps.custom_parameters:
        lines.append("  provider.options:")
        for key, spec in sorted(caps.custom_parameters.items()):
            allowed = f" ({'|'.join(spec.enum_values)})" if spec.enum_values else ""
            lines.append(f"    {key:<28}{spec.type}{allowed}: {spec.description}")
    lines += [f"  note: {note}" for note in caps.notes]
    return "\n".join(lines)


def preference_line(caps: Any) -> str:
    """objective=dpo on this provider: its methods, losses and beta range, or why it cannot."""
    pref = caps.preference
    if pref is None:
        return f"no ({caps.preference_refusal or 'no preference fine-tuning'})"
    return (f"methods {', '.join(pref.methods)}; objective.loss {', '.join(pref.losses)}; "
            f"objective.beta in {pref.beta_range()}")


def _capabilities(args: argparse.Namespace) -> int:
    caps = adapter_named(args.name).capabilities()
    print(json.dumps(caps.as_dict(), indent=2) if args.json else describe(caps))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("providers", help="hosted fine-tuning providers and what each supports")
    sub = parser.add_subparsers(dest="providers_command", required=True)
    listing = sub.add_parser("list", help="every provider= option: whether it fine-tunes, which methods")
    listing.add_argument("--json", action="store_true", help="the full capability reports as JSON")
    listing.add_argument("--markdown", action="store_true", help="as the table in docs/providers.md")
    listing.set_defaults(func=_list)
    caps = sub.add_parser("capabilities", help="one provider's capability report")
    caps.add_argument("name", help="a provider= option (thinker providers list)")
    caps.add_argument("--json", action="store_true", help="as JSON")
    caps.set_defaults(func=_capabilities)
    from thinker.commands.cli import default_subcommand

    default_subcommand(parser, sub, "list")  # bare `thinker providers` lists them
