"""A bare command group (`thinker providers`, `thinker models`, ...) does what its obvious subcommand does, or
shows its commands, instead of argparse's "the following arguments are required"."""

from __future__ import annotations

import pytest

from thinker.commands.cli import main


def output_of(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def private_state(tmp_path, monkeypatch):
    monkeypatch.setenv("THINKER_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("THINKER_JOBS_FILE", str(tmp_path / "jobs.jsonl"))
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize(("group", "same_as"), [
    ("providers", "list"), ("models", "list"), ("jobs", "list"), ("config", "show"),
])
def test_a_bare_group_runs_its_listing(capsys, private_state, group, same_as):
    code, out, err = output_of(capsys, group)
    assert code == 0 and "required" not in err, err
    assert out.strip() and (code, out) == output_of(capsys, group, same_as)[:2]


def test_bare_data_shows_its_commands(capsys):
    code, out, err = output_of(capsys, "data")
    assert code == 0 and "required" not in err
    assert out.startswith("usage: thinker data") and "convert-scifact" in out and "preview" in out
