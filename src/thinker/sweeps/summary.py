"""A sweep's MLflow parent run and its summary: the SweepSummary Hydra callback (the launching process; what
every job needs to know about its sweep is thinker.sweeps.plan).

open_parent creates the parent run when the multirun starts (logger=mlflow only). finish_sweep, once every job
has ended, builds one row per job from the run records (job, overrides, objective, status, time, MLflow run),
writes it into the sweep folder as `sweep_summary.md`, `.csv` and `.json`, plots the jobs' held-out loss
curves (each child run's val_loss history) as `val_loss.png`, logs all of them on the parent, tags the best
job (`best_job`, `best_run_id` on the parent, `best=true` on its child) and closes the parent: FINISHED when
every job succeeded, KILLED when the sweep was interrupted, FAILED otherwise. The objective is
hparams_search.objective ranked in hparams_search.direction when the sweep has one (else val_loss, else
train_loss, minimised); an Optuna sweep's summary also describes its study (study_state), which may hold the
trials of earlier runs of the same command.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import os
import socket
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from thinker.sweeps.plan import (
    SWEEP_FILE,
    check_search,
    job_label,
    job_records,
    objective_of,
    plan,
    quiet_optuna,
    summarize,
)
from thinker.tracking.atomic import atomic_write, atomic_write_json, atomic_write_text
from thinker.tracking.secrets import mask, mask_text

if TYPE_CHECKING:
    from thinker.sweeps.plan import SweepInfo, SweepOutcome

log = logging.getLogger("thinker")

TABLE_NAME = "sweep_summary"  # .md, .csv, .json in the sweep folder and on the parent run
PLOT_NAME = "val_loss.png"
_MAX_TAG = 5000


@dataclass
class JobRow:
    job: int
    overrides: str  # the job's label: what it changes
    objective_name: str | None
    objective: float | None
    status: str  # succeeded | reused | failed | crashed | interrupted | running | unreadable
    seconds: float | None
    run_id: str | None
    reused_from: str | None = None
    error: str | None = None
    best: bool = False
    usd: float | None = None  # what the job's training cost (the run record's cost.actual; docs/costs.md)
    estimated_usd: float | None = None  # its estimate at config check


def _cost(record: dict[str, Any], which: str) -> float | None:
    value = ((record.get("cost") or {}).get(which) or {}).get("usd")
    return float(value) if isinstance(value, int | float) else None


def _seconds(record: dict[str, Any]) -> float | None:
    try:
        fmt = "%Y-%m-%dT%H:%M:%SZ"
        start = dt.datetime.strptime(str(record["timestamp"]), fmt)
        return (dt.datetime.strptime(str(record["finished_at"]), fmt) - start).total_seconds()
    except (KeyError, TypeError, ValueError):
        return None


def job_rows(sweep_dir: Path, info: SweepInfo | None) -> list[JobRow]:
    rows = []
    keys = info.swept_keys if info else []
    objective = info.objective if info else None
    for folder, record in job_records(sweep_dir):
        if record is None:
            rows.append(JobRow(int(folder.name), "", None, None, "unreadable", None, None))
            continue
        status = str(record.get("exit_status"))
        reused = record.get("reused_from")
        name, value = objective_of(record.get("metrics") or {}, objective) if status == "succeeded" else (None, None)
        rows.append(JobRow(
            job=int(folder.name), overrides=mask_text(job_label(list(record.get("overrides") or []), keys)),
            objective_name=name, objective=value, status="reused" if reused and status == "succeeded" else status,
            seconds=_seconds(record), run_id=record.get("mlflow_run_id"), reused_from=reused,
            error=record.get("error"), usd=_cost(record, "actual"), estimated_usd=_cost(record, "estimate"),
        ))
    return rows


def best_row(rows: list[JobRow], direction: str = "minimize") -> JobRow | None:
    """The succeeded (or reused) job with the best objective; the objective most jobs report decides."""
    scored = [r for r in rows if r.objective is not None and r.status in ("succeeded", "reused")]
    if not scored:
        return None
    names = [r.objective_name for r in scored]
    common = max(set(names), key=names.count)
    scored = [r for r in scored if r.objective_name == common]
    pick = max if direction == "maximize" else min
    return pick(scored, key=lambda r: r.objective)


def _objective_header(rows: list[JobRow], info: SweepInfo | None = None) -> str:
    if info is not None and info.objective:
        return info.objective
    names = {r.objective_name for r in rows if r.objective_name}
    return names.pop() if len(names) == 1 else "objective"


def markdown_table(title: str, rows: list[JobRow], best: JobRow | None, info: SweepInfo | None = None,
                   study: dict[str, Any] | None = None) -> str:
    header = _objective_header(rows, info)
    done = sum(r.status in ("succeeded", "reused") for r in rows)
    reused = sum(r.status == "reused" for r in rows)
    lines = [f"# {title}", "", f"{done} of {len(rows)} jobs succeeded ({reused} reused)."]
    if info is not None and info.objective:
        lines.append(f"Objective: {info.objective} ({info.direction}).")
    if best is not None:
        lines.append(f"Best: #{best.job} {best.overrides} ({best.objective_name} {best.objective:.4f}).")
    if study:
        lines.append(f"Optuna study {study['name']} ({study['storage']}): {study['trials']} trials in all, "
                     f"{study['complete']} complete, {study['failed']} failed"
                     + (f"; its best value {study['best_value']:.4f}" if study.get("best_value") is not None
                        else "") + ".")
    lines.append(cost_line(rows))
    lines += ["", f"| job | overrides | {header} | status | time (s) | cost ($) | MLflow run |",
              "|---|---|---|---|---|---|---|"]
    for r in rows:
        value = f"{r.objective:.4f}" if r.objective is not None else ""
        status = r.status + (f" from {r.reused_from}" if r.reused_from else "") + (" (best)" if r.best else "")
        seconds = f"{r.seconds:.0f}" if r.seconds is not None else ""
        cost = f"{r.usd:.4f}" if r.usd is not None else ""
        lines.append(f"| #{r.job} | {r.overrides.replace('|', '/')} | {value} | {status} | {seconds} | {cost} | "
                     f"{r.run_id or ''} |")
    return "\n".join(lines) + "\n"


def cost_line(rows: list[JobRow]) -> str:
    """`Cost: $0.0123 in all (estimated $0.0100).` over the jobs that trained (a reused job cost nothing now)."""
    trained = [r for r in rows if r.status != "reused"]
    spent = sum(r.usd for r in trained if r.usd is not None)
    estimated = [r.estimated_usd for r in trained if r.estimated_usd is not None]
    unknown = sum(r.usd is None for r in trained)
    text = f"Cost: ${spent:.4f} in all"
    if estimated:
        text += f" (estimated ${sum(estimated):.4f})"
    return text + (f"; {unknown} job(s) without a cost." if unknown else ".")


def write_tables(sweep_dir: Path, info: SweepInfo | None, rows: list[JobRow], best: JobRow | None,
                 study: dict[str, Any] | None = None) -> list[Path]:
    title = info.name if info else Path(sweep_dir).name
    md = atomic_write_text(Path(sweep_dir) / f"{TABLE_NAME}.md", markdown_table(title, rows, best, info, study))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(asdict(rows[0]).keys()) if rows else ["job"])
    writer.writeheader()
    for r in rows:
        writer.writerow(asdict(r))
    table = atomic_write_text(Path(sweep_dir) / f"{TABLE_NAME}.csv", buffer.getvalue())
    data = {
        "sweep": title, "sweep_dir": str(Path(sweep_dir).resolve()),
        "parent_run_id": info.parent_run_id if info else None,
        "overrides": info.overrides if info else [], "swept_keys": info.swept_keys if info else [],
        "direction": info.direction if info else "minimize", "objective": _objective_header(rows, info),
        "study": study, "best": asdict(best) if best else None, "jobs": [asdict(r) for r in rows],
        "usd": sum(r.usd for r in rows if r.usd is not None and r.status != "reused"),
    }
    js = atomic_write_json(Path(sweep_dir) / f"{TABLE_NAME}.json", mask(data))
    return [md, table, js]


def plot_losses(path: Path, title: str, rows: list[JobRow], histories: dict[int, list[tuple[int, float]]]) -> Path | None:
    """One held-out loss curve per job (the best one thicker, failed ones dashed); None without any curve."""
    fig = loss_figure(title, rows, histories)
    return None if fig is None else atomic_write(path, lambda fh: fig.savefig(fh, format="png"))


def loss_figure(title: str, rows: list[JobRow], histories: dict[int, list[tuple[int, float]]]) -> Any:
    curves = [(r, sorted(histories[r.job])) for r in rows if histories.get(r.job)]
    if not curves:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5), dpi=100, layout="constrained")
    ax = fig.subplots()
    for row, points in curves:
        steps, values = zip(*points, strict=True)
        ok = row.status in ("succeeded", "reused")
        ax.plot(steps, values, marker="o", markersize=3, linewidth=2.6 if row.best else 1.2,
                linestyle="-" if ok else "--",
                label=f"#{row.job} {row.overrides}" + (" (best)" if row.best else "") + ("" if ok else f" ({row.status})"))
    ax.set_xlabel("optimizer step")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers: no 2.5 tick
    ax.set_ylabel("val_loss (held-out)")
    ax.set_title(f"{title}: held-out loss per job")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def study_state(info: SweepInfo, storage: str | None) -> dict[str, Any] | None:
    """The Optuna study after this sweep (it may hold trials of earlier runs of the same command): its name,
    storage (masked), direction, trials in all, complete, failed, best value. None when it cannot be read."""
    if not storage or not info.study_name:
        return None
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.load_study(study_name=info.study_name, storage=storage)
        states = [t.state.name for t in study.trials]
        complete = states.count("COMPLETE")
        best_value = float(study.best_value) if complete else None
        direction = study.direction.name.lower()
    except Exception as exc:  # noqa: BLE001 - the summary goes on without it
        log.warning("could not read the Optuna study %s: %s", info.study_name, mask_text(str(exc)))
        return None
    return {"name": info.study_name, "storage": info.storage, "direction": direction, "trials": len(states),
            "complete": complete, "failed": states.count("FAIL"), "best_value": best_value}


# ---------------------------------------------------------------- MLflow


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def close_orphaned_parents(client: Any, experiment_id: str) -> list[str]:
    """Mark KILLED the parent runs still RUNNING whose launching process on this machine is gone (a sweep
    killed with SIGKILL, or a machine that rebooted mid-sweep): the UI must not show them as in progress.
    Parents launched on other machines are left alone: whether their process lives cannot be told here."""
    host = socket.gethostname()
    query = "tags.sweep_parent = 'true' and attributes.status = 'RUNNING' and tags.sweep_host = '" + host + "'"
    closed = []
    for run in client.search_runs([experiment_id], filter_string=query, max_results=200):
        pid = run.data.tags.get("sweep_pid", "")
        if pid.isdigit() and not process_alive(int(pid)):
            client.set_terminated(run.info.run_id, status="KILLED")
            closed.append(run.info.run_id)
            print(f"[sweep] parent run {run.info.run_id} ({run.info.run_name}) was left RUNNING by a sweep whose "
                  f"process {pid} is gone; marked KILLED", flush=True)
    return closed


def open_parent(config: Any, info: SweepInfo) -> str | None:
    """Create the sweep's parent run (a logger with `mlflow: true`) and note it in `info`; returns the tracking URI
    used."""
    from omegaconf import OmegaConf

    if not bool(OmegaConf.select(config, "logger.mlflow", default=False)):
        return None
    if not bool(OmegaConf.select(config, "debug", default=False)):
        from thinker.console import quiet_third_party

        quiet_third_party()  # MLflow's "Creating initial database tables" and alembic's migrations
    from thinker.paths import project_root
    from thinker.tracking.mlflow_run import ensure_experiment, get_client, tracking_uri
    from thinker.tracking.provenance import git_commit

    uri = tracking_uri(OmegaConf.select(config, "logger.tracking_uri", default=None))
    client = get_client(uri)
    experiment_id = ensure_experiment(client, str(OmegaConf.select(config, "logger.experiment_name")))
    keys = ", ".join(k.rsplit(".", 1)[-1] for k in info.swept_keys) or "nothing"
    jobs = f"{info.total_jobs} jobs" if info.total_jobs else "jobs"
    tags = {
        "sweep_parent": "true", "sweep_name": info.name, "sweep_dir": info.sweep_dir, "sweep_overrides": " ".join(info.overrides)[:_MAX_TAG],
        "sweep_keys": ",".join(info.swept_keys), "sweeper": info.sweeper, "sweep_jobs": info.total_jobs,
        "sweep_objective": info.objective, "sweep_direction": info.direction if info.objective else None,
        "optuna_study": info.study_name, "optuna_storage": info.storage,
        "git_commit": git_commit(project_root() or Path.cwd()),
        "mlflow.note.content": f"Sweep over {keys} ({info.sweeper} sweeper, {jobs}); each job is a child run. "
                               f"Summary: {TABLE_NAME}.md and {PLOT_NAME} (when the sweep ends). "
                               f"Folder: {info.sweep_dir}",
    }
    close_orphaned_parents(client, experiment_id)
    tags.update(sweep_host=socket.gethostname(), sweep_pid=os.getpid())
    run = client.create_run(experiment_id, run_name=info.name,
                            tags={k: str(v) for k, v in mask(tags).items() if v is not None})
    info.parent_run_id, info.experiment_id, info.tracking_uri = run.info.run_id, experiment_id, mask_text(uri)
    print(f"[sweep] {info.name}: MLflow parent run {run.info.run_id} ({jobs}, folder {info.sweep_dir})", flush=True)
    return uri


def _histories(client: Any, rows: list[JobRow]) -> dict[int, list[tuple[int, float]]]:
    out = {}
    for row in rows:
        if row.run_id:
            try:
                out[row.job] = [(int(m.step), float(m.value)) for m in client.get_metric_history(row.run_id, "val_loss")]
            except Exception as exc:  # noqa: BLE001 - a run of another store, a deleted run
                log.warning("no val_loss history for job #%d (%s)", row.job, mask_text(str(exc)))
    return out


def finish_sweep(sweep_dir: Path, info: SweepInfo | None, uri: str | None, outcome: SweepOutcome,
                 storage: str | None = None) -> None:
    """`uri`: the parent run's tracking URI; `storage`: an Optuna sweep's study storage (both unmasked)."""
    rows = job_rows(sweep_dir, info)
    best = best_row(rows, info.direction if info else "minimize")
    if best is not None:
        best.best = True
    study = study_state(info, storage) if info is not None else None
    files = write_tables(sweep_dir, info, rows, best, study)
    client = None
    if info is not None and info.parent_run_id and uri:
        from thinker.tracking.mlflow_run import get_client

        client = get_client(uri)
    title = info.name if info else Path(sweep_dir).name
    plot = None
    if client is not None:
        try:
            plot = plot_losses(Path(sweep_dir) / PLOT_NAME, title, rows, _histories(client, rows))
        except ImportError as exc:
            log.warning("no loss plot (matplotlib is not installed: %s)", exc)
    summary = f"[sweep] summary: {files[0]}" + (f", {plot.name}" if plot else "")
    if best is not None:
        summary += f" (best: #{best.job} {best.overrides}, {best.objective_name} {best.objective:.4f})"
    print(summary, flush=True)
    if client is None:
        return
    parent = str(info.parent_run_id)
    for path in [*files, *([plot] if plot else [])]:
        client.log_artifact(parent, str(path))
    from mlflow.entities import Metric, RunTag

    tags = {"jobs_total": len(rows), "jobs_succeeded": sum(r.status in ("succeeded", "reused") for r in rows),
            "jobs_reused": sum(r.status == "reused" for r in rows)}
    now = int(dt.datetime.now().timestamp() * 1000)
    spent = [r.usd for r in rows if r.usd is not None and r.status != "reused"]
    metrics = [Metric("sweep_usd", float(sum(spent)), now, 0)] if spent else []  # docs/costs.md
    if best is not None:
        tags.update(best_job=best.job, best_job_overrides=best.overrides, best_run_id=best.run_id)
        metrics.append(Metric(f"best_{best.objective_name}", float(best.objective), now, 0))
        if best.run_id:
            client.set_tag(best.run_id, "best", "true")
    client.log_batch(parent, metrics=metrics,
                     tags=[RunTag(k, str(v)) for k, v in mask(tags).items() if v is not None])
    interrupted = any(r.status == "interrupted" for r in rows)
    status = "FINISHED" if rows and not outcome.failed else "KILLED" if interrupted else "FAILED"
    client.set_terminated(parent, status)


_last: SweepOutcome | None = None
_sweep_dir: Path | None = None  # set when a multirun starts, in the launching process
_info: SweepInfo | None = None
_parent_uri: str | None = None  # the parent's tracking URI, unmasked (this process only)
_storage: str | None = None  # an Optuna sweep's study storage URL, unmasked (this process only)


def report() -> SweepOutcome | None:
    """Summarise the sweep this process launched (once): the summary files, the parent run's outcome, then the
    `sweep:` line; None outside a sweep."""
    global _last
    if _last is None and _sweep_dir is not None and _sweep_dir.is_dir():
        _last = summarize(_sweep_dir)
        try:
            finish_sweep(_sweep_dir, _info, _parent_uri, _last, _storage)
        except Exception as exc:  # noqa: BLE001 - the summary must not hide the sweep's own outcome
            from thinker.tracking.secrets import mask_text

            log.warning("could not write the sweep summary: %s", mask_text(str(exc)))
        stream = sys.stderr if _last.failed else sys.stdout
        print(_last.line(), file=stream, flush=True)
    return _last


class SweepSummary(Callback):
    """Opens the sweep's MLflow parent run when a multirun starts; prints `sweep: N of M jobs succeeded;
    failed: #i <error>` and writes the summary when it ends. If the sweeper itself gives up (Optuna raises
    when no trial completed), guarded_main calls report() instead."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        global _sweep_dir, _last, _info, _parent_uri, _storage
        check_search(config)  # before the sweeper creates its study with them
        from thinker.estimate.sweep import check_sweep_budget

        check_sweep_budget(config)  # every job's estimate and budget.max_usd on their total, before any job starts
        _sweep_dir, _last, _info, _parent_uri = Path(str(config.hydra.sweep.dir)), None, None, None
        _storage = OmegaConf.select(config, "hydra.sweeper.storage", default=None)
        from thinker.tracking.secrets import install_log_masking, mask_text

        install_log_masking()  # the launcher logs each job's overrides, a tracking URI's password included
        if not bool(OmegaConf.select(config, "debug", default=False)):
            quiet_optuna()
        info = plan(config)
        try:
            _parent_uri = open_parent(config, info)
        except Exception as exc:  # noqa: BLE001 - jobs still run, as runs of their own
            log.warning("could not open the sweep's MLflow parent run (its jobs are logged as separate runs): %s",
                        mask_text(str(exc)))
        _info = info
        try:
            info.write()  # (creates the sweep folder)
        except OSError as exc:
            log.warning("could not write %s: %s", Path(info.sweep_dir) / SWEEP_FILE, mask_text(str(exc)))

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        report()
