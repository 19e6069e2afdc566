"""The rest of the universal job contract on every hosted provider (docs/providers.md): output.suffix, the W&B
integration (the key from the environment, never recorded), provider.metadata passed through as the provider's
own parameters, provider.hardware refused where the provider chooses it, and the design's job documents
(create result, `thinker jobs status --json`). Through each provider's real SDK against its loopback server."""

from __future__ import annotations

import json

import pytest
from conftest import compose
from provider_servers import fireworks_api, openai_api, together_api
from provider_servers.loopback import LoopbackServer

from thinker.errors import ThinkerError
from thinker.providers.adapter import JobEvent, JobState, JobStatus, UploadedFiles

WANDB_KEY = "wandb-secret-0123456789abcdef"
CONTRACT = ["output.name=claims-v2", "provider.integrations.wandb.project=thinker-runs",
            "provider.integrations.wandb.entity=lab"]
MODELS = {"openai": "gpt-4o-mini-2024-07-18", "together": "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference",
          "fireworks": "accounts/fireworks/models/qwen2p5-0p5b-instruct"}
SERVERS = {"openai": openai_api, "together": together_api, "fireworks": fireworks_api}
FP = "3f9a0c1b2d4e5f60718293a4b5c6d7e8f90112233445566778899aabbccddeef"


def configured(provider: str, *overrides: str):
    from thinker.config.job_configuration import job_configuration
    from thinker.providers import adapter_for

    cfg = compose(["backend=provider", f"provider={provider}", f"provider.base_model={MODELS[provider]}", *overrides])
    return cfg, adapter_for(cfg.provider), job_configuration(cfg)


def chat_file(path, n):
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def serve(monkeypatch):
    started = []

    def start(provider: str):
        app = SERVERS[provider].create_app()
        server = LoopbackServer(app).start()
        started.append(server)
        for name, value in SERVERS[provider].client_env(server.url).items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("WANDB_API_KEY", WANDB_KEY)
        return app.state.api

    yield start
    for server in started:
        server.stop()


def create(provider, serve, tmp_path, *overrides):
    api = serve(provider)
    _cfg, adapter, job = configured(provider, *overrides)
    files = UploadedFiles(adapter.upload(chat_file(tmp_path / "t.jsonl", 10), "train"), None)
    payload = adapter.translate(job, files)
    handle = adapter.start(job, files, FP)
    bodies = getattr(api, "create_bodies", None) or getattr(api, "created_bodies", None) or api.create_requests
    return handle, payload, bodies[-1]


def test_openai_receives_suffix_wandb_and_metadata_fields(serve, tmp_path):
    _handle, payload, body = create("openai", serve, tmp_path, *CONTRACT, "+provider.metadata.custom_flag=on")
    assert body["suffix"] == "claims-v2"
    assert body["integrations"] == [{"type": "wandb", "wandb": {"project": "thinker-runs", "entity": "lab"}}]
    assert body["custom_flag"] == "on"  # provider.metadata travels in the request body as it is
    assert WANDB_KEY not in json.dumps(payload) + json.dumps(body)  # OpenAI keeps the key in its org settings


def test_together_receives_suffix_wandb_with_the_key_and_metadata_parameters(serve, tmp_path):
    _handle, payload, body = create("together", serve, tmp_path, *CONTRACT,
                                    "+provider.metadata.early_stopping_min_delta=0.01")
    assert body["suffix"].startswith("claims-v2-thinker-") and len(body["suffix"]) <= 40
    # Together's API names the key wandb_key (the SDK's wandb_api_key)
    assert (body["wandb_project_name"], body["wandb_entity"], body["wandb_key"]) == ("thinker-runs", "lab", WANDB_KEY)
    assert body["early_stopping_min_delta"] == 0.01  # provider.metadata: a create() parameter, as it is
    assert WANDB_KEY not in json.dumps(payload)  # the key joins the request only, never the recorded payload


def test_together_refuses_a_metadata_name_its_create_call_lacks(serve, tmp_path):
    with pytest.raises(ThinkerError, match="not a parameter of Together"):
        create("together", serve, tmp_path, "+provider.metadata.no_such_setting=1")


