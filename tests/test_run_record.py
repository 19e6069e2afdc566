"""Run record: atomic JSON, secrets masked; secrets helpers."""

from __future__ import annotations

import json

from thinker.tracking.atomic import atomic_write_json
from thinker.tracking.run_record import RunRecord
from thinker.tracking.secrets import MASK, mask, mask_text


def test_record_written_after_each_stage_and_finish(tmp_path):
    rec = RunRecord(path=tmp_path / "run_record.json", backend="local")
    rec.stage_update("validate", "passed", dataset_errors=0)
    data = json.loads(rec.path.read_text())
    assert data["stages"]["validate"]["status"] == "passed" and data["exit_status"] == "running"
    rec.metrics["val_loss"] = 1.5
    rec.finish("succeeded", 0)
    data = json.loads(rec.path.read_text())
    assert data["exit_status"] == "succeeded" and data["exit_code"] == 0 and data["metrics"] == {"val_loss": 1.5}
    for key in ("timestamp", "config_fingerprint", "git_commit", "dataset_sha256", "backend", "finished_at"):
        assert key in data
    assert list(tmp_path.iterdir()) == [rec.path], "temp files left behind"


def test_secrets_never_reach_the_record(tmp_path, monkeypatch):
    secret = "tml-0123456789abcdefXYZ"
    monkeypatch.setenv("TINKER_API_KEY", secret)
    rec = RunRecord(path=tmp_path / "r.json")
    rec.stages["train"] = {"error": f"auth failed for key {secret}", "api_key": "whatever-value", "api_key_env": "X"}
    rec.write()
    text = rec.path.read_text()
    assert secret not in text and "whatever-value" not in text
    assert json.loads(text)["stages"]["train"]["api_key_env"] == "X"  # naming a variable is fine


def test_uri_password_never_reaches_the_record_but_paths_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path))  # names a file, not a credential
    monkeypatch.setenv("HF_TOKEN", "Zq9" * 8)
    rec = RunRecord(path=tmp_path / "r.json", overrides=["logger.tracking_uri=postgresql://user:pw@host/db"],
                    dataset_path=str(tmp_path / "data.jsonl"))
    rec.stages["train"] = {"error": "hub said 401 for token " + "Zq9" * 8}
    rec.write()
    data = json.loads(rec.path.read_text())
    assert data["overrides"] == ["logger.tracking_uri=postgresql://user:***@host/db"]
    assert data["dataset_path"] == str(tmp_path / "data.jsonl")
    assert data["stages"]["train"]["error"] == f"hub said 401 for token {MASK}"


def test_mask_well_known_prefixes_without_env():
    assert mask_text("token hf_abcdefghijklmnop used", env={}) == f"token {MASK} used"
    assert mask_text("key sk-proj-abcdefghijkl", env={}) == f"key {MASK}"
    assert mask({"password": "hunter22", "nested": [{"HF_TOKEN": "x" * 20}]}, env={}) == {
        "password": MASK, "nested": [{"HF_TOKEN": MASK}]}


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "f.json"
    atomic_write_json(target, {"a": 1})
    atomic_write_json(target, {"b": 2})
    assert json.loads(target.read_text()) == {"b": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]
