"""Two launches in the same second never share a run folder, and one that cannot be created or written is
one config error (thinker.launch.run_dirs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import ROOT, clean_env, launch

from thinker.launch.run_dirs import unique_dir


def test_a_taken_folder_gets_the_next_number(tmp_path):
    base = str(tmp_path / "outputs" / "day" / "12-00-00")
    unique_dir.cache_clear()
    assert unique_dir(base) == base
    assert unique_dir(base) == base  # Hydra resolves the run folder more than once: the same answer
    unique_dir.cache_clear()  # another process
    assert unique_dir(base) == base + "-2"
    unique_dir.cache_clear()
    assert unique_dir(base) == base + "-3"


def test_launches_in_the_same_second_get_their_own_folders(tmp_path):
    args = [sys.executable, str(ROOT / "launch.py"), "stage=validate", "validation.pytest.enabled=false",
            "logger=none", "hydra.run.dir=${thinker_unique_dir:outputs/same-second}"]

    def run(_: int) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=300)

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(run, range(3)))
    assert [r.returncode for r in results] == [0, 0, 0], [r.stderr[-1500:] for r in results]
    folders = sorted(p.name for p in (tmp_path / "outputs").iterdir())
    assert folders == ["same-second", "same-second-2", "same-second-3"]
    records = [json.loads((tmp_path / "outputs" / f / "run_record.json").read_text()) for f in folders]
    assert all(r["exit_status"] == "succeeded" and r["stages"]["validate"]["status"] == "passed" for r in records)


PROC = "/proc/self"  # a folder nobody can create anything in, root included


@pytest.mark.skipif(not os.path.isdir(PROC), reason="needs Linux /proc")
@pytest.mark.parametrize("args, key, folder", [
    (["hydra.run.dir=/proc/thinker-run"], "hydra.run.dir", "/proc/thinker-run"),
    (["-m", "seed=1,2", "hydra.sweep.dir=/proc/thinker-sweep"], "hydra.sweep.dir", "/proc/thinker-sweep"),
])
def test_a_run_folder_that_cannot_be_created_is_one_config_error(tmp_path, args, key, folder):
    out = launch([*args, "stage=validate", "logger=none"], tmp_path, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().splitlines() == [
        f"[thinker] error: the run folder {folder} cannot be created or written (No such file or directory), "
        f"config key {key}, set {key}=<a folder you can write to>, or launch from one"]


@pytest.mark.skipif(not os.path.isdir(PROC), reason="needs Linux /proc")
def test_launching_where_the_default_run_folder_cannot_be_created_is_one_config_error():
    out = launch(["stage=validate", "logger=none"], Path("/proc"), timeout=300)  # outputs/<date>/<time> there
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().splitlines() == [
        "[thinker] error: the run folder /proc/outputs cannot be created or written "
        "(No such file or directory), config key hydra.run.dir, set hydra.run.dir=<a folder you can write to>, "
        "or launch from one"]