def test_fireworks_receives_output_model_wandb_config_and_metadata(serve, tmp_path):
    _handle, payload, body = create("fireworks", serve, tmp_path, *CONTRACT, "+provider.metadata.mtpEnabled=true")
    assert body["outputModel"].startswith("claims-v2-thinker-")
    assert body["wandbConfig"] == {"enabled": True, "project": "thinker-runs", "entity": "lab", "apiKey": WANDB_KEY}
    assert body["mtpEnabled"] is True
    assert WANDB_KEY not in json.dumps(payload)


def test_the_wandb_key_is_asked_for_at_config_check_where_the_provider_needs_it():
    from thinker.config.check import check_config

    cfg, _, _ = configured("together", *CONTRACT)
    with pytest.raises(ThinkerError, match="needs WANDB_API_KEY"):
        check_config(cfg, env={"TOGETHER_API_KEY": "tgp-test-key-0123456789"})
    check_config(cfg, env={"TOGETHER_API_KEY": "tgp-test-key-0123456789", "WANDB_API_KEY": WANDB_KEY})


def test_hardware_is_refused_where_the_provider_chooses_it():
    for provider in SERVERS:
        _cfg, adapter, job = configured(provider, "provider.hardware.gpu_type=A100")
        assert "provider.hardware" in [f.key for f in adapter.validate(job) if f.error], provider


def test_metadata_is_recorded_and_in_the_fingerprint_only_when_set():
    from thinker.config.job_configuration import job_configuration_dict
    from thinker.tracking.fingerprint import fingerprint_inputs

    plain, _, _ = configured("together")
    with_metadata, _, job = configured("together", "+provider.metadata.early_stopping_min_delta=0.01")
    assert "metadata" not in fingerprint_inputs(plain)["provider"]
    assert fingerprint_inputs(with_metadata)["provider"]["metadata"] == {"early_stopping_min_delta": 0.01}
    assert job_configuration_dict(job)["passthrough"] == {"early_stopping_min_delta": 0.01}


def test_the_status_document_has_the_design_fields_and_a_time_remaining():
    from thinker.providers.job_status import create_result, status_document

    status = JobStatus("ft-1", JobState.running, "running", progress=0.25,
                       events=[JobEvent("e1", 1000.0, "started")], metrics={3: {"train_loss": 1.5}}, total_steps=12)
    doc = status_document("openai", status, run_dir="outputs/x", estimated_usd=0.42, now=1100.0)
    assert {"status", "progress", "metrics", "events", "estimatedTimeRemaining", "estimatedCost"} <= set(doc)
    assert doc["estimatedTimeRemaining"] == pytest.approx(300.0)  # 100 s for a quarter: 300 s for the rest
    assert doc["metrics"] == {"step": 3, "totalSteps": 12, "trainedTokens": None, "train_loss": 1.5}
    status.estimated_finish = 1150.0  # the provider's own prediction wins
    assert status_document("openai", status, now=1100.0)["estimatedTimeRemaining"] == pytest.approx(50.0)
    assert create_result("outputs/x", "ft-1", 0.42, None, False) == {
        "jobId": "outputs/x", "providerJobId": "ft-1", "estimatedCost": 0.42, "estimatedDuration": None,
        "reattached": False}


def test_thinker_jobs_status_json_through_the_sdk(serve, tmp_path, monkeypatch, capsys):
    from thinker.commands.cli import main
    from thinker.providers import jobs_ledger

    monkeypatch.setenv("THINKER_JOBS_FILE", str(tmp_path / "jobs.jsonl"))
    handle, _payload, _body = create("openai", serve, tmp_path)
    jobs_ledger.append(jobs_ledger.JobEntry("openai", handle.job_id, FP, "outputs/run", MODELS["openai"], "queued",
                                            estimated_usd=1.25, created_at=1.0))
    jobs_ledger.append(jobs_ledger.JobEntry("openai", handle.job_id, FP, "outputs/run", MODELS["openai"], "running"))
    assert main(["jobs", "status", handle.job_id, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["providerJobId"] == handle.job_id and doc["estimatedCost"] == 1.25  # kept from the first line
    assert doc["status"] in ("queued", "running", "succeeded") and isinstance(doc["events"], list)
    assert "metrics" in doc and "estimatedTimeRemaining" in doc and "progress" in doc
