"""Input files that would hang or crash a run are refused first: a named pipe or a device as an input file (at
config check, thinker.paths.check_input_file), and a record longer than data.max_record_chars (at validation).
"""

from __future__ import annotations

import json
import os

import pytest
from conftest import compose, launch

from thinker.config.check import check_config
from thinker.errors import ThinkerError

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")

FIFO_FIX = "a pipe or a device is refused: reading it may never end"


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "pipe.jsonl"
    os.mkfifo(path)  # opening it for reading blocks until something writes to it
    return path


def test_a_named_pipe_as_data_path_is_one_config_error_not_a_hang(tmp_path, fifo):
    out = launch(["stage=validate", f"data.path={fifo}", "logger=none"], tmp_path, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1] == (
        f"[thinker] error: data.path={fifo} is a named pipe (FIFO), not a regular file, config key data.path, "
        f"point data.path at a regular file ({FIFO_FIX})")


@pytest.mark.parametrize("key", ["evaluation.claims_file", "evaluation.corpus_file"])
def test_evaluation_files_are_checked_when_the_run_evaluates(fifo, key):
    with pytest.raises(ThinkerError) as info:
        check_config(compose(["stage=run", f"{key}={fifo}"]), env={})
    assert info.value.what == f"{key}={fifo} is a named pipe (FIFO), not a regular file"
    check_config(compose(["stage=validate", f"{key}={fifo}"]), env={})  # not read without evaluation


def test_scifact_source_files_and_devices_are_checked(fifo):
    scifact = ["data=scifact", "data.source_format=scifact", f"data.claims_file={fifo}", "data.corpus_file=x.jsonl"]
    with pytest.raises(ThinkerError) as info:
        check_config(compose(scifact), env={})
    assert info.value.what == f"data.claims_file={fifo} is a named pipe (FIFO), not a regular file"
    with pytest.raises(ThinkerError) as info:
        check_config(compose(["data.path=/dev/zero"]), env={})  # would never end
    assert info.value.what == "data.path=/dev/zero is a character device, not a regular file"


def test_the_scifact_reader_refuses_a_named_pipe_and_reports_real_columns(tmp_path, fifo):
    from thinker.data.scifact import read_claims

    with pytest.raises(ThinkerError) as info:
        read_claims(fifo)
    assert info.value.what == "is a named pipe (FIFO), not a regular file" and info.value.where == str(fifo)
    cut = tmp_path / "claims.jsonl"
    cut.write_text('{"id": 1, "claim": "c"\n')  # 22 characters, the closing brace missing
    with pytest.raises(ThinkerError) as info:
        read_claims(cut)
    assert info.value.what == "malformed JSON (Expecting ',' delimiter at column 23)"


def test_a_record_over_max_record_chars_fails_validation_and_the_limit_is_range_checked(tmp_path):
    data = tmp_path / "data.jsonl"
    records = [{"prompt": "p", "completion": "CLAIM[c1]: short"}, {"prompt": "x" * 300, "completion": "CLAIM[c1]: c"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    common = ["stage=validate", f"data.path={data}", "logger=none", "validation.pytest.enabled=false"]
    out = launch([*common, "data.max_record_chars=200"], tmp_path, timeout=300)
    assert out.returncode == 3, out.stderr[-2000:]
    assert len(json.dumps(records[1])) == 344
    assert ("line 2: record is 344 characters long, more than data.max_record_chars=200 (not parsed; split it or "
            "raise the limit)") in out.stdout
    out = launch([*common, "data.max_record_chars=0"], tmp_path, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "data.max_record_chars=0 is outside the allowed range integer [1, 100000000]" in out.stderr
