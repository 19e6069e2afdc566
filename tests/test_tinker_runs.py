"""backend=tinker end to end against `thinker tinker-serve`, through the real tinker SDK over loopback HTTP:
a full launch (train, register, evaluate, one MLflow run), loss parity with backend=local, injected 5xx /
429 answers, a server killed and restarted mid-run, and resume=true from checkpoints.jsonl."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, clean_env, compose, launch, printed_command

pytestmark = pytest.mark.slow

KEY = "tml-SECRETlocalkey0123456789"
SHORT = ["trainer.max_seq_length=256", "data.max_examples=96", "evaluation.max_samples=2",
         "evaluation.decoding.max_new_tokens=24", "validation.pytest.enabled=false"]


@pytest.fixture(scope="module")
def models_dir(private_models_dir):
    """One models folder for the server and every run here: the builtin tiny-qwen is built once."""
    return private_models_dir


@pytest.fixture(scope="module")
def server(models_dir, tmp_path_factory):
    from thinker.tinker_serve.server import start_in_thread

    with start_in_thread("tiny-qwen", tmp_path_factory.mktemp("tinker-state")) as srv:
        yield srv


def run_env(url: str, models_dir: Path, **extra: str) -> dict[str, str]:
    return clean_env(TINKER_BASE_URL=url, TINKER_API_KEY=KEY, THINKER_MODELS_DIR=str(models_dir), **extra)


def mlflow_history(cwd: Path, key: str) -> tuple[str, list[tuple[int, float]], dict]:
    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("thinker").experiment_id])
    assert len(runs) == 1, [r.info.run_id for r in runs]
    run = runs[0]
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
    return run.info.status, history, run.data.params


# ---------------------------------------------------------------- the user's line


def test_launch_backend_tinker_trains_registers_and_evaluates(server, models_dir, tmp_path):
    out = launch(["backend=tinker", "trainer.max_steps=6", "trainer.evaluations=2", "output.register_min_steps=1",
                  "trainer.progress_every_s=0.001", "hydra.run.dir=run", *SHORT], cwd=tmp_path,
                 env=run_env(server.base_url, models_dir))
    assert out.returncode == 0, out.stderr[-3000:]
    # stdout is a pipe: progress lines at trainer.progress_every_s (the bar alone would show only its last frame)
    assert re.findall(r"step (\d)/6: loss \d+\.\d{4}, [\d,]+ tok/s", out.stdout) == ["1", "2", "3", "4", "5", "6"]
    record = json.loads((tmp_path / "run" / "run_record.json").read_text())
    train = record["stages"]["train"]
    assert train["status"] == "passed" and train["backend"] == "tinker" and train["method"] == "lora"
    assert train["weights"].startswith("tinker://") and train["weights"].endswith("/sampler_weights/final")
    assert record["stages"]["eval"]["status"] == "passed" and "c1_exact_match_rate" in record["metrics"]
    ledger = [json.loads(line) for line in (tmp_path / "run" / "checkpoints.jsonl").read_text().splitlines()]
    assert [(e["step"], e["kind"]) for e in ledger] == [(3, "state"), (6, "state"), (6, "sampler")]
    status, losses, params = mlflow_history(tmp_path, "train_loss")
    assert status == "FINISHED" and [s for s, _ in losses] == [1, 2, 3, 4, 5, 6]
    assert [s for s, _ in mlflow_history(tmp_path, "val_loss")[1]] == [3, 6]
    assert params["method.alpha"] == "32" and params["backend.name"] == "tinker"
    registry = json.loads((models_dir / "registry.json").read_text())
    entry = next(m for m in registry["models"] if m.get("weights_uri") == train["weights"])
    assert entry["fine_tuned_from"] == "tiny-qwen" and entry["mlflow_run_id"] == record["mlflow_run_id"]
    assert entry["extra"]["backend"] == "tinker" and entry["architecture"] == "qwen2"
    everything = out.stdout + out.stderr + (tmp_path / "run" / "run_record.json").read_text()
    everything += (tmp_path / "run" / "launch.log").read_text()
    assert KEY not in everything and not any(KEY in v for v in params.values())

    # the registered weights sample through the same backend, by registry name, with the run's tokenizer
    (tmp_path / "in.jsonl").write_text('{"prompt": "Hello"}\n')
    gen = subprocess.run([sys.executable, "-m", "thinker.commands.cli", "generate", entry["model_name"], "--input", "in.jsonl",
                          "--output", "out.jsonl", "--max-new-tokens", "6"], cwd=tmp_path, capture_output=True,
                         text=True, env=run_env(server.base_url, models_dir), timeout=300)
    assert gen.returncode == 0, gen.stderr[-2000:]
    assert json.loads((tmp_path / "out.jsonl").read_text())["completion"].strip()
    # training on top of a Tinker fine-tune is refused before anything runs
    again = launch(["backend=tinker", f"model={entry['model_name']}", "hydra.run.dir=again", *SHORT], cwd=tmp_path,
                   env=run_env(server.base_url, models_dir))
    assert again.returncode == 2 and "training on top of one is not supported yet" in again.stderr


def test_an_unoffered_base_model_fails_at_config_check_listing_what_is_offered(server, models_dir, tmp_path):
    out = launch(["backend=tinker", "model.tinker_name=Qwen/Qwen3-8B", "hydra.run.dir=run", *SHORT], cwd=tmp_path,
                 env=run_env(server.base_url, models_dir))
    assert out.returncode == 2, out.stderr[-2000:]
    assert "does not offer base model Qwen/Qwen3-8B" in out.stderr and "tiny-qwen" in out.stderr
    assert set(json.loads((tmp_path / "run" / "run_record.json").read_text())["stages"]) == {"config"}


# ---------------------------------------------------------------- parity with backend=local


class Recorder:
    """A tracker that keeps what the training loop logs (what MLflow would receive)."""

    def __init__(self):
        self.logged: list[tuple[int, dict[str, float]]] = []

    def log_metrics(self, metrics, step=0):
        self.logged.append((step, dict(metrics)))

    def set_tags(self, tags):
        self.tags = dict(tags)

    def history(self, key):
        return [(s, m[key]) for s, m in self.logged if key in m]


def test_loss_parity_with_the_local_backend(server, models_dir, tmp_path, monkeypatch):
    """Same data, seed, LoRA rank/alpha and schedule, packing off: the same loss curve within 2e-3."""
    from thinker.backends.local.backend import train as train_local
    from thinker.backends.tinker.loop import TinkerTrainer

    common = ["trainer.max_steps=5", "trainer.evaluations=1", "trainer.optimizations=[]", "logger=none",
              "trainer.max_seq_length=256", "data.max_examples=64", "trainer.batch_size=4", "trainer.grad_accum=2",
              "optimizer.lr=5e-3"]
    local = train_local(compose(["method=lora", "method.alpha=32", *common]), tmp_path / "local", None)
    local_losses = local.objects["module"].train_history
    monkeypatch.setenv("TINKER_API_KEY", KEY)
    cfg = compose(["backend=tinker", *common])
    recorder = Recorder()
    report = TinkerTrainer(cfg, tmp_path / "tinker", recorder, dict(cfg.backend.options), server.base_url).train()
    tinker_losses = recorder.history("train_loss")
    assert [s for s, _ in tinker_losses] == [s for s, _ in local_losses] == [1, 2, 3, 4, 5]
    for (step, ours), (_, theirs) in zip(tinker_losses, local_losses, strict=True):
        assert ours == pytest.approx(theirs, abs=2e-3), f"step {step}: tinker {ours} vs local {theirs}"
    assert local_losses[-1][1] < local_losses[0][1] - 0.05, "the curve must move for the comparison to mean much"
    assert report.metrics["val_loss"] == pytest.approx(local.metrics["val_loss"], abs=2e-3)


# ---------------------------------------------------------------- faults


def test_injected_5xx_and_429_answers_are_retried_and_nothing_is_lost(models_dir, tmp_path):
    from support.faults import start_with_faults

    faults = "forward_backward=503x2,optim_step=429x2,save_weights=500x1,asample=503x1"
    with start_with_faults("tiny-qwen", tmp_path / "state", faults=faults) as srv:
        out = launch(["backend=tinker", "trainer.max_steps=4", "trainer.evaluations=2", "hydra.run.dir=run", *SHORT],
                     cwd=tmp_path, env=run_env(srv.base_url, models_dir))
        assert out.returncode == 0, out.stderr[-3000:]
        assert srv.faults.injected == {"forward_backward": 2, "optim_step": 2, "save_weights": 1, "asample": 1}
    status, losses, _ = mlflow_history(tmp_path, "train_loss")
    assert status == "FINISHED" and [s for s, _ in losses] == [1, 2, 3, 4]


def start_run(cwd: Path, env: dict[str, str], overrides: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "launch.py"), *overrides], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_states(ledger: Path, count: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ledger.is_file() and sum('"state"' in line for line in ledger.read_text().splitlines()) >= count:
            return
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    raise AssertionError(f"no {count} saved states in {ledger} after {timeout} s")


def test_a_server_killed_mid_run_and_restarted_continues_from_the_last_saved_state(models_dir, tmp_path):
    from thinker.tinker_serve.server import spawn

    state = tmp_path / "state"
    env = run_env("", models_dir)
    server = spawn("tiny-qwen", state, env=env, cwd=tmp_path)
    port = int(server.base_url.rsplit(":", 1)[1])
    env["TINKER_BASE_URL"] = server.base_url
    run = start_run(tmp_path, env, ["backend=tinker", "trainer.max_steps=16", "trainer.evaluations=4",
                                    "backend.options.recover_s=180", "hydra.run.dir=run", *SHORT])
    try:
        wait_for_states(tmp_path / "run" / "checkpoints.jsonl", 1, run)
        server.kill()  # SIGKILL: nothing saved on the way out
        time.sleep(1.0)
        server = spawn("tiny-qwen", state, port=port, env=env, cwd=tmp_path)
        stdout, stderr = run.communicate(timeout=600)
    finally:
        run.kill()
        server.stop()
    assert run.returncode == 0, stderr[-3000:]
    assert "lost the Tinker service" in stdout + stderr
    record = json.loads((tmp_path / "run" / "run_record.json").read_text())
    assert record["stages"]["train"]["recoveries"] >= 1
    status, losses, _ = mlflow_history(tmp_path, "train_loss")
    assert status == "FINISHED" and [s for s, _ in losses] == list(range(1, 17)), "each step logged exactly once"
    assert [s for s, _ in mlflow_history(tmp_path, "val_loss")[1]] == [4, 8, 12, 16]


def test_a_server_killed_and_not_restarted_ends_the_run_after_recover_s_and_the_printed_command_resumes(
        models_dir, tmp_path):
    import shlex

    from thinker.tinker_serve.server import spawn

    state, ledger = tmp_path / "state", tmp_path / "run" / "checkpoints.jsonl"
    env = run_env("", models_dir)
    server = spawn("tiny-qwen", state, env=env, cwd=tmp_path)
    port = int(server.base_url.rsplit(":", 1)[1])
    env["TINKER_BASE_URL"] = server.base_url
    recover_s = 10
    run = start_run(tmp_path, env, ["backend=tinker", "trainer.max_steps=16", "trainer.evaluations=4",
                                    f"backend.options.recover_s={recover_s}", "hydra.run.dir=run", *SHORT])
    try:
        wait_for_states(ledger, 1, run)
        server.kill()  # SIGKILL, and nothing comes back on that port
        killed = time.monotonic()
        stdout, stderr = run.communicate(timeout=300)
        ended_after = time.monotonic() - killed
    finally:
        run.kill()
    assert run.returncode == 4, stderr[-3000:]
    # recover_s after the service's last answer, plus a slice of waiting before the probes and the run's close
    assert ended_after < recover_s + 40, f"the run ended {ended_after:.0f} s after the kill"
    errors = [line for line in stderr.splitlines() if line.startswith("[thinker] error:")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert "the Tinker service stopped answering" in errors[0] and f", {server.base_url}, start the service" in errors[0]
    assert KEY not in stdout + stderr
    record = json.loads((tmp_path / "run" / "run_record.json").read_text())
    assert record["exit_status"] == "failed" and record["stages"]["train"]["status"] == "failed"
    status, before, _ = mlflow_history(tmp_path, "train_loss")
    assert status == "FAILED", "the MLflow run is closed, not left RUNNING"
    saved = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert saved and all(e["kind"] == "state" for e in saved) and [s for s, _ in before] == list(range(1, saved[-1]["step"] + 1))

    # the service back, the command the error printed continues the run from its last saved state
    command = shlex.split(errors[0].split("with: ", 1)[1])
    assert command[0] == "python" and "resume=true" in command and f"backend.options.recover_s={recover_s}" in command
    server = spawn("tiny-qwen", state, port=port, env=env, cwd=tmp_path)
    try:
        again = subprocess.run([sys.executable, *command[1:]], cwd=tmp_path, env=env, capture_output=True, text=True,
                               timeout=900)
    finally:
        server.stop()
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming from step {saved[-1]['step']}" in again.stdout + again.stderr
    status, losses, _ = mlflow_history(tmp_path, "train_loss")
    assert status == "FINISHED" and [s for s, _ in losses] == list(range(1, 17)), "each step logged exactly once"
    final = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert final[:len(saved)] == saved and final[-1]["kind"] == "sampler"


def test_resume_continues_from_checkpoints_jsonl_into_the_same_mlflow_run(server, models_dir, tmp_path):
    import signal

    overrides = ["backend=tinker", "trainer.max_steps=8", "trainer.evaluations=4", "hydra.run.dir=run", *SHORT]
    env = run_env(server.base_url, models_dir)
    run = start_run(tmp_path, env, overrides)
    try:
        wait_for_states(tmp_path / "run" / "checkpoints.jsonl", 2, run)
        run.send_signal(signal.SIGINT)
        _, stderr = run.communicate(timeout=300)
    finally:
        run.kill()
    assert run.returncode == 130, stderr[-3000:]
    assert "resume=true" in stderr.strip().splitlines()[-1]
    # the run's own command: its overrides, the run folder made absolute, resume=true
    words = printed_command(stderr)
    assert words[0] == "python" and words[1].endswith("launch.py")
    run_overrides = [o for o in overrides if not o.startswith("hydra.run.dir=")]
    assert words[2:] == [*run_overrides, f"hydra.run.dir={tmp_path / 'run'}", "resume=true"]
    stopped_at = len(mlflow_history(tmp_path, "train_loss")[1])
    assert 4 <= stopped_at < 8, "stopped mid-run, after its second saved state"
    out = launch([*overrides, "resume=true"], cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    status, losses, _ = mlflow_history(tmp_path, "train_loss")
    assert status == "FINISHED" and [s for s, _ in losses] == list(range(1, 9)), "each step logged exactly once"
    ledger = [json.loads(line) for line in (tmp_path / "run" / "checkpoints.jsonl").read_text().splitlines()]
    assert [e["step"] for e in ledger if e["kind"] == "state"][-1] == 8
    record = json.loads((tmp_path / "run" / "run_record.json").read_text())
    assert record["history"], "the interrupted invocation is kept in the record's history"
