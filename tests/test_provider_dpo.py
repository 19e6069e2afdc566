"""objective=dpo on the hosted providers: one universal job configuration becomes each provider's own
preference job (OpenAI's method type dpo, Together's training_method dpo, Fireworks' DPO API), the
capability reports say who runs what, and config check refuses what a provider cannot do, with the reason.
Through the real SDKs against the loopback servers of tests/provider_servers."""

from __future__ import annotations

import functools
import json
import subprocess
import sys

import pytest
from conftest import ROOT, clean_env, launch
from provider_servers import fireworks_api, openai_api, together_api
from provider_servers.loopback import LoopbackServer

from thinker.providers.adapter import UploadedFiles

MODELS = {"openai": "gpt-4.1-mini-2025-04-14", "together": "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference",
          "fireworks": "accounts/fireworks/models/qwen2p5-7b-instruct"}
METHODS = {"openai": "full", "together": "lora", "fireworks": "lora"}


@functools.cache
def composed(provider: str, *overrides: str):
    from thinker.launch.app import compose_config

    return compose_config(["backend=provider", f"provider={provider}", f"provider.base_model={MODELS[provider]}",
                           f"method={METHODS[provider]}", "data=preference", "objective=dpo", *overrides])


def job_and_adapter(provider: str, *overrides: str):
    from thinker.config.job_configuration import job_configuration
    from thinker.providers import adapter_for

    cfg = composed(provider, *overrides)
    return job_configuration(cfg), adapter_for(cfg.provider)


def errors(provider: str, *overrides: str) -> dict[str, str]:
    job, adapter = job_and_adapter(provider, *overrides)
    return {f.key: f.message for f in adapter.validate(job) if f.error}


# ---------------------------------------------------------------- capabilities and payloads (no network)


def test_the_universal_job_carries_the_objective():
    job, _ = job_and_adapter("together", "objective.beta=0.3")
    assert (job.objective.name, job.objective.beta, job.objective.loss) == ("dpo", 0.3, "sigmoid")


@pytest.mark.parametrize("provider, methods, beta_range", [
    ("openai", ["full"], "(0, 2]"), ("together", ["lora", "full"], "(0, inf)"), ("fireworks", ["lora"], "(0, 0.5)")])
def test_capabilities_say_who_runs_dpo_with_which_methods_and_beta(provider, methods, beta_range):
    _, adapter = job_and_adapter(provider)
    preference = adapter.capabilities().preference
    assert preference is not None and preference.methods == methods and preference.losses == ["sigmoid"]
    assert preference.beta_range() == beta_range
    assert adapter.capabilities().as_dict()["preference"]["methods"] == methods  # what the command prints


