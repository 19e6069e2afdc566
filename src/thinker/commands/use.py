"""`thinker chat | generate`: use a trained model, from its run folder or its registry name.

    thinker chat outputs/2025-01-01/12-00-00                  # interactive: one line in, one completion out
    thinker chat my-finetune --prompt "Claim: ..." --max-new-tokens 64 --sample
    thinker generate my-finetune --input prompts.jsonl --output out.jsonl [--prompt-field prompt] [--batch-size 8]

Both build the config the run was trained with (the run folder's .hydra/config.yaml; for a registry name, its
entry's run folder, else the default config with `model=<name>`), instantiate that config's backend and sample
through `backend.sampler(report, cfg)`, the very function the eval stage scores with, so what you see here is
what evaluation saw, on every backend. Prompts are rendered as the run's data task rendered them in training
(thinker.tasks: `Prompt: ...` for prompt/completion data, the tokenizer's chat template for chat data);
decoding comes from `evaluation.decoding` (--max-new-tokens and --sample override it).

Every error about the inputs (a folder without weights, an unknown registry name, a registry entry whose run
folder is gone, an unreadable or malformed prompts file, a bad override) is one `[thinker] error:` line with
exit code 2 (config/input). Torch and transformers are imported only when a sampler is built.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thinker.errors import ExitCode, ThinkerError

if TYPE_CHECKING:
    from collections.abc import Callable

    from omegaconf import DictConfig

    from thinker.backends import Generate, WeightsRef

HYDRA_CONFIG = Path(".hydra") / "config.yaml"
RUN_RECORD = "run_record.json"
WEIGHTS = "weights"
COMPLETION_FIELD = "completion"


def input_error(what: str, where: str, fix: str) -> ThinkerError:
    return ThinkerError(what, where, fix, stage="config", code=ExitCode.CONFIG)


@dataclass
class Target:
    """What to sample: the training config and the weights, with a label for messages."""

    cfg: DictConfig
    weights: WeightsRef
    label: str
    run_dir: Path | None = None  # the run that trained them, when known (a backend may keep files there)


# ------------------------------------------------------------------ finding the model and its config


def _load_run_config(run_dir: Path) -> DictConfig:
    from omegaconf import OmegaConf

    path = run_dir / HYDRA_CONFIG
    if not path.is_file():
        raise input_error(f"{run_dir} has no {HYDRA_CONFIG} (the config the run was trained with)", str(run_dir),
                          "pass a run folder made by `python launch.py` / `thinker run` (outputs/<date>/<time>), "
                          "or a registry name")
    try:
        cfg = OmegaConf.load(path)
    except Exception as error:  # a yaml error, a truncated file
        raise input_error(f"{path} does not load ({error})", str(path), "restore the run folder's config") from None
    return cfg


def _run_weights(run_dir: Path) -> WeightsRef:
    """The weights the run's record names (a remote URI stays one), else <run>/weights."""
    from thinker.backends import WeightsRef
    from thinker.evaluation.checkpoint import is_weights_dir

    recorded = None
    record = run_dir / RUN_RECORD
    if record.is_file():
        from thinker.tracking.run_record import read_record

        try:
            recorded = read_record(record).get("stages", {}).get("train", {}).get("weights")
        except (OSError, ValueError):
            recorded = None  # an unreadable record: fall back to the folder's weights/
    if recorded and not WeightsRef(str(recorded)).is_local:
        return WeightsRef(str(recorded))
    candidates = ([Path(recorded)] if recorded else []) + [run_dir / WEIGHTS]
    for folder in candidates:
        if folder.is_dir() and is_weights_dir(folder):
            return WeightsRef.local(folder)
    raise input_error(f"{run_dir} has no trained weights (looked for {' and '.join(str(c) for c in candidates)})",
                      str(run_dir), "train it first (thinker train / thinker run with hydra.run.dir=<that folder>)")


def _from_run_folder(run_dir: Path) -> Target:
    if not (run_dir / HYDRA_CONFIG).is_file() and run_dir.name == WEIGHTS and (run_dir.parent / HYDRA_CONFIG).is_file():
        run_dir = run_dir.parent  # the run's weights/ folder was given
    cfg = _load_run_config(run_dir)
    return Target(cfg, _run_weights(run_dir), str(run_dir), run_dir)


