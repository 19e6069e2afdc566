"""The sweep summary's cost column and total (docs/costs.md), and whole optimizer steps on its loss plot."""

from __future__ import annotations

import json

from thinker.sweeps.summary import JobRow, job_rows, loss_figure, markdown_table


def write_job(sweep_dir, number, status, actual, estimate, reused=None):
    folder = sweep_dir / str(number)
    folder.mkdir(parents=True)
    record = {"exit_status": status, "overrides": [f"method={'lora' if number else 'qlora'}"],
              "metrics": {"val_loss": 2.0 + number}, "reused_from": reused,
              "cost": {"estimate": {"usd": estimate}, "actual": {"usd": actual, "seconds": 10.0}}}
    (folder / "run_record.json").write_text(json.dumps(record))


def test_each_job_shows_its_cost_and_the_summary_the_total(tmp_path):
    write_job(tmp_path, 0, "succeeded", 0.0125, 0.01)
    write_job(tmp_path, 1, "succeeded", 0.0250, 0.02)
    write_job(tmp_path, 2, "succeeded", 0.5, 0.5, reused="abc")  # took an earlier run's result: nothing spent now
    rows = job_rows(tmp_path, None)
    assert [r.usd for r in rows] == [0.0125, 0.025, 0.5]
    table = markdown_table("sweep", rows, None)
    assert "| job | overrides | val_loss | status | time (s) | cost ($) | MLflow run |" in table
    assert "| 0.0125 |" in table and "| 0.0250 |" in table
    assert "Cost: $0.0375 in all (estimated $0.0300)." in table


def test_a_job_without_a_recorded_cost_is_counted_as_such(tmp_path):
    rows = [JobRow(0, "a", "val_loss", 1.0, "succeeded", 1, "r0", usd=0.5),
            JobRow(1, "b", None, None, "failed", 1, "r1")]
    assert "Cost: $0.5000 in all; 1 job(s) without a cost." in markdown_table("sweep", rows, None)


def test_the_loss_plot_ticks_only_whole_steps():
    rows = [JobRow(0, "a", "val_loss", 1.0, "succeeded", 1, "r0")]
    fig = loss_figure("sweep", rows, {0: [(1, 3.0), (2, 2.5), (3, 2.2)]})
    ax = fig.axes[0]
    fig.canvas.draw() if hasattr(fig.canvas, "draw") else None
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