def test_the_capabilities_command_prints_the_preference_support():
    out = subprocess.run([sys.executable, "-m", "thinker.commands.cli", "providers", "capabilities", "fireworks"],
                         cwd=ROOT, capture_output=True, text=True, env=clean_env(), timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "preference" in out.stdout and "0.5" in out.stdout


def test_openai_gets_a_dpo_method_with_beta():
    job, adapter = job_and_adapter("openai", "objective.beta=0.25")
    payload = adapter.translate(job, UploadedFiles("file-train"))
    assert payload["method"] == {"type": "dpo", "dpo": {"hyperparameters": {
        "n_epochs": job.schedule.epochs, "batch_size": job.schedule.batch_size * job.schedule.gradient_accumulation,
        "beta": 0.25}}}
    assert not errors("openai", "objective.beta=0.25")


def test_together_gets_training_method_dpo_without_train_on_inputs():
    job, adapter = job_and_adapter("together", "objective.beta=0.2")
    payload = adapter.translate(job, UploadedFiles("file-train"))
    assert (payload["training_method"], payload["dpo_beta"], payload["lora"]) == ("dpo", 0.2, True)
    assert "train_on_inputs" not in payload  # the SDK refuses it for DPO
    full, adapter = job_and_adapter("together", "method=full")
    assert adapter.translate(full, UploadedFiles("f"))["lora"] is False and not errors("together", "method=full")


def test_fireworks_gets_a_dpo_job_with_its_training_config():
    job, adapter = job_and_adapter("fireworks", "objective.beta=0.1", "optimizer.scheduler.warmup_ratio=0")
    payload = adapter.translate(job, UploadedFiles("accounts/a/datasets/thinker-train-ab-12ex"))
    assert payload["loss_config"] == {"method": "DPO", "dpo": {"beta": 0.1}}
    assert payload["training_config"]["base_model"] == MODELS["fireworks"]
    assert payload["training_config"]["lora_rank"] == job.method.lora.rank
    assert "evaluation_dataset" not in payload and "extra_body" not in payload  # the DPO API takes neither


# ---------------------------------------------------------------- refusals at config check


def test_a_beta_outside_the_providers_range_is_refused_with_it():
    assert "(0, 2]" in errors("openai", "objective.beta=3.0")["objective.beta"]
    assert "(0, 0.5)" in errors("fireworks", "objective.beta=0.5")["objective.beta"]
    assert "objective.beta" not in errors("together", "objective.beta=3.0")


def test_a_loss_or_method_the_provider_does_not_run_is_refused():
    assert "objective.loss=ipo" in errors("together", "objective.loss=ipo")["objective.loss"]
    assert "does not train method=full preference" in errors("fireworks", "method=full")["method"]
    assert "method" in errors("openai", "method=lora")


def test_loss_on_prompts_is_dropped_with_a_warning_for_a_preference_job():
    job, adapter = job_and_adapter("together", "trainer.train_on_inputs=enabled")
    (warning,) = [f for f in adapter.validate(job) if f.key == "trainer.train_on_inputs"]
    assert not warning.error and "completions only" in warning.message


def test_openai_dpo_needs_a_model_its_dpo_guide_lists():
    assert "DPO" in errors("openai", "provider.base_model=gpt-4o-mini-2024-07-18")["provider.base_model"]


def test_a_provider_without_preference_jobs_refuses_dpo_with_the_reason():
    from thinker.providers.capabilities import Capabilities
    from thinker.providers.checks import objective_findings

    job, _ = job_and_adapter("together")
    caps = Capabilities(provider="acme", available=True, supported_methods=["lora"],
                        preference_refusal="acme's API has supervised jobs only")
    (finding,) = objective_findings(caps, job)
    assert finding.key == "objective" and "acme's API has supervised jobs only" in finding.message


def test_launch_refuses_at_config_check_naming_the_key(tmp_path):
    out = launch(["backend=provider", "provider=fireworks", f"provider.base_model={MODELS['fireworks']}",
                  "method=lora", "data=preference", "objective=dpo", "objective.beta=0.7", "hydra.run.dir=run"],
                 cwd=tmp_path, env=clean_env(FIREWORKS_API_KEY="fw-test", FIREWORKS_ACCOUNT_ID="acct"))
    assert out.returncode == 2, out.stderr[-2000:]
    line = [x for x in out.stderr.splitlines() if x.startswith("[thinker] error: ")]
    assert line and "objective.beta=0.7" in line[0] and "(0, 0.5)" in out.stderr
    assert "Traceback" not in out.stderr


# ---------------------------------------------------------------- the upload file and the SDK calls


def test_pairs_are_uploaded_in_the_published_preference_shape(tmp_path):
    from thinker.providers.upload_format import prepare_upload

    cfg = composed("openai")
    _, adapter = job_and_adapter("openai")
    files = prepare_upload(cfg, tmp_path, adapter.capabilities())
    rows = [json.loads(line) for line in files.train.read_text().splitlines()]
    assert len(rows) == files.train_examples >= 10
    for row in rows:
        assert set(row) == {"input", "preferred_output", "non_preferred_output"}
        assert [m["role"] for m in row["input"]["messages"]] == ["user"]
        assert [m["role"] for m in row["preferred_output"]] == ["assistant"]
        assert row["preferred_output"] != row["non_preferred_output"]
    assert openai_api.chat_jsonl_problem(files.train.read_bytes(), "dpo") is None  # the server's own check


@pytest.mark.parametrize("provider, module", [("openai", openai_api), ("together", together_api),
                                              ("fireworks", fireworks_api)])
def test_a_dpo_job_is_created_and_polled_through_the_real_sdk(provider, module, tmp_path, monkeypatch):
    from thinker.providers.upload_format import prepare_upload

    app = module.create_app(steps=2)
    api = app.state.api
    with LoopbackServer(app) as server:
        for name, value in module.client_env(server.url).items():
            monkeypatch.setenv(name, value)
        job, adapter = job_and_adapter(provider, "optimizer.lr=1e-4", "optimizer.scheduler.warmup_ratio=0")
        adapter.poll_interval = 0.01
        upload = prepare_upload(composed(provider, "optimizer.lr=1e-4", "optimizer.scheduler.warmup_ratio=0"),
                                tmp_path, adapter.capabilities())
        files = UploadedFiles(adapter.upload(upload.train, "train"))
        handle = adapter.start(job, files, "fp0123456789abcdef")
        assert adapter.find_job(job, "fp0123456789abcdef") == handle.job_id  # a re-launch reattaches
        for _ in range(20):
            status = adapter.status(handle.job_id)
            if status.state.finished:
                break
        assert str(status.state) == "succeeded" and status.model_id
        assert status.metrics and "train_loss" in status.metrics[max(status.metrics)]
    created = {"openai": lambda: api.create_bodies[-1]["method"]["type"],
               "together": lambda: api.create_requests[-1]["training_method"]["method"],
               "fireworks": lambda: api.created_bodies[-1]["lossConfig"]["method"]}[provider]()
    assert created in ("dpo", "DPO")


# ---------------------------------------------------------------- the whole pipeline (slow)


@pytest.mark.slow
@pytest.mark.parametrize("provider, module", [("openai", openai_api), ("together", together_api),
                                              ("fireworks", fireworks_api)])
def test_launch_objective_dpo_runs_the_pipeline_on_each_provider(provider, module, private_models_dir, tmp_path):
    """validate -> train (the provider's DPO job) -> eval -> record -> registry, as users launch it."""
    app = module.create_app(steps=3)
    api = app.state.api
    with LoopbackServer(app) as server:
        env = {k: v for k, v in module.client_env(server.url).items() if not k.endswith("_BASE_URL")}
        url = next((v for k, v in module.client_env(server.url).items() if k.endswith("_BASE_URL")), server.url)
        out = launch(["backend=provider", f"provider={provider}", f"method={METHODS[provider]}",
                      f"provider.base_model={MODELS[provider]}", f"provider.base_url={url}", "data=preference",
                      "objective=dpo", "objective.beta=0.2", "data.max_examples=40", "provider.poll_interval=0.05",
                      "provider.max_wait=120", "optimizer.lr=1e-4", "optimizer.scheduler.warmup_ratio=0",
                      "evaluation.max_samples=2", "evaluation.compare_base=false", "validation.pytest.enabled=false",
                      "hydra.run.dir=run"],
                     cwd=tmp_path, env=clean_env(THINKER_MODELS_DIR=str(private_models_dir), **env))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert len(api.jobs) == 1
    record = json.loads((tmp_path / "run" / "run_record.json").read_text())
    assert [record["stages"][s]["status"] for s in ("validate", "train")] == ["passed", "passed"]
    train = record["stages"]["train"]
    assert train["job_configuration"]["objective"] == {"name": "dpo", "beta": 0.2, "loss": "sigmoid"}
    assert record["stages"]["eval"]["status"] in ("passed", "skipped")
    uploaded = json.loads((tmp_path / "run" / "provider" / "train.jsonl").read_text().splitlines()[0])
    assert set(uploaded) == {"input", "preferred_output", "non_preferred_output"}
    registry = json.loads((private_models_dir / "registry.json").read_text())
    assert [e for e in registry["models"] if e.get("weights_uri") == train["weights"]]
