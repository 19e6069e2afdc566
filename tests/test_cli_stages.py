"""`thinker validate|train|eval|run`: the same Hydra app and pipeline as launch.py, with exit codes per stage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import clean_env, compose

from thinker.commands.pipeline import hydra_command_line
from thinker.tracking.fingerprint import config_fingerprint

THINKER = str(Path(sys.executable).parent / "thinker")  # the console script, as CI calls it
QUICK = ["data.max_examples=24", "trainer.max_steps=2", "trainer.batch_size=4", "evaluation.max_samples=2",
         "validation.pytest.enabled=false"]


def test_options_become_hydra_overrides_after_hydra_flags():
    line = hydra_command_line("run", ["method=lora", "--backend=hf_peft", "--cfg", "job", "--skip-validation",
                                      "-m", "seed=1,2", "--config-dir", "/my/conf"])
    assert line == ["-m", "--cfg", "job", "--config-dir", "/my/conf", "stage=run", "backend=hf_peft",
                    "validation.enabled=false", "method=lora", "seed=1,2"]
    assert hydra_command_line("validate", []) == ["stage=validate"]


@pytest.mark.parametrize(("stage", "argv"), [("train", ["stage=run"]), ("validate", ["--skip-validation"])])
def test_contradictory_arguments_are_refused(stage, argv):
    with pytest.raises(SystemExit) as info:
        hydra_command_line(stage, argv)
    assert info.value.code == 2


def test_hf_peft_is_the_local_backend_under_seed_001s_name():
    alias, local = compose(["backend=hf_peft"]), compose(["backend=local"])
    assert alias.backend == local.backend and alias.backend.name == "local"
    assert config_fingerprint(alias) == config_fingerprint(local)


def thinker(args, cwd, env):
    return subprocess.run([THINKER, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture
def env(tmp_path_factory):
    return clean_env(THINKER_MODELS_DIR=str(tmp_path_factory.getbasetemp() / "shared-models"), HF_HUB_OFFLINE="1")


def record(folder):
    return json.loads((folder / "run_record.json").read_text())


@pytest.mark.slow
def test_thinker_help_lists_the_stage_commands():
    out = subprocess.run([THINKER, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for command in ("validate", "train", "eval", "run"):
        assert command in out.stdout


@pytest.mark.slow
def test_each_failing_stage_has_its_exit_code(tmp_path, env):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p"}\n')
    cases = [
        (["validate", "hydra.run.dir=ok"], 0),
        (["validate", f"data.path={bad}", "hydra.run.dir=bad-data"], 3),
        (["train", "optimizer.lr=5", "hydra.run.dir=bad-config"], 2),
        (["train", "--skip-validation", "method=lora", "trainer.max_seq_length=32", "hydra.run.dir=too-short"], 4),
        (["eval", "--skip-validation", "hydra.run.dir=nothing-trained"], 5),
    ]
    for args, code in cases:
        out = thinker(args, tmp_path, env)
        assert out.returncode == code, (args, out.stderr[-2000:])
        folder = tmp_path / args[-1].split("=", 1)[1]
        assert record(folder)["exit_code"] == code and record(folder)["stage"] == args[0]
        if code:
            assert [ln for ln in out.stderr.splitlines() if ln.strip()][-1].startswith("[thinker] error:")


@pytest.mark.slow
def test_thinker_run_with_seed_001s_options_is_launch_py(tmp_path, env):
    out = thinker(["run", "--backend=hf_peft", "--skip-validation", "method=lora", *QUICK, "hydra.run.dir=run"],
                  tmp_path, env)
    assert out.returncode == 0, out.stderr[-3000:]
    rec = record(tmp_path / "run")
    assert rec["backend"] == "local" and rec["exit_status"] == "succeeded"
    assert rec["stages"]["validate"]["status"] == "skipped" and "validation.enabled=false" in rec["overrides"]
    assert {"train", "eval"} <= set(rec["stages"]) and (tmp_path / "run" / "launch.log").is_file()
    same = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "launch.py"), "--cfg", "job",
                           "backend=local", "validation.enabled=false", "method=lora", *QUICK],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    via_cli = thinker(["run", "--cfg", "job", "--backend=hf_peft", "--skip-validation", "method=lora", *QUICK],
                      tmp_path, env)
    assert same.returncode == via_cli.returncode == 0
    assert via_cli.stdout.replace("stage: run", "") == same.stdout.replace("stage: run", "")


@pytest.mark.slow
def test_thinker_run_sweeps_with_m(tmp_path, env):
    out = thinker(["run", "-m", "--skip-validation", "method=lora", "seed=1,2", *QUICK], tmp_path, env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "sweep: 2 of 2 jobs succeeded" in out.stdout
    records = [json.loads(p.read_text()) for p in tmp_path.glob("multirun/*/*/*/run_record.json")]
    assert sorted(r["stage"] for r in records) == ["run", "run"]
    assert all({"train", "eval"} <= set(r["stages"]) for r in records)
