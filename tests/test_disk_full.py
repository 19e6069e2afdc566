"""A full disk, for real: runs whose folder lies on a small tmpfs (mounted in a private mount namespace, so
nothing outlives the test) end with one `[thinker] error:` line naming the file and where to free space, the
run record says failed where it can be written, and nothing written earlier is damaged (issue 21, "Errors that
name nothing"). Skipped where no tmpfs can be mounted (neither root nor an unprivileged user namespace)."""

from __future__ import annotations

import functools
import hashlib
import json
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import ROOT, clean_env

from thinker.errors import ExitCode

EARLIER = b"an earlier run's checkpoint\n" * 100  # a file already on the disk when it fills


@functools.cache
def _unshare_prefix() -> tuple[str, ...] | None:
    """The unshare command that lets this user mount a tmpfs in a private mount namespace, or None."""
    if shutil.which("unshare") is None:
        return None
    with tempfile.TemporaryDirectory() as probe_dir:
        for prefix in (("unshare", "--mount", "--propagation", "private"),
                       ("unshare", "--user", "--map-root-user", "--mount", "--propagation", "private")):
            probe = subprocess.run([*prefix, "mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", probe_dir],
                                   capture_output=True, timeout=30)
            if probe.returncode == 0:
                return prefix
    return None


@pytest.fixture
def unshare() -> tuple[str, ...]:
    prefix = _unshare_prefix()
    if prefix is None:
        pytest.skip("no tmpfs can be mounted here (needs root or user namespaces): no real full disk")
    return prefix


def launch_on_small_disk(unshare: tuple[str, ...], models: Path, tmp_path: Path, size: str,
                         args: list[str]) -> tuple[subprocess.CompletedProcess, Path]:
    """launch.py from `tmp_path` (its MLflow store stays off the small disk) with hydra.run.dir=<tmpfs>/run, on
    a tmpfs of `size` holding an earlier run's file. Returns the result and a copy of the tmpfs after the run."""
    mount, after = tmp_path / "disk", tmp_path / "after"
    mount.mkdir(exist_ok=True)
    shutil.rmtree(after, ignore_errors=True)
    after.mkdir()
    command = [sys.executable, str(ROOT / "launch.py"), *args, f"hydra.run.dir={mount / 'run'}"]
    script = (f"mount -t tmpfs -o size={size} tmpfs {mount} || exit 99; "
              f"mkdir {mount}/earlier; "
              f"cp {tmp_path / 'earlier.ckpt'} {mount}/earlier/last.ckpt || exit 98; "
              f"{shlex.join(command)} > {tmp_path / 'out'} 2> {tmp_path / 'err'}; rc=$?; "
              f"cp -a {mount}/. {after}/; exit $rc")
    (tmp_path / "earlier.ckpt").write_bytes(EARLIER)
    env = clean_env(THINKER_MODELS_DIR=str(models), HF_HUB_OFFLINE="1")
    done = subprocess.run([*unshare, "sh", "-c", script], cwd=tmp_path, env=env, timeout=600)
    assert done.returncode not in (98, 99), "could not set up the small disk"
    out = subprocess.CompletedProcess(command, done.returncode, (tmp_path / "out").read_text(),
                                      (tmp_path / "err").read_text())
    assert hashlib.sha256((after / "earlier" / "last.ckpt").read_bytes()).digest() == \
        hashlib.sha256(EARLIER).digest(), "the full disk damaged an earlier run's file"
    return out, after


