"""`thinker jobs list | status JOB | cancel JOB`: the hosted fine-tuning jobs started from this project
(thinker.providers.jobs_ledger), asked about at their provider through its adapter."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

from thinker.errors import ThinkerError


def _entry(job_id: str):  # noqa: ANN202
    from thinker.providers import jobs_ledger

    entry = jobs_ledger.lookup(job_id)
    if entry is None:
        raise ThinkerError(f"no job {job_id} was started from this project", f"{jobs_ledger.ledger_path()}",
                           "see thinker jobs list")
    return entry


def _list(args: argparse.Namespace) -> int:
    from thinker.commands.model_registry import table
    from thinker.providers import jobs_ledger

    entries = jobs_ledger.jobs()
    if not entries:
        print(f"no hosted jobs started from this project yet ({jobs_ledger.ledger_path()})")
        return 0
    rows = [(e.provider, e.job_id, e.state, e.base_model or "", e.model_id or "",
             time.strftime("%Y-%m-%d %H:%M", time.localtime(e.updated_at)), e.run_dir) for e in entries]
    header = ("provider", "job", "state (last seen)", "base model", "model", "updated", "run folder")
    print(table([header, *rows], rule=True))
    return 0


def _status(args: argparse.Namespace) -> int:
    from thinker.commands.providers import adapter_named
    from thinker.providers import jobs_ledger
    from thinker.providers.adapter import ProviderUnreachable
    from thinker.providers.flow import progress_line

    entry = _entry(args.job)
    try:
        status = adapter_named(entry.provider).status(entry.job_id)
    except ProviderUnreachable as error:
        raise ThinkerError(f"provider={entry.provider} did not answer ({error})", f"job {entry.job_id}",
                           "try again later") from error
    jobs_ledger.append(replace(entry, state=str(status.state), model_id=status.model_id, updated_at=0.0))
    if args.json:  # the design's job status: status, progress, metrics, events, estimatedTimeRemaining
        from thinker.providers.job_status import status_document

        document = status_document(entry.provider, status, run_dir=entry.run_dir, estimated_usd=entry.estimated_usd,
                                   started_at=entry.created_at)
        print(json.dumps(document, indent=2))
        return 0
    print(progress_line(entry.provider, status))
    if status.model_id:
        print(f"model: {status.model_id}")
    if status.error:
        print(f"error: {status.error}")
    for event in status.events[-args.events:]:
        print(f"  {time.strftime('%H:%M:%S', time.localtime(event.created_at))} {event.message}")
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from thinker.commands.providers import adapter_named
    from thinker.providers import jobs_ledger
    from thinker.providers.adapter import ProviderUnreachable

    entry = _entry(args.job)
    try:
        adapter_named(entry.provider).cancel(entry.job_id)
    except ProviderUnreachable as error:
        raise ThinkerError(f"provider={entry.provider} did not answer ({error})", f"job {entry.job_id}",
                           "try again later; the job was not cancelled") from error
    jobs_ledger.append(replace(entry, state="cancelled", updated_at=0.0))
    print(f"cancelled {entry.provider} job {entry.job_id}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("jobs", help="hosted fine-tuning jobs started from this project")
    sub = parser.add_subparsers(dest="jobs_command", required=True)
    sub.add_parser("list", help="every job, with the state last seen").set_defaults(func=_list)
    status = sub.add_parser("status", help="ask the provider where a job stands")
    status.add_argument("job", help="the provider's job id (thinker jobs list)")
    status.add_argument("--events", type=int, default=10, help="how many recent events to show (default 10)")
    status.add_argument("--json", action="store_true", help="the job's status as JSON: status, progress, metrics, "
                        "events, estimatedTimeRemaining, estimatedCost")
    status.set_defaults(func=_status)
    cancel = sub.add_parser("cancel", help="cancel a job at its provider")
    cancel.add_argument("job", help="the provider's job id")
    cancel.set_defaults(func=_cancel)
    from thinker.commands.cli import default_subcommand

    default_subcommand(parser, sub, "list")  # bare `thinker jobs` lists them
