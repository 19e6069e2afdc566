"""backend=provider end to end, as users launch it: `python launch.py backend=provider provider=<name>
method=<what it supports> provider.base_url=<loopback server>` through each provider's real SDK against a
loopback server that follows its published API (tests/provider_servers). validate -> upload -> job -> poll ->
eval -> record, and a second identical launch creates no second job."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
from conftest import clean_env, launch
from provider_servers.loopback import LoopbackServer

pytestmark = pytest.mark.slow

# provider -> (the method it supports, a model id it fine-tunes, whether its result is callable serverless)
LIVE = {
    "together": ("lora", "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference", True),
    "fireworks": ("lora", "accounts/fireworks/models/qwen2p5-7b-instruct", False),
    "openai": ("full", "gpt-4.1-mini-2025-04-14", True),
}
FAST = ["validation.pytest.enabled=false", "evaluation.max_samples=2", "evaluation.compare_base=false",
        "data.max_examples=40", "provider.poll_interval=0.05", "provider.max_wait=120", "optimizer.lr=1e-4"]


def server_module(provider: str):
    return importlib.import_module(f"provider_servers.{provider}_api")


@pytest.fixture
def models_dir(private_models_dir):
    return private_models_dir


def provider_args(provider: str, url: str, *extra: str) -> list[str]:
    method, base_model, _ = LIVE[provider]
    return ["backend=provider", f"provider={provider}", f"method={method}", f"provider.base_model={base_model}",
            f"provider.base_url={base_url(provider, url)}", *FAST, *extra]


def base_url(provider: str, url: str) -> str:
    """The base URL as the provider's SDK takes it (the env var the server module names, else the root)."""
    env = server_module(provider).client_env(url)
    for name, value in env.items():
        if name.endswith("_BASE_URL"):
            return value
    return url


def run_env(provider: str, url: str, models_dir: Path, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in server_module(provider).client_env(url).items() if not k.endswith("_BASE_URL")}
    return clean_env(THINKER_MODELS_DIR=str(models_dir), **env)


def mlflow_runs(cwd: Path):
    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("thinker")
    return client, client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


@pytest.mark.parametrize("provider", sorted(LIVE))
def test_a_hosted_job_runs_end_to_end_and_a_second_launch_reattaches(provider, models_dir, tmp_path):
    method, base_model, serverless = LIVE[provider]
    app = server_module(provider).create_app(steps=4)
    api = app.state.api
    with LoopbackServer(app) as server:
        env = run_env(provider, server.url, models_dir, tmp_path)
        first = launch([*provider_args(provider, server.url), "hydra.run.dir=first"], cwd=tmp_path, env=env)
        assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
        assert len(api.jobs) == 1
        second = launch([*provider_args(provider, server.url), "hydra.run.dir=second"], cwd=tmp_path, env=env)
        assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-3000:]
        assert len(api.jobs) == 1, "the second identical launch created another job"
        chats = list(api.chat_requests)

    record = json.loads((tmp_path / "first" / "run_record.json").read_text())
    train = record["stages"]["train"]
    job_id = train["provider_job_id"]
    assert train["status"] == "passed" and job_id in api.jobs and train["reattached"] is False
    assert train["weights"] == f"provider://{provider}/{train['provider_model_id']}"
    # the universal job configuration is what the record keeps
    universal = train["job_configuration"]
    assert universal["model"]["base_model"] == base_model and universal["method"]["type"] == method
    assert universal["optimizer"]["learning_rate"] == pytest.approx(1e-4)
    job_file = json.loads((tmp_path / "first" / "provider" / "job.json").read_text())
    assert job_file["job_id"] == job_id and job_file["state"] == "succeeded"
    assert (tmp_path / "first" / "provider" / "train.jsonl").is_file()
    assert f"[provider] {provider} job {job_id} created" in first.stdout

    again = json.loads((tmp_path / "second" / "run_record.json").read_text())["stages"]["train"]
    assert again["provider_job_id"] == job_id and again["reattached"] is True
    assert f"[provider] {provider} job {job_id} reattached" in second.stdout

    # the per-step metrics the provider reported are in the MLflow run at their steps
    client, runs = mlflow_runs(tmp_path)
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    history = sorted(m.step for m in client.get_metric_history(runs[0].info.run_id, "train_loss"))
    assert history == [1, 2, 3, 4]
    assert runs[0].data.tags["provider_job_id"] == job_id

    # evaluated through the provider's chat completions on the fine-tuned model (or skipped with the reason)
    evaluation = record["stages"]["eval"]
    if serverless:
        assert evaluation["status"] == "passed"
        assert {model for model, _ in chats} == {train["provider_model_id"]}
        assert len(chats) == 2 * 2  # two claims, two launches (the second evaluates the same model again)
    else:
        assert evaluation["status"] == "skipped" and "evaluation.provider_deploy=true" in evaluation["reason"]
        assert chats == []

    # the key reached no output, record, log or MLflow param
    key = api_key(provider)
    written = [first.stdout, first.stderr, (tmp_path / "first" / "run_record.json").read_text(),
               (tmp_path / "first" / "launch.log").read_text(), json.dumps(runs[0].data.params),
               (tmp_path / "first" / "provider" / "job.json").read_text()]
    assert not [text for text in written if key in text]

    # registered with its lineage
    registry = json.loads((models_dir / "registry.json").read_text())
    entries = [e for e in registry["models"] if e.get("weights_uri") == train["weights"]]
    assert entries and entries[0]["extra"]["provider_base_model"] == base_model


