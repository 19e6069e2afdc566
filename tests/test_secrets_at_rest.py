"""A credential given as an override (`+provider.options.token=...`) is masked everywhere a config is written or
printed -- the run record, Hydra's .hydra/ files and multirun.yaml, --cfg output, `thinker config show`, launch.log,
the sweep summary, MLflow params and artifacts -- while the run itself still gets the real value
(docs/secrets.md). Real launches (stage=validate and --cfg are quick), a real SQLite MLflow store."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT, clean_env, compose, launch
from omegaconf import OmegaConf

from thinker.tracking import secrets

TOKEN = "SECRETtokshort99"  # short and shapeless: only its key says it is a credential
DB_PASSWORD = "Pg-pa55word-77"
OVERRIDES = [f"+provider.options.token={TOKEN}", f"+provider.options.dsn=postgresql://u:{DB_PASSWORD}@db/x"]
QUICK = ["stage=validate", "validation.pytest.enabled=false", "logger=none"]


@pytest.fixture(autouse=True)
def _no_registered_secrets(monkeypatch):
    monkeypatch.setattr(secrets, "_registered", set())


def assert_masked(text: str, where: object) -> None:
    assert TOKEN not in text and DB_PASSWORD not in text, where


def written_files(folder):
    return [p for p in folder.rglob("*") if p.is_file() and p.suffix in (".json", ".yaml", ".log", ".md", ".csv")]


def test_a_run_writes_no_override_secret_and_keeps_the_rest_readable(tmp_path):
    out = launch([*QUICK, *OVERRIDES, "hydra.run.dir=run"], cwd=tmp_path, env=clean_env())
    assert out.returncode == 0, out.stderr[-2000:]
    run = tmp_path / "run"
    files = written_files(run)
    assert {f.name for f in files} >= {"config.yaml", "hydra.yaml", "overrides.yaml", "run_record.json", "launch.log"}
    for path in files:
        assert_masked(path.read_text(), path)
    assert_masked(out.stdout + out.stderr, "console")
    # the masked forms are there, and the files still load with every other value as it was
    record = json.loads((run / "run_record.json").read_text())
    assert "+provider.options.token=***" in record["overrides"]
    assert "+provider.options.token=***" in OmegaConf.load(run / ".hydra" / "overrides.yaml")
    config = OmegaConf.load(run / ".hydra" / "config.yaml")
    assert config.provider.options == {"token": "***", "dsn": "***"}
    assert config.evaluation.decoding.max_new_tokens == 160 and config.model.tokenizer_corpus
    assert config.trainer.max_seq_length and config.stage == "validate"
    hydra_cfg = OmegaConf.load(run / ".hydra" / "hydra.yaml").hydra
    assert "+provider.options.token=***" in hydra_cfg.overrides.task
    assert "+provider.options.token=***" in hydra_cfg.job.override_dirname
    # masking touched only what was written: the run's fingerprint is that of the real config
    from thinker.tracking.fingerprint import config_fingerprint

    assert record["config_fingerprint"] == config_fingerprint(compose([*QUICK, *OVERRIDES]))


@pytest.mark.parametrize("what", ["job", "hydra", "all"])
def test_cfg_output_masks_override_secrets(tmp_path, what):
    out = launch(["--cfg", what, *OVERRIDES], cwd=tmp_path, env=clean_env())
    assert out.returncode == 0, out.stderr[-2000:]
    assert_masked(out.stdout + out.stderr, what)
    if what != "hydra":
        assert "token: '***'" in out.stdout and "max_new_tokens: 160" in out.stdout
    if what != "job":
        assert "- +provider.options.token=***" in out.stdout


def test_cfg_package_prints_a_credential_masked_without_its_key(tmp_path):
    out = launch(["--cfg", "job", "--package", "provider.options.token", *OVERRIDES], cwd=tmp_path, env=clean_env())
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "***"


def test_an_override_that_does_not_parse_is_reported_without_its_credential(tmp_path, capsys):
    from thinker.commands.config import show

    bad = f"+provider.options.token=[{TOKEN}"  # Hydra's parse error quotes the value, not the key
    out = launch(["stage=validate", bad], cwd=tmp_path, env=clean_env())
    assert out.returncode == 2 and "[thinker] error: " in out.stderr
    assert_masked(out.stdout + out.stderr, "launch.py")
    assert show([bad]) == 2
    err = capsys.readouterr().err
    assert "[thinker] error: " in err and "***" in err
    assert_masked(err, "thinker config show")


def test_config_show_masks_secrets(capsys):
    from thinker.commands.config import show

    assert show(OVERRIDES) == 0
    out = capsys.readouterr().out
    assert_masked(out, "thinker config show")
    shown = OmegaConf.create(out)
    assert shown.provider.options == {"token": "***", "dsn": "***"}
    assert shown.evaluation.decoding.max_new_tokens == 160 and shown.provider.required_env == []


def test_thinker_config_show_command_masks_secrets(tmp_path):
    out = subprocess.run([sys.executable, "-m", "thinker.commands.cli", "config", "show", *OVERRIDES], cwd=tmp_path,
                         env=clean_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert_masked(out.stdout + out.stderr, "thinker config show")
    assert "token: '***'" in out.stdout


def test_a_sweep_writes_no_override_secret(tmp_path):
    out = launch(["-m", *QUICK, "seed=1,2", *OVERRIDES], cwd=tmp_path, env=clean_env())
    assert out.returncode == 0, out.stderr[-2000:]
    assert "sweep: 2 of 2 jobs succeeded" in out.stdout
    assert_masked(out.stdout + out.stderr, "console")
    assert "+provider.options.token=***" in out.stdout + out.stderr  # the launcher's echo of each job
    sweep = next(tmp_path.glob("multirun/*/*"))
    files = written_files(sweep)
    names = {str(p.relative_to(sweep)) for p in files}
    assert {"multirun.yaml", "sweep_summary.md", "sweep_summary.json", "sweep_run.json", "0/.hydra/hydra.yaml",
            "1/.hydra/config.yaml", "1/.hydra/overrides.yaml", "1/run_record.json", "1/launch.log"} <= names
    for path in files:
        assert_masked(path.read_text(), path)
    assert OmegaConf.load(sweep / "multirun.yaml").provider.options.token == "***"


def test_the_callback_masks_the_files_and_leaves_the_jobs_config_alone(tmp_path):
    from thinker.tracking.hydra_files import MaskSavedConfigs

    cfg = compose(OVERRIDES)
    saved = tmp_path / ".hydra"
    saved.mkdir()
    (saved / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    (saved / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(OVERRIDES)))
    config = OmegaConf.create({"hydra": {"output_subdir": ".hydra", "runtime": {"output_dir": str(tmp_path)}},
                               "provider": {"options": {"token": TOKEN}}})
    MaskSavedConfigs().on_job_start(config=config)
    for name in ("config.yaml", "overrides.yaml"):
        assert_masked((saved / name).read_text(), name)
    assert config.provider.options.token == TOKEN  # what the job's code gets is the real value


def test_mlflow_params_and_artifacts_mask_override_secrets(tmp_path):
    from mlflow.tracking import MlflowClient

    from thinker.run.context import StageContext, log_run_metadata
    from thinker.run.pipeline import _close_session, new_record
    from thinker.tracking.mlflow_run import MlflowSession

    run_dir = tmp_path / "run"
    cfg = compose([*OVERRIDES, "logger=mlflow", f"output.dir={run_dir}"])
    (run_dir / ".hydra").mkdir(parents=True)
    # what a job's folder holds when the MLflow run closes: Hydra's config and a record with the overrides
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    record = new_record(cfg, run_dir)
    record.overrides = list(OVERRIDES)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    session = MlflowSession(uri, "thinker", "secrets")
    record.dataset_sha256 = "0" * 64
    log_run_metadata(session, cfg, record)
    record.finish("succeeded", 0)
    _close_session(StageContext(cfg=cfg, run_dir=run_dir, record=record, session=session), record, "succeeded")
    client = MlflowClient(uri)
    run = client.get_run(session.run_id)
    assert run.data.params["provider.options.token"] == "***"
    assert_masked(json.dumps(run.data.params) + json.dumps(run.data.tags), "params and tags")
    downloaded = tmp_path / "artifacts"
    downloaded.mkdir()
    client.download_artifacts(session.run_id, "", str(downloaded))
    artifacts = {str(p.relative_to(downloaded)): p for p in downloaded.rglob("*") if p.is_file()}
    assert {"run_record.json", "config/config.yaml"} <= set(artifacts)
    for name, path in artifacts.items():
        assert_masked(path.read_text(), name)
    assert "+provider.options.token=***" in json.loads(artifacts["run_record.json"].read_text())["overrides"]
    assert OmegaConf.load(artifacts["config/config.yaml"]).provider.options.token == "***"


def test_the_readme_documents_what_is_masked():
    readme = (ROOT / "docs" / "secrets.md").read_text()
    assert "provider.options.token" in readme and ".hydra/" in readme
