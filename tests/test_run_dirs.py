"""Two launches in the same second never share a run folder (thinker.run_dirs)."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from conftest import ROOT, clean_env

from thinker.run_dirs import unique_dir


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