def _compose_default(overrides: list[str]) -> DictConfig:
    """The default config with `overrides` (model=<registry name> composes like in launch.py)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from thinker.launch.app import compose_config

    try:
        return compose_config(overrides)
    except (HydraException, OmegaConfBaseException) as error:
        raise input_error(f"the config does not compose ({error})", " ".join(overrides),
                          "check the overrides") from None


def _from_registry(name: str) -> Target:
    import difflib

    from thinker.backends import WeightsRef
    from thinker.models.registry import Registry

    registry = Registry()
    entries = registry.entries()
    entry = next((e for e in entries if e.model_name == name), None)
    if entry is None:
        close = difflib.get_close_matches(name, [e.model_name for e in entries], n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise input_error(f"{name!r} is neither a run folder nor a model in the registry", str(registry.path),
                          f"{hint}see `thinker models list` for the registered names")
    run_dir = entry.extra.get("run_dir") if isinstance(entry.extra, dict) else None
    if run_dir:
        if not Path(run_dir).is_dir():
            raise input_error(f"the run folder of {name} is gone ({run_dir})", f"registry entry {name}",
                              f"restore that folder, or remove the entry with `thinker models rm {name}`")
        cfg = _load_run_config(Path(run_dir))
    else:  # an imported model, or weights registered without a run folder: the default config on that model
        backend = entry.extra.get("backend") if isinstance(entry.extra, dict) else None
        cfg = _compose_default([f"model={name}", *([f"backend={backend}"] if backend else [])])
    if entry.local_path:
        if not Path(entry.local_path).is_dir():
            raise input_error(f"the weights of {name} are gone ({entry.local_path})", f"registry entry {name}",
                              f"restore that folder, or remove the entry with `thinker models rm {name}`")
        weights = WeightsRef.local(entry.local_path)
    elif entry.weights_uri:
        weights = WeightsRef(entry.weights_uri)
    else:
        raise input_error(f"the registry entry {name} names no weights", str(registry.path),
                          "fix the entry (local_path or weights_uri)")
    return Target(cfg, weights, name, Path(run_dir) if run_dir else None)


def resolve_target(model: str) -> Target:
    """A run folder (or its weights/ folder) when `model` is an existing folder, else a registry name."""
    path = Path(model).expanduser()
    if path.is_dir():
        return _from_run_folder(path)
    if os.sep in model or model.startswith(".") or model.startswith("~"):
        raise input_error(f"no such run folder {model}", model, "pass an existing run folder or a registry name")
    return _from_registry(model)


def apply_overrides(cfg: DictConfig, overrides: list[str], max_new_tokens: int | None, sample: bool) -> DictConfig:
    """A copy of `cfg` with key=value overrides on existing keys, then the decoding flags."""
    from omegaconf import DictConfig as _DictConfig
    from omegaconf import OmegaConf

    cfg = copy.deepcopy(cfg)
    OmegaConf.set_struct(cfg, False)
    for item in overrides:
        key, sep, _value = item.partition("=")
        key = key.strip()
        if not sep or not key or key.startswith(("+", "~")):
            raise input_error(f"{item!r} is not a key=value override", "overrides",
                              "pass overrides of the run's config as key=value (e.g. trainer.accelerator=cpu)")
        current = OmegaConf.select(cfg, key, default=KeyError, throw_on_missing=False)
        if current is KeyError:
            raise input_error(f"the run's config has no key {key}", item, "override an existing key")
        if isinstance(current, _DictConfig):
            raise input_error(f"{key} is a config group; a trained run's config is fixed", item,
                              f"override its keys instead ({key}.<key>=value)")
        value = OmegaConf.from_dotlist([item])
        OmegaConf.update(cfg, key, OmegaConf.select(value, key), merge=True)
    if max_new_tokens is not None:
        if max_new_tokens < 1:
            raise input_error(f"--max-new-tokens must be at least 1 (got {max_new_tokens})", "--max-new-tokens",
                              "pass a positive number")
        cfg.evaluation.decoding.max_new_tokens = int(max_new_tokens)
    if sample:
        cfg.evaluation.decoding.do_sample = True
    return cfg


def build_generate(target: Target, cfg: DictConfig) -> Generate:
    """The eval stage's sampler for these weights: the run's backend, its sampler(report, cfg)."""
    from thinker.backends import TrainingReport, instantiate_backend
    from thinker.console import quiet_third_party

    quiet_third_party()  # what loading a model prints says nothing a chat user acts on

    backend = instantiate_backend(cfg)
    backend.check(cfg, os.environ)
    report = TrainingReport(backend=str(cfg.backend.name), weights=target.weights,
                            extra={"run_dir": str(target.run_dir)} if target.run_dir else {})
    return backend.sampler(report, cfg)


def prompt_renderer(cfg: DictConfig) -> Callable[[str], str]:
    """A user's prompt as the run's data task rendered prompts in training; the model's tokenizer is loaded
    once, and only for a task that renders with it (chat templates), as the eval stage loads it."""
    from functools import cache

    from thinker.models.loading import load_training_tokenizer
    from thinker.tasks import task_of

    task = task_of(cfg.data)
    tokenizer = cache(lambda: load_training_tokenizer(cfg))
    return lambda text: task.user_prompt(text, tokenizer)


def prepare(args: argparse.Namespace) -> tuple[Target, DictConfig]:
    target = resolve_target(args.model)
    cfg = apply_overrides(target.cfg, list(args.overrides or []), args.max_new_tokens, bool(args.sample))
    return target, cfg


def _decoding_words(cfg: DictConfig) -> str:
    d = cfg.evaluation.decoding
    style = f"sampled, temperature {d.temperature}, top_p {d.top_p}" if d.do_sample else "greedy"
    return f"{style}, up to {d.max_new_tokens} new tokens"


def _note(message: str) -> None:
    print(f"[thinker] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ thinker chat


def chat_command(args: argparse.Namespace) -> int:
    target, cfg = prepare(args)
    render_prompt = prompt_renderer(cfg)
    _note(f"loading {target.label} ({target.weights.uri}; {_decoding_words(cfg)})")
    try:
        generate = build_generate(target, cfg)
        if args.prompt is not None:
            print(generate([render_prompt(args.prompt)])[0], flush=True)
            return 0
        interactive = sys.stdin.isatty()
        _note("type a prompt and press Enter; an empty line, Ctrl+D or Ctrl+C ends (each prompt stands alone)")
        while True:
            try:
                line = input("> " if interactive else "")
            except EOFError:
                break
            if not line.strip():
                break
            print(generate([render_prompt(line)])[0], flush=True)
    except KeyboardInterrupt:  # the loop ends cleanly; a single --prompt answer was interrupted
        print(file=sys.stderr)
        return 0 if args.prompt is None else int(ExitCode.INTERRUPTED)
    return 0


# ------------------------------------------------------------------ thinker generate


BAD_LINES_SHOWN = 5  # a prompts file with many bad lines: the first few, each with its own reason, and a count


def read_prompt_records(path: Path, field: str) -> list[dict[str, Any]]:
    """The JSON objects of `path` (blank lines skipped); every line must be an object with a string `field`.
    Every bad line is found before the model loads, and the first BAD_LINES_SHOWN are named in one error."""
    from thinker.errors.json_lines import parse_problem
    from thinker.paths import check_input_file
    from thinker.validation.schema_language import _json_type

    check_input_file(path, "--input", where="--input")  # a named pipe would block here forever
    if not path.is_file():
        raise input_error(f"no prompts file {path}", "--input", "pass a JSONL file of records")
    records, problems = [], []
    with path.open(encoding="utf-8") as fh:
        try:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except (ValueError, RecursionError) as error:
                    problems.append(f"line {number}: {parse_problem(error, line)}")
                    continue
                if not isinstance(record, dict):
                    problems.append(f"line {number}: a JSON {_json_type(record)}, not an object")
                elif field not in record:
                    problems.append(f"line {number}: field {field!r} is missing")
                elif not isinstance(record[field], str):
                    problems.append(f"line {number}: field {field!r} is {_json_type(record[field])}, not a string")
                else:
                    records.append(record)
        except UnicodeDecodeError as error:
            raise input_error(f"{path} is not UTF-8 text ({error.reason})", "--input", "pass a UTF-8 JSONL file") from None
    if problems:
        shown = "; ".join(problems[:BAD_LINES_SHOWN])
        if len(problems) > BAD_LINES_SHOWN:
            shown += f"; and {len(problems) - BAD_LINES_SHOWN} more"
        noun = "bad line" if len(problems) == 1 else "bad lines"
        raise input_error(f"{path} has {len(problems)} {noun} ({shown})", "--input",
                          f"make every line a JSON object with a string {field!r} (or pass --prompt-field)")
    return records


def generate_command(args: argparse.Namespace) -> int:
    from thinker.tracking.atomic import atomic_write

    target, cfg = prepare(args)
    render_prompt = prompt_renderer(cfg)
    field = args.prompt_field or str(cfg.data.get("prompt_field") or "prompt")
    batch_size = int(args.batch_size or cfg.evaluation.get("batch_size") or 8)
    if batch_size < 1:
        raise input_error(f"--batch-size must be at least 1 (got {batch_size})", "--batch-size", "pass a positive number")
    source, output = Path(args.input).expanduser(), Path(args.output).expanduser()
    records = read_prompt_records(source, field)  # every line checked before the model loads
    _note(f"loading {target.label} ({target.weights.uri}; {_decoding_words(cfg)})")
    generate = build_generate(target, cfg)
    total = len(records)

    def write(fh: Any) -> None:
        for start in range(0, total, batch_size):
            batch = records[start:start + batch_size]
            completions = generate([render_prompt(r[field]) for r in batch])
            for record, completion in zip(batch, completions, strict=True):
                fh.write((json.dumps({**record, COMPLETION_FIELD: completion}, ensure_ascii=False) + "\n").encode())
            _note(f"generated {start + len(batch)}/{total}")

    atomic_write(output, write)
    _note(f"wrote {total} records with a {COMPLETION_FIELD!r} field to {output}")
    return 0


# ------------------------------------------------------------------ argparse
#
# `thinker chat RUN --prompt "..." trainer.accelerator=cpu`: argparse cannot mix a `*` positional (the
# overrides) with options after it, so everything after the model is taken as it comes (REMAINDER) and parsed
# again, intermixed, by the command's own parser (options before the model were already parsed).

EPILOG = ("Sampling goes through the run's backend exactly as the eval stage does; prompts are rendered as in "
          "training. Overrides (key=value) change the run's config for this command only, e.g. "
          "trainer.accelerator=cpu. Exit codes: 0 ok, 2 bad input (no weights, unknown model, bad prompts file "
          "line, bad override), 130 interrupted.")
CHAT_DESCRIPTION = ("Read a prompt per line and print the model's completion; an empty line, Ctrl+D or Ctrl+C "
                    "ends. With --prompt: one answer, then exit.")
GENERATE_DESCRIPTION = ("Read JSONL records and write each with a `completion` field added (an existing one is "
                        "replaced); the output is written atomically, with a progress line every batch.")


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-new-tokens", type=int, metavar="N",
                        help="tokens to generate (default: the run's evaluation.decoding.max_new_tokens)")
    parser.add_argument("--sample", action="store_true", default=None,
                        help="sample (evaluation.decoding temperature/top_p) instead of greedy decoding")


def _chat_options(parser: argparse.ArgumentParser) -> None:
    _common_options(parser)
    parser.add_argument("--prompt", help="answer this one prompt and exit")


def _generate_options(parser: argparse.ArgumentParser) -> None:
    _common_options(parser)
    parser.add_argument("--input", metavar="FILE", help="JSONL, one object per line (required)")
    parser.add_argument("--output", metavar="FILE", help="JSONL to write, replaced atomically (required)")
    parser.add_argument("--prompt-field", metavar="NAME",
                        help="the field holding the prompt (default: the run's data.prompt_field, usually prompt)")
    parser.add_argument("--batch-size", type=int, metavar="N",
                        help="prompts per generation batch, and a progress line every N records "
                             "(default: the run's evaluation.batch_size)")


COMMANDS = {"chat": (_chat_options, CHAT_DESCRIPTION), "generate": (_generate_options, GENERATE_DESCRIPTION)}


def _own_parser(command: str) -> argparse.ArgumentParser:
    options, description = COMMANDS[command]
    parser = argparse.ArgumentParser(prog=f"thinker {command}", description=description, epilog=EPILOG,
                                     usage=f"thinker {command} MODEL [options] [key=value ...]")
    options(parser)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="overrides of the run's config")
    return parser


def complete_args(command: str, args: argparse.Namespace) -> argparse.Namespace:
    """`args` with the options and overrides that came after the model parsed in."""
    parser = _own_parser(command)
    rest = list(args.overrides or [])
    del args.overrides  # the positional is parsed again from `rest`
    args = parser.parse_intermixed_args(rest, namespace=args)
    if command == "generate":
        missing = [flag for flag, value in (("--input", args.input), ("--output", args.output)) if not value]
        if missing:
            parser.error(f"the following arguments are required: {', '.join(missing)}")
    return args


def _add_command(subparsers: argparse._SubParsersAction, command: str, help_text: str, func: Any) -> None:
    options, description = COMMANDS[command]
    parser = subparsers.add_parser(command, help=help_text, description=description, epilog=EPILOG,
                                   usage=f"thinker {command} MODEL [options] [key=value ...]")
    parser.add_argument("model", help="a run folder (outputs/<date>/<time>, or its weights/) or a registry name")
    options(parser)
    parser.add_argument("overrides", nargs=argparse.REMAINDER, metavar="key=value",
                        help="overrides of the run's config, e.g. trainer.accelerator=cpu")
    parser.set_defaults(func=lambda args: func(complete_args(command, args)))


def register(subparsers: argparse._SubParsersAction) -> None:
    _add_command(subparsers, "chat", "talk to a trained model (a run folder or a registry name)", chat_command)
    _add_command(subparsers, "generate", "add a model's completion to every record of a JSONL file", generate_command)
