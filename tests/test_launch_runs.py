"""launch.py end to end, as a user runs it: MLflow contents, interruption, sweeps, user errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, clean_env, launch

pytestmark = pytest.mark.slow

TINY = ["data.max_examples=32", "trainer.max_seq_length=256", "trainer.batch_size=4", "trainer.evaluations=2"]


@pytest.fixture
def env(tmp_path_factory):
    models = tmp_path_factory.getbasetemp() / "shared-models"
    return clean_env(THINKER_MODELS_DIR=str(models), HF_HUB_OFFLINE="1")


def client_for(cwd):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")


def only_run(cwd):
    client = client_for(cwd)
    exp = client.get_experiment_by_name("thinker")
    runs = client.search_runs([exp.experiment_id])
    return client, runs


def test_default_run_is_tracked_in_mlflow_with_provenance(tmp_path, env):
    out = launch(["method=lora", "trainer.max_steps=4", *TINY, "hydra.run.dir=run"], cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "run_record.json").read_text())
    assert record["exit_status"] == "succeeded" and record["stages"]["validate"]["pytest"] == "passed"
    evaluation = record["stages"]["eval"]
    assert evaluation["status"] == "passed" and evaluation["metrics"]["total"] == 8  # evaluation.max_samples
    eval_metrics = ("total", "c1_exact_match", "c1_exact_match_rate", "evidence_string_match_avg",
                    "evidence_semantic_match_avg", "relation_accuracy")
    assert all(record["metrics"][name] == evaluation["metrics"][name] for name in eval_metrics)
    assert "c1_exact_match_rate" in out.stdout and (tmp_path / "run" / "eval" / "predictions.jsonl").is_file()
    client, runs = only_run(tmp_path)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_id == record["mlflow_run_id"]
    assert run.data.params["optimizer.lr"] == "0.003" and run.data.params["method.name"] == "lora"
    assert run.info.run_name.startswith("tiny-qwen-lora-lr3e-3-")  # runs you can tell apart in the UI
    assert not [k for k in run.data.params if k.startswith("data.schema")]  # validation config is not a param
    tags = run.data.tags
    assert tags["dataset_sha256"] == record["dataset_sha256"] and len(tags["dataset_sha256"]) == 64
    assert tags["config_fingerprint"] == record["config_fingerprint"]
    assert tags["git_commit"] == str(record["git_commit"]) and tags["backend"] == "local"
    assert tags["method"] == "lora" and tags["model"] == "tiny-qwen"
    # every metric at the optimizer step it describes (1 = after the first step), never re-logged at 0
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in history] == [1, 2, 3, 4]
    assert [m.value for m in history][-1] == pytest.approx(record["metrics"]["train_loss"])
    val_history = client.get_metric_history(run.info.run_id, "val_loss")
    assert [m.step for m in val_history] == [2, 4]  # trainer.evaluations=2 over 4 steps
    assert "step 2/4: held-out loss" in out.stdout + out.stderr and "step 4/4: held-out loss" in out.stdout + out.stderr
    assert [m.step for m in client.get_metric_history(run.info.run_id, "c1_exact_match_rate")] == [4]
    assert all(run.data.metrics[name] == pytest.approx(record["metrics"][name]) for name in eval_metrics)
    inputs = run.inputs.dataset_inputs
    assert inputs and inputs[0].dataset.digest == record["dataset_sha256"][:16]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"run_record.json", "config", "weights", "eval"} <= artifacts
    assert "eval/predictions.jsonl" in {a.path for a in client.list_artifacts(run.info.run_id, "eval")}
    weights = {a.path for a in client.list_artifacts(run.info.run_id, "weights")}
    assert "weights/adapter_model.safetensors" in weights
    assert record["metrics"]["logging_overhead_fraction"] < 0.02
    # third-party noise turned down at its source
    for noise in ("FutureWarning", "Loading weights", "kernels", "Creating initial MLflow database", "alembic"):
        assert noise not in out.stdout + out.stderr, noise


def test_secrets_stay_out_of_logs_params_and_records(tmp_path, env):
    secret = "hf_SECRETsecretSECRET123456"
    token = "SECRETtokshort99"  # an override credential: only its key says so (docs/secrets.md)
    out = launch(["method=lora", "trainer.max_steps=1", *TINY, "validation.pytest.enabled=false",
                  f"+provider.options.token={token}", "hydra.run.dir=run"],
                 cwd=tmp_path, env={**env, "HF_TOKEN": secret})
    assert out.returncode == 0, out.stderr[-3000:]
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file() and path.suffix in (".json", ".yaml", ".log"):
            assert secret not in path.read_text(errors="ignore"), path
            assert token not in path.read_text(errors="ignore"), path
    assert secret not in out.stdout + out.stderr and token not in out.stdout + out.stderr
    client, runs = only_run(tmp_path)
    assert secret not in json.dumps(runs[0].data.params) + json.dumps(runs[0].data.tags)
    assert runs[0].data.params["provider.options.token"] == "***"
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    client.download_artifacts(runs[0].info.run_id, "config", str(artifacts))
    client.download_artifacts(runs[0].info.run_id, "run_record.json", str(artifacts))
    for name in ("config/config.yaml", "run_record.json"):
        text = (artifacts / name).read_text()
        assert token not in text and secret not in text and "token" in text, name


def start_launch(args, cwd, env):
    return subprocess.Popen([sys.executable, str(ROOT / "launch.py"), *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def read_until(proc, marker, deadline_s=240):
    """Lines of proc's output up to and including the first that contains `marker`."""
    deadline, lines = time.time() + deadline_s, []
    for line in proc.stdout:
        lines.append(line)
        if marker in line or time.time() > deadline:
            break
    assert marker in "".join(lines), "".join(lines)[-3000:]
    return lines