def error_lines(out: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    return [line for line in out.stderr.splitlines() if line.startswith("[thinker] error: ")]


@pytest.mark.slow
def test_a_checkpoint_that_fills_the_disk_ends_the_run_in_one_line_naming_it(unshare, private_models_dir, tmp_path):
    """1 MiB cannot hold tiny-qwen's first checkpoint (about 1.3 MiB): torch's writer fails mid-file."""
    out, after = launch_on_small_disk(unshare, private_models_dir, tmp_path, "1m", ["stage=train", "validation.enabled=false",
                                                       "data.max_examples=24", "trainer.max_steps=2"])
    assert out.returncode == ExitCode.TRAIN, out.stderr[-3000:]
    lines = error_lines(out)
    mount = tmp_path / "disk"
    assert len(lines) == 1, out.stderr[-3000:]
    assert lines[0].startswith(f"[thinker] error: no space left on device in stage train, writing "
                               f"{mount / 'run' / 'checkpoints'}/"), lines[0]
    assert f"free space at {mount} (" in lines[0] and "resume=true" in lines[0]
    assert "unexpected pos" not in out.stderr
    record = json.loads((after / "run" / "run_record.json").read_text())
    assert record["exit_status"] == "failed" and record["exit_code"] == ExitCode.TRAIN
    assert record["stages"]["train"]["status"] == "failed" and record["error"] == lines[0]
    assert not list((after / "run" / "checkpoints").glob(".*.tmp")), "a half-written checkpoint stayed"
    status = sqlite3.connect(tmp_path / "mlflow.db").execute("SELECT status FROM runs").fetchall()
    assert status == [("FAILED",)]


@pytest.mark.slow
def test_a_disk_too_full_for_the_run_folder_or_record_ends_in_one_line(unshare, private_models_dir, tmp_path):
    """Disks of a few pages: Hydra cannot write the run folder (.hydra/), or the pipeline cannot write the run
    record. Each size either fits or ends with exit 6 and one line naming where to free space."""
    kinds = set()
    for size in ("8k", "16k", "20k", "24k", "28k", "32k"):
        out, after = launch_on_small_disk(unshare, private_models_dir, tmp_path, size, ["stage=validate", "validation.pytest.enabled=false",
                                                           "logger=none"])
        if out.returncode == 0:
            continue
        lines = error_lines(out)
        assert out.returncode == ExitCode.RECORD and len(lines) == 1, (size, out.stderr[-3000:])
        assert f"free space at {tmp_path / 'disk'} (" in lines[0], lines[0]
        if "before the run started" in lines[0]:
            kinds.add("run folder")
        else:
            assert f"writing {tmp_path / 'disk' / 'run' / 'run_record.json'}" in lines[0], lines[0]
            kinds.add("record")
    assert kinds == {"run folder", "record"}, f"the sizes no longer reach both failures: {kinds}"


def test_a_full_disk_that_stopped_hydra_is_read_from_what_hydra_printed(tmp_path):
    from thinker.errors.disk_full import before_the_run

    printed = "Traceback (most recent call last):\n  ...\nOSError: [Errno 28] No space left on device\n"
    full = before_the_run(printed, [f"hydra.run.dir={tmp_path / 'run'}"])
    assert full is not None and full.exit_code == ExitCode.RECORD
    assert f"writing under {tmp_path / 'run'}" in full.line() and "free space at /" in full.line()
    named = before_the_run(f"OSError: [Errno 28] No space left on device: '{tmp_path}/run/.hydra/x.yaml'", [])
    assert named is not None and f"writing {tmp_path}/run/.hydra/x.yaml" in named.line()
    assert before_the_run("ValueError: [Errno 2] No such file or directory: 'x'", []) is None


WRITE_WEIGHTS = """
import sys, torch
from safetensors.torch import save_file
from thinker.errors.disk_full import disk_full_error
try:
    save_file({"w": torch.zeros(100_000)}, sys.argv[1] + "/adapter_model.safetensors")
except Exception as exc:
    full = disk_full_error(exc, "train", [sys.argv[1]])
    print(type(exc).__name__, full.line() if full else None)
"""


@pytest.mark.slow
def test_safetensors_weights_that_fill_the_disk_are_taken_for_a_full_disk(unshare, tmp_path):
    """save_pretrained's safetensors writer says ENOSPC in its own words (SafetensorError "IoError(Os {...})")."""
    mount = tmp_path / "disk"
    mount.mkdir()
    script = f"mount -t tmpfs -o size=64k tmpfs {mount} || exit 99; {shlex.quote(sys.executable)} -c " \
             f"{shlex.quote(WRITE_WEIGHTS)} {mount}"
    done = subprocess.run([*unshare, "sh", "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"no space left on device in stage train, writing under {mount}, free space at {mount} (" in done.stdout, \
        done.stdout


def test_a_thinker_command_that_fills_the_disk_ends_in_one_line(unshare, tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    convert = [sys.executable, "-m", "thinker.commands.cli", "data", "convert-scifact",
               "--claims", str(ROOT / "data" / "sample" / "claims_train.jsonl"),
               "--corpus", str(ROOT / "data" / "sample" / "corpus.jsonl"), "--out", str(mount / "train.jsonl")]
    script = f"mount -t tmpfs -o size=8k tmpfs {mount} || exit 99; {shlex.join(convert)}; rc=$?; ls -A {mount}; exit $rc"
    out = subprocess.run([*unshare, "sh", "-c", script], capture_output=True, text=True, timeout=300,
                         env=clean_env())
    assert out.returncode == ExitCode.RECORD, out.stderr[-3000:]
    lines = error_lines(out)
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"[thinker] error: no space left on device (thinker data), writing "
                               f"{mount / 'train.jsonl'}, free space at {mount} ("), lines[0]
    assert lines[0].endswith(f" free now; df -h {mount}), then run again"), lines[0]
    assert out.stdout.split() == [], "a half-written output or temporary file stayed"
