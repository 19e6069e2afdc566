"""`thinker validate|train|eval|run`: the pipeline's stages as commands, for CI (docs/usage.md).

Thin wrappers over the very same Hydra app as `python launch.py` (thinker.launch.app): same composition, outputs,
MLflow runs, run records and exit codes (2 config, 3 validation, 4 training, 5 evaluation, 6 record,
130 interrupted). Anything that is not one of the options below is handed to Hydra as is: overrides
(`method=lora`), `-m` sweeps, `--cfg job`.

    thinker validate
    thinker run --backend=hf_peft --skip-validation trainer.max_steps=5
    thinker train -m method=lora,qlora
"""

from __future__ import annotations

import argparse

STAGES = {
    "validate": "check the dataset against its schema and run the pytest gate",
    "train": "validate, then train on the chosen backend",
    "eval": "validate, then evaluate trained weights (this run folder's, or evaluation.checkpoint_dir)",
    "run": "the full pipeline: validate, train, evaluate",
}


def stage_parser(stage: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"thinker {stage}", description=f"{STAGES[stage]}.",
        epilog="Every other argument goes to Hydra unchanged: overrides (key=value), -m for a sweep, --cfg job. "
               "Exit codes name the failing stage: 2 config, 3 validation, 4 training, 5 evaluation, 6 record.",
    )
    parser.add_argument("--backend", metavar="NAME",
                        help="the backend option (conf/backend/*.yaml; hf_peft is an alias of local)")
    parser.add_argument("--skip-validation", action="store_true",
                        help="skip the dataset schema and pytest gate (debug only; the run record says so)")
    parser.add_argument("--config-dir", metavar="DIR", help="an extra config folder searched before conf/")
    parser.add_argument("--config-name", metavar="NAME", help="the primary config (default: config)")
    parser.add_argument("-m", "--multirun", action="store_true", help="a sweep over comma-separated values")
    return parser


def hydra_command_line(stage: str, argv: list[str]) -> list[str]:
    """The Hydra command line `thinker <stage> argv` stands for."""
    parser = stage_parser(stage)
    options, passthrough = parser.parse_known_intermixed_args(argv)
    # Hydra wants its flags (--cfg job) before the overrides (key=value)
    overrides = [arg for arg in passthrough if "=" in arg and not arg.startswith("-")]
    hydra_flags = [arg for arg in passthrough if arg not in overrides]
    if any(arg.lstrip("+").startswith("stage=") for arg in overrides):
        parser.error(f"`thinker {stage}` sets the stage itself; drop the stage= override")
    if stage == "validate" and options.skip_validation:
        parser.error("`thinker validate --skip-validation` would skip the only thing it does")
    line = (["-m"] if options.multirun else []) + hydra_flags
    if options.config_dir:
        line += ["--config-dir", options.config_dir]
    if options.config_name:
        line += ["--config-name", options.config_name]
    line.append(f"stage={stage}")
    if options.backend:
        line.append(f"backend={options.backend}")
    if options.skip_validation:
        line.append("validation.enabled=false")
    return line + overrides


def run_stage(stage: str, argv: list[str]) -> int:
    from thinker.launch.app import launch

    launch(hydra_command_line(stage, argv))  # exits non-zero (SystemExit) when a stage fails
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Entries for `thinker --help`; thinker.commands.cli hands these commands to run_stage before parsing."""
    for stage, help_text in STAGES.items():
        subparsers.add_parser(stage, help=help_text, add_help=False)
