"""`thinker estimate [overrides...] [-m] [--json]`: what a run (or, with -m, each job of a sweep and all of
them) would train on, take and cost, before anything runs (docs/costs.md). The tokens are counted with the
model's tokenizer, loaded (and a builtin model built) if this machine has not loaded it yet."""

from __future__ import annotations

import argparse
import json
import sys

from thinker.errors import ExitCode


def _compose(overrides: list[str]):  # noqa: ANN202
    from thinker.config.check import check_complete
    from thinker.launch.app import compose_config

    cfg = compose_config(overrides)
    check_complete(cfg)
    return cfg


def estimate(overrides: list[str], sweep: bool, as_json: bool) -> int:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from thinker.estimate.cost import format_seconds
    from thinker.estimate.sweep import estimate_jobs, job_overrides, total_usd
    from thinker.launch.entry import format_hydra_error
    from thinker.tracking.secrets import mask_text, register_override_secrets

    register_override_secrets(overrides)
    try:
        jobs = job_overrides(overrides) if sweep else [list(overrides)]
        estimates = estimate_jobs(jobs, _compose, heavy=True)
    except (HydraException, OmegaConfBaseException) as err:
        text = str(err) if err.__cause__ is None else f"{err}\n{err.__cause__}"
        print(mask_text(format_hydra_error(text)), file=sys.stderr)
        return int(ExitCode.CONFIG)
    total = total_usd(estimates)
    seconds = [j.estimate.seconds for j in estimates]
    total_seconds = sum(s for s in seconds if s is not None) if all(s is not None for s in seconds) else None
    if as_json:
        print(json.dumps({"jobs": [{"overrides": j.overrides, **j.estimate.as_dict()} for j in estimates],
                          "total": {"jobs": len(estimates), "usd": total, "seconds": total_seconds,
                                    "tokens": sum(j.estimate.tokens.tokens for j in estimates if j.estimate.tokens)}},
                         indent=2))
        return 0
    for number, job in enumerate(estimates):
        label = " ".join(job.overrides) or "(defaults)"
        print(f"job {number}: {label}\n  {job.estimate.line()}" if sweep else job.estimate.line())
    if sweep:
        usd = f"${total:,.4f}" if total is not None else "cost unknown"
        time_text = f", ~{format_seconds(total_seconds)} one after another" if total_seconds is not None else ""
        print(f"total: {len(estimates)} jobs, {usd}{time_text}")
    return 0


def _estimate(args: argparse.Namespace) -> int:
    return estimate(args.overrides, args.multirun, args.json)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "estimate", help="tokens, time and cost of a run (or of every job of a sweep) before it runs",
        description="Count the tokens a run with these overrides trains on (with the model's tokenizer and the "
                    "run's own data code), then its time and cost on its backend (docs/costs.md).")
    parser.add_argument("overrides", nargs="*", metavar="OVERRIDE",
                        help="Hydra overrides, as for python launch.py (group=option, key=value, a,b for -m)")
    parser.add_argument("-m", "--multirun", action="store_true", help="a sweep: one estimate per job, and the total")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=_estimate)