def test_sigint_then_resume_is_one_finished_mlflow_run(tmp_path, env):
    args = ["method=lora", "trainer.max_steps=24", "trainer.epochs=10", *TINY[:-1], "trainer.evaluations=6",
            "validation.pytest.enabled=false", "evaluation.max_samples=2", "hydra.run.dir=run"]
    proc = start_launch(args, tmp_path, env)
    lines = read_until(proc, "step 4/24: held-out loss")  # the first checkpoint is written with it
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=240)
    output = "".join(lines) + rest
    assert proc.returncode == 130, output[-3000:]
    assert "[thinker] error: training stopped by SIGINT" in output and "resume=true" in output
    assert "Traceback" not in output
    run_dir = tmp_path / "run"
    record = json.loads((run_dir / "run_record.json").read_text())
    assert record["exit_status"] == "interrupted" and record["exit_code"] == 130
    import torch

    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    stopped_at = ckpt["global_step"]
    assert 4 <= stopped_at < 24 and "thinker_rng" in ckpt
    assert not list(run_dir.rglob("*.tmp")) and not (run_dir / "weights").exists()
    client, runs = only_run(tmp_path)
    assert [r.info.status for r in runs] == ["KILLED"]
    run_id = runs[0].info.run_id

    out = launch([*args, "resume=true"], cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    client, runs = only_run(tmp_path)
    assert [(r.info.run_id, r.info.status) for r in runs] == [(run_id, "FINISHED")]
    run = runs[0]
    assert run.data.params["method.name"] == "lora" and run.data.params["trainer.max_steps"] == "24"
    train_steps = [m.step for m in client.get_metric_history(run_id, "train_loss")]
    assert max(train_steps) == 24 and set(range(1, 25)) <= set(train_steps)
    assert max(m.step for m in client.get_metric_history(run_id, "val_loss")) == 24
    assert f"step {stopped_at + 4 - stopped_at % 4}/24: held-out loss" in out.stdout + out.stderr
    record = json.loads((run_dir / "run_record.json").read_text())
    assert record["exit_status"] == "succeeded" and record["mlflow_run_id"] == run_id
    assert [h["exit_status"] for h in record["history"]] == ["interrupted"]
    assert record["metrics"]["optimizer_steps"] == 24 and "c1_exact_match_rate" in record["metrics"]


def test_run_killed_before_its_first_checkpoint_resumes_from_scratch_in_the_same_run(tmp_path, env):
    args = ["method=lora", "trainer.max_steps=8", *TINY[:-1], "trainer.evaluations=1",
            "validation.pytest.enabled=false", "evaluation.enabled=false", "hydra.run.dir=run"]
    proc = start_launch(args, tmp_path, env)
    read_until(proc, "training: 8 optimizer steps")
    os.kill(proc.pid, signal.SIGKILL)  # a crash: no checkpoint yet, the record still says "running"
    proc.wait(timeout=60)
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()
    _client, runs = only_run(tmp_path)
    assert [r.info.status for r in runs] == ["RUNNING"]

    out = launch([*args, "resume=true"], cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "training restarts from step 0" in out.stdout + out.stderr
    client, after = only_run(tmp_path)
    assert [(r.info.run_id, r.info.status) for r in after] == [(runs[0].info.run_id, "FINISHED")]
    assert client.get_metric_history(runs[0].info.run_id, "train_loss")[-1].step == 8


def test_resume_refuses_a_different_config_and_keeps_the_record(tmp_path, env):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    original = {"config_fingerprint": "0" * 64, "exit_status": "interrupted", "overrides": ["method=lora"],
                "stages": {"train": {"status": "interrupted"}}}
    (run_dir / "run_record.json").write_text(json.dumps(original))
    out = launch(["stage=train", "resume=true", "hydra.run.dir=run"], cwd=tmp_path, env=env)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "resume=true with a different training config" in out.stderr and "method=lora" in out.stderr
    assert json.loads((run_dir / "run_record.json").read_text()) == original  # nothing overwritten

    out = launch(["stage=train", "resume=true", "hydra.run.dir=elsewhere"], cwd=tmp_path, env=env)
    assert out.returncode == 2 and "holds no interrupted run" in out.stderr


def test_stage_eval_adds_its_stage_to_the_trained_folders_record(tmp_path, env):
    args = ["method=lora", "trainer.max_steps=2", *TINY, "validation.pytest.enabled=false", "hydra.run.dir=run"]
    out = launch([*args, "stage=train"], cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    trained = json.loads((tmp_path / "run" / "run_record.json").read_text())
    out = launch([*args, "stage=eval", "evaluation.max_samples=2"], cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "run_record.json").read_text())
    assert record["stages"]["train"] == trained["stages"]["train"]  # kept, not wiped
    assert record["stages"]["eval"]["status"] == "passed" and record["metrics"]["total"] == 2
    assert record["metrics"]["train_loss"] == trained["metrics"]["train_loss"]
    assert [h["stage"] for h in record["history"]] == ["train"] and record["stage"] == "eval"
    client, runs = only_run(tmp_path)
    assert [(r.info.run_id, r.info.status) for r in runs] == [(trained["mlflow_run_id"], "FINISHED")]
    assert "c1_exact_match_rate" in runs[0].data.metrics and "train_loss" in runs[0].data.metrics


def test_tracking_uri_password_stays_out_of_record_log_and_console(tmp_path, env):
    password = "pw-Sup3rSecretValue"
    data = tmp_path / "train.jsonl"
    data.write_text((ROOT / "data" / "sample" / "claims.jsonl").read_text())
    out = launch(["stage=validate", "validation.pytest.enabled=false", "logger=none", f"data.path={data}",
                  f"logger.tracking_uri=postgresql://alice:{password}@db.example:5432/mlflow", "hydra.run.dir=run"],
                 cwd=tmp_path, env={**env, "HF_TOKEN_PATH": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-2000:]
    record_text = (tmp_path / "run" / "run_record.json").read_text()
    assert password not in record_text + (tmp_path / "run" / "launch.log").read_text() + out.stdout + out.stderr
    assert "postgresql://alice:***@db.example:5432/mlflow" in record_text
    # a variable that names a credential file is not itself a secret: paths below it stay readable
    assert json.loads(record_text)["dataset_path"] == str(data)


def test_kill_9_leaves_last_complete_checkpoint_loadable(tmp_path, env):
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "launch.py"), "method=lora", "trainer.max_steps=40", "trainer.evaluations=20",
         *TINY[:-1], "validation.pytest.enabled=false", "logger=none", "hydra.run.dir=run"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    seen = 0
    for line in proc.stdout:
        seen += "held-out loss" in line
        if seen >= 3:
            break
    assert seen >= 3, "training never reached its third evaluation"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    import torch

    ckpts = [p for p in (tmp_path / "run" / "checkpoints").glob("*.ckpt")]
    assert ckpts
    for path in ckpts:  # every file under its final name is complete
        assert torch.load(path, weights_only=False)["global_step"] >= 1


def test_multirun_gives_comparable_runs(tmp_path, env):
    out = launch(["-m", "method=lora,qlora", "trainer.max_steps=2", *TINY, "validation.pytest.enabled=false"],
                 cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    client, runs = only_run(tmp_path)
    parents = [r for r in runs if r.data.tags.get("sweep_parent") == "true"]  # the sweep's own run
    runs = [r for r in runs if r not in parents]
    assert len(parents) == 1 and all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in runs)
    assert sorted(r.data.tags["method"] for r in runs) == ["lora", "qlora"]
    keys = [set(r.data.metrics) for r in runs]
    assert keys[0] == keys[1] and {"train_loss", "val_loss", "trainable_params"} <= keys[0]
    assert len({r.data.tags["config_fingerprint"] for r in runs}) == 2


def test_bad_dataset_stops_before_training_with_validate_exit_code(tmp_path, env):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "completion": "CLAIM[c1]: x"}\n[1, 2]\n{"prompt": ""}\n')
    out = launch([f"data.path={bad}", "hydra.run.dir=run"], cwd=tmp_path, env=env)
    assert out.returncode == 3
    assert "line 2" in out.stdout + out.stderr and "line 3" in out.stdout + out.stderr
    last = [ln for ln in out.stderr.splitlines() if ln.strip()][-1]
    assert last.startswith("[thinker] error: dataset failed validation")
    record = json.loads((tmp_path / "run" / "run_record.json").read_text())
    assert record["stages"]["validate"]["status"] == "failed" and "train" not in record["stages"]
    assert not (tmp_path / "mlflow.db").exists(), "no MLflow run for a run that never trained"


def test_missing_credential_fails_fast_without_printing_it(tmp_path, env):
    out = launch(["backend=tinker", "method=lora", "hydra.run.dir=run"], cwd=tmp_path,
                 env={**env, "TINKER_API_KEY": ""})
    assert out.returncode == 2 and "TINKER_API_KEY is not set" in out.stderr


def test_an_unreachable_tinker_service_fails_at_config_check_before_the_gate(tmp_path, env):
    secret = "tml-THISisSECRET12345678"
    out = launch(["backend=tinker", "hydra.run.dir=run"], cwd=tmp_path,
                 env={**env, "TINKER_API_KEY": secret, "TINKER_BASE_URL": "http://127.0.0.1:9"})
    assert out.returncode == 2, out.stderr[-2000:]
    assert "[thinker] error: the Tinker service at http://127.0.0.1:9 does not answer" in out.stderr
    record = json.loads((tmp_path / "run" / "run_record.json").read_text())
    assert set(record["stages"]) == {"config"}, "the validation gate must not run"
    assert secret not in out.stdout + out.stderr + (tmp_path / "run" / "run_record.json").read_text()


def test_validation_can_be_skipped_and_that_is_recorded(tmp_path, env):
    out = launch(["stage=validate", "validation.enabled=false", "hydra.run.dir=run"], cwd=tmp_path, env=env)
    assert out.returncode == 0
    record = json.loads((tmp_path / "run" / "run_record.json").read_text())
    assert record["stages"]["validate"]["status"] == "skipped" and "debug only" in record["stages"]["validate"]["reason"]
    assert record["dataset_sha256"]


def test_stage_validate_runs_schema_and_pytest_gate_only(tmp_path, env):
    out = launch(["stage=validate", "hydra.run.dir=run"], cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    # quiet: one summary line, not pytest's dots, warnings summary or assertion-rewrite warnings
    assert "validation: 320 records ok" in out.stdout and "pytest gate passed: 4 passed, 1 skipped" in out.stdout
    assert out.stderr == "" and "warnings summary" not in out.stdout and "Warning" not in out.stdout
    assert not [line for line in out.stdout.splitlines() if line.strip().startswith("....")]
    loud = launch(["stage=validate", "debug=true", "hydra.run.dir=loud"], cwd=tmp_path, env=env)
    assert loud.returncode == 0 and "passed" in loud.stdout and "[100%]" in loud.stdout  # debug shows it all
    record = json.loads((tmp_path / "run" / "run_record.json").read_text())
    assert record["stages"]["validate"] == {**record["stages"]["validate"], "status": "passed", "pytest": "passed"}
    assert set(record["stages"]) == {"config", "validate"} and record["exit_status"] == "succeeded"


def test_optuna_search_minimises_the_held_out_loss(tmp_path, env):
    out = launch(["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2", "trainer.max_steps=1",
                  "data.max_examples=16", "trainer.max_seq_length=512", "validation.pytest.enabled=false",
                  "evaluation.enabled=false", "logger=none"], cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    from omegaconf import OmegaConf

    results = OmegaConf.load(next(tmp_path.glob("multirun/*/*/optimization_results.yaml")))
    records = [json.loads(p.read_text()) for p in tmp_path.glob("multirun/*/*/*/run_record.json")]
    assert len(records) == 2
    assert results.best_value == pytest.approx(min(r["metrics"]["val_loss"] for r in records))
    assert set(results.best_params) == {"optimizer.lr", "method.rank", "method.alpha", "method.dropout", "method"}