@pytest.mark.parametrize("provider", sorted(LIVE))
def test_a_job_that_fails_at_the_provider_fails_the_train_stage(provider, models_dir, tmp_path):
    app = server_module(provider).create_app(steps=2, fail=True)
    with LoopbackServer(app) as server:
        out = launch([*provider_args(provider, server.url), "hydra.run.dir=run"], cwd=tmp_path,
                     env=run_env(provider, server.url, models_dir, tmp_path))
    assert out.returncode == 4, out.stderr[-2000:]
    line = [x for x in out.stderr.splitlines() if x.startswith("[thinker] error: ")]
    assert len(line) == 1 and "did not produce a model" in line[0], out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    record = json.loads((tmp_path / "run" / "run_record.json").read_text())
    assert record["exit_status"] == "failed" and record["stages"]["train"]["status"] == "failed"


def test_a_launcher_killed_while_polling_reattaches_on_re_launch(models_dir, tmp_path):
    import subprocess
    import sys
    import time

    from conftest import ROOT

    provider = "together"
    app = server_module(provider).create_app(steps=40)
    api = app.state.api
    with LoopbackServer(app) as server:
        env = run_env(provider, server.url, models_dir, tmp_path)
        args = [*provider_args(provider, server.url), "provider.poll_interval=0.5"]
        proc = subprocess.Popen([sys.executable, str(ROOT / "launch.py"), *args, "hydra.run.dir=killed"],
                                cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ledger = tmp_path / "outputs" / "provider_jobs.jsonl"
        deadline = time.monotonic() + 180
        while not (ledger.is_file() and ledger.read_text().strip()) and proc.poll() is None:
            assert time.monotonic() < deadline, "the job was never created"
            time.sleep(0.2)
        proc.kill()  # SIGKILL while it polls: no cleanup runs
        proc.wait(timeout=30)
        assert len(api.jobs) == 1
        job_id = next(iter(api.jobs))
        again = launch([*provider_args(provider, server.url), "hydra.run.dir=again"], cwd=tmp_path, env=env)
        assert again.returncode == 0, again.stderr[-3000:]
    assert len(api.jobs) == 1, "the re-launch created a second job"
    train = json.loads((tmp_path / "again" / "run_record.json").read_text())["stages"]["train"]
    assert train["provider_job_id"] == job_id and train["reattached"] is True


def test_provider_deploy_evaluates_a_fine_tune_that_needs_a_deployment_and_removes_it(models_dir, tmp_path):
    """Fireworks serves LoRA fine-tunes only from a deployment: evaluation.provider_deploy=true makes one for the
    evaluation, samples through it, and deletes it afterwards (it costs money while it exists)."""
    provider = "fireworks"
    app = server_module(provider).create_app(steps=2)
    api = app.state.api
    with LoopbackServer(app) as server:
        out = launch([*provider_args(provider, server.url), "evaluation.provider_deploy=true", "hydra.run.dir=run"],
                     cwd=tmp_path, env=run_env(provider, server.url, models_dir, tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "run_record.json").read_text())
    model_id = record["stages"]["train"]["provider_model_id"]
    assert record["stages"]["eval"]["status"] == "passed"
    assert len(api.chat_requests) == 2 and all(m.startswith(model_id + "#") for m, _ in api.chat_requests)
    assert api.deployments == {}, "the evaluation's deployment was left running"


@pytest.mark.parametrize("provider", sorted(LIVE))
def test_max_wait_leaves_the_job_running_and_thinker_jobs_sees_and_cancels_it(provider, models_dir, tmp_path):
    import subprocess
    import sys

    app = server_module(provider).create_app(steps=10_000)
    with LoopbackServer(app) as server:
        env = run_env(provider, server.url, models_dir, tmp_path)
        out = launch([*provider_args(provider, server.url), "provider.max_wait=1", "hydra.run.dir=run"],
                     cwd=tmp_path, env=env)
        assert out.returncode == 4, out.stderr[-2000:]
        assert "has not finished after provider.max_wait=1 s" in out.stderr and "Traceback" not in out.stderr
        job_id = json.loads((tmp_path / "run" / "provider" / "job.json").read_text())["job_id"]
        env[base_url_env(provider)] = base_url(provider, server.url)

        def jobs(*args: str):
            return subprocess.run([sys.executable, "-m", "thinker.commands.cli", "jobs", *args], cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=120)

        status = jobs("status", job_id)
        assert status.returncode == 0, status.stderr
        assert status.stdout.startswith(f"[provider] {provider} {job_id}: ")
        cancelled = jobs("cancel", job_id)
        assert cancelled.returncode == 0 and f"cancelled {provider} job {job_id}" in cancelled.stdout, cancelled.stderr
        listed = jobs("list")
    assert job_id in listed.stdout and "cancelled" in listed.stdout
    assert api_key(provider) not in out.stdout + out.stderr + status.stdout + listed.stdout


def api_key(provider: str) -> str:
    return next(v for k, v in server_module(provider).client_env("http://x").items() if k.endswith("_API_KEY"))


def base_url_env(provider: str) -> str:
    return next(name for name in server_module(provider).client_env("http://x") if name.endswith("_BASE_URL"))


def test_a_job_cancelled_at_the_provider_says_cancelled_not_failed(models_dir, tmp_path):
    """Someone cancels the running job in the provider's console (its cancel endpoint, with the same key):
    the run stops with one line saying it was cancelled and that a new launch starts a new job."""
    import threading
    import time
    import urllib.request

    provider = "openai"
    app = server_module(provider).create_app(steps=10_000)
    api = app.state.api
    with LoopbackServer(app) as server:

        def cancel_when_running() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                running = [i for i, job in list(api.jobs.items()) if job.body["status"] == "running"]
                if running:
                    request = urllib.request.Request(f"{server.url}/v1/fine_tuning/jobs/{running[0]}/cancel",
                                                     method="POST",
                                                     headers={"Authorization": f"Bearer {api_key(provider)}"})
                    urllib.request.urlopen(request, timeout=10).read()
                    return
                time.sleep(0.05)

        canceller = threading.Thread(target=cancel_when_running, daemon=True)
        canceller.start()
        out = launch([*provider_args(provider, server.url), "hydra.run.dir=run"], cwd=tmp_path,
                     env=run_env(provider, server.url, models_dir, tmp_path))
        canceller.join(timeout=5)
    assert out.returncode == 4, out.stderr[-2000:]
    lines = [x for x in out.stderr.splitlines() if x.startswith("[thinker] error: ")]
    job_id = json.loads((tmp_path / "run" / "provider" / "job.json").read_text())["job_id"]
    assert len(lines) == 1 and f"provider=openai job {job_id} was cancelled (cancelled)" in lines[0], out.stderr[-2000:]
    assert "launch again to start a new job" in lines[0] and "failed" not in lines[0]
    record = json.loads((tmp_path / "run" / "run_record.json").read_text())
    assert record["exit_status"] == "failed" and record["stages"]["train"]["status"] == "failed"
