"""provider=together: capabilities, checks and the payload without network; everything else through the real
`together` SDK against the loopback Together API (tests/provider_servers/together_api.py)."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT
from provider_servers.loopback import LoopbackServer
from provider_servers.together_api import API_KEY, CANNED_ANSWER, client_env, create_app

from thinker.errors import ThinkerError
from thinker.providers.adapter import CreateOutcomeUnknown, JobState, ProviderUnreachable, UploadedFiles

MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"
FINGERPRINT = "0123456789abcdef" * 4
SUFFIX = "thinker-0123456789ab"
GREEDY = {"do_sample": False, "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 160}
# the settings whose translation the payload tests pin down (independent of the default model's lr)
MAPPED = ("optimizer.lr=2e-5", "method.rank=16", "method.alpha=32", "trainer.epochs=2",
          "trainer.batch_size=16")
CONVERSATION = {"messages": [{"role": "user", "content": "Claim: water boils at 100 C."},
                             {"role": "assistant", "content": "CLAIM[c1]: water boils at 100 C"}]}


@functools.cache
def composed(overrides: tuple[str, ...]):
    from thinker.config.job_configuration import job_configuration
    from thinker.launch.app import compose_config

    base = ["backend=provider", "provider=together", f"provider.base_model={MODEL}"]
    cfg = compose_config([*base, *overrides])
    return cfg, job_configuration(cfg)


def job(*overrides: str):
    return composed(tuple(overrides))[1]


def adapter(*overrides: str):
    from thinker.providers import adapter_for

    return adapter_for(composed(tuple(overrides))[0].provider)


def errors(findings) -> list[str]:
    return [f.key for f in findings if f.error]


def warnings(findings) -> list[str]:
    return [f.key for f in findings if not f.error]


@pytest.fixture
def together(monkeypatch):
    """start(**create_app kwargs) -> a running LoopbackServer, the SDK's variables pointed at it."""
    servers = []

    def start(**kwargs) -> LoopbackServer:
        server = LoopbackServer(create_app(**kwargs)).start()
        servers.append(server)
        for name, value in client_env(server.url).items():
            monkeypatch.setenv(name, value)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def data_files(tmp_path):
    train, validation = tmp_path / "train.jsonl", tmp_path / "validation.jsonl"
    train.write_text("\n".join(json.dumps(CONVERSATION) for _ in range(3)) + "\n")
    validation.write_text(json.dumps(CONVERSATION) + "\n")
    return train, validation


def uploaded(together_adapter, data_files) -> UploadedFiles:
    train, validation = data_files
    return UploadedFiles(together_adapter.upload(train, "train"),
                         together_adapter.upload(validation, "validation"))


def poll_to_end(together_adapter, job_id: str, limit: int = 20) -> list:
    statuses = []
    for _ in range(limit):
        statuses.append(together_adapter.status(job_id))
        if statuses[-1].state.finished:
            return statuses
    raise AssertionError(f"job {job_id} did not finish in {limit} polls: {statuses[-1]}")


# ---------------------------------------------------------------------- no network


def test_capabilities_report_what_together_offers():
    ad = adapter()
    caps = ad.capabilities().as_dict()
    assert ad.sdk_module() == "together"
    assert (ad.api_key_env, ad.base_url_env, ad.poll_interval, ad.max_wait) == (
        "TOGETHER_API_KEY", "TOGETHER_BASE_URL", 30.0, 86400.0)
    assert caps["available"] is True
    assert caps["supported_methods"] == ["lora", "full"]
    assert caps["supported_schedulers"] == ["cosine", "linear", "constant", "constant_with_warmup"]
    assert caps["supported_optimizations"] == ["sequence_packing"]
    assert caps["supported_precisions"] == ["bf16"]
    assert caps["parameter_ranges"] == {"method.rank": {"min": 1, "max": 64, "integer": True}}
    assert sorted(caps["custom_parameters"]) == ["early_stopping_patience", "max_batch_size"]
    assert caps["custom_parameters"]["max_batch_size"]["type"] == "boolean"
    assert (caps["custom_parameters"]["early_stopping_patience"]["min"],
            caps["custom_parameters"]["early_stopping_patience"]["max"]) == (1, 20)
    assert caps["serverless_inference"] == ["lora"]
    assert caps["upload_format"] == "chat_messages_jsonl"


def test_backend_provider_picks_lora_and_the_default_job_passes():
    cfg, default = composed(())
    assert str(cfg.method.name) == "lora" and default.method.type == "lora"
    findings = adapter().validate(default)
    assert [(f.key, f.error) for f in findings] == [("trainer.precision", False)]
    assert findings[0].message == "trainer.precision=fp32 is dropped: provider=together trains in bf16"
    assert job("method=full").method.type == "full"
    assert errors(adapter().validate(job("method=full"))) == []


@pytest.mark.parametrize(("overrides", "key", "text"), [
    (("method=qlora",), "method", "provider=together does not train method=qlora"),
    (("method.rank=128",), "method.rank",
     "method.rank=128 is outside what provider=together accepts, integer [1, 64]"),
    (("optimizer.scheduler.type=polynomial",), "optimizer.scheduler.type",
     "provider=together has no polynomial learning-rate schedule"),
    (("trainer.max_steps=10",), "trainer.max_steps", "trainer.max_steps=10: provider=together trains whole"),
    (("method.alpha=16.5",), "method.alpha",
     "method.alpha=16.5: provider=together takes an integer lora_alpha"),
    (("+provider.options.bogus=1",), "provider.options.bogus", "provider=together has no parameter bogus"),
    (("+provider.options.early_stopping_patience=3",), "provider.options.early_stopping_patience",
     "needs a validation split and trainer.evaluations >= 5 (got 4)"),
])
def test_validate_refuses_what_together_cannot_run(overrides, key, text):
    findings = adapter(*overrides).validate(job(*overrides))
    assert errors(findings) == [key]
    assert text in next(f.message for f in findings if f.error)


def test_validate_warns_about_what_is_dropped():
    linear = adapter().validate(job("optimizer.scheduler.type=linear", "optimizer.scheduler.cycles=1.0"))
    assert (errors(linear), warnings(linear)) == ([], ["trainer.precision", "optimizer.scheduler.cycles"])
    dropped = adapter().validate(job("trainer.optimizations=[sequence_packing,gradient_checkpointing]"))
    assert (errors(dropped), warnings(dropped)) == ([], ["trainer.precision", "trainer.optimizations"])
    assert dropped[1].message == ("trainer.optimizations gradient_checkpointing are dropped: "
                                  "provider=together decides these itself")
    no_split = adapter().validate(job("data.validation_split=0"))
    assert (errors(no_split), warnings(no_split)) == ([], ["trainer.precision", "trainer.evaluations"])


def test_translate_maps_each_setting():
    payload = adapter().translate(job(*MAPPED), UploadedFiles("file-t", "file-v"))
    assert payload == {
        "training_file": "file-t", "validation_file": "file-v", "model": MODEL,
        "n_epochs": 2, "n_checkpoints": 1, "n_evals": 4, "batch_size": 16, "gradient_accumulation_steps": 1,
        "max_seq_length": 768, "packing": True, "learning_rate": 2e-5,
        "lr_scheduler_type": "cosine", "min_lr_ratio": 0.0, "scheduler_num_cycles": 0.5, "warmup_ratio": 0.05,
        "max_grad_norm": 1.0, "weight_decay": 0.01, "train_on_inputs": "auto", "training_method": "sft",
        "random_seed": 42, "lora": True, "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0,
        "lora_trainable_modules": "all-linear",
    }
    # no validation file: no evaluations, no validation_file key
    assert adapter().translate(job(*MAPPED), UploadedFiles("file-t"))["n_evals"] == 0
    assert "validation_file" not in adapter().translate(job(*MAPPED), UploadedFiles("file-t"))


def test_translate_full_constant_schedules_and_options():
    overrides = ("method=full", "optimizer.scheduler.type=constant_with_warmup",
                 "optimizer.scheduler.warmup_ratio=0.1", "trainer.save_total_limit=0",
                 "trainer.train_on_inputs=disabled", "trainer.optimizations=[]",
                 "+provider.options.max_batch_size=true", "+provider.options.early_stopping_patience=2",
                 "optimizer.lr=1e-5")
    payload = adapter(*overrides).translate(job(*overrides), UploadedFiles("file-t", "file-v"))
    keys = ("lora", "batch_size", "n_checkpoints", "train_on_inputs", "packing", "lr_scheduler_type",
            "min_lr_ratio", "warmup_ratio", "early_stopping_enabled", "early_stopping_patience",
            "learning_rate")
    assert {k: payload[k] for k in keys} == {
        "lora": False, "batch_size": "max", "n_checkpoints": 1, "train_on_inputs": False, "packing": False,
        "lr_scheduler_type": "linear", "min_lr_ratio": 1.0, "warmup_ratio": 0.1,
        "early_stopping_enabled": True, "early_stopping_patience": 2, "learning_rate": 1e-5}
    assert not {"lora_r", "lora_alpha", "scheduler_num_cycles"} & set(payload)
    constant = adapter().translate(job("optimizer.scheduler.type=constant"), UploadedFiles("file-t"))
    assert (constant["lr_scheduler_type"], constant["min_lr_ratio"], constant["warmup_ratio"]) == (
        "linear", 1.0, 0.0)


def test_checks_and_payload_import_no_sdk():
    script = textwrap.dedent(
        f"""
        import json, sys
        from thinker.launch.app import compose_config
        from thinker.config.job_configuration import job_configuration
        from thinker.providers import adapter_for
        from thinker.providers.adapter import UploadedFiles
        cfg = compose_config(["backend=provider", "provider=together", "provider.base_model={MODEL}"])
        ad = adapter_for(cfg.provider)
        ad.capabilities(); ad.validate(job_configuration(cfg))
        ad.translate(job_configuration(cfg), UploadedFiles("file-t"))
        heavy = ["together", "torch", "transformers", "mlflow", "httpx"]
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


# ---------------------------------------------------------------------- the SDK against the loopback API


def test_upload_sends_the_prepared_file(together, data_files):
    api = together().app.state.api
    file_id = adapter().upload(data_files[0], "train")
    assert api.file_bytes[file_id] == data_files[0].read_bytes()
    assert (api.files[file_id]["purpose"], api.files[file_id]["filename"],
            api.files[file_id]["processing_status"]) == ("fine-tune", "train.jsonl", "COMPLETED")


def test_start_creates_the_job_and_polls_it_to_success(together, data_files):
    api = together(steps=4).app.state.api
    ad = adapter(*MAPPED)
    files = uploaded(ad, data_files)
    handle = ad.start(job(*MAPPED), files, FINGERPRINT)
    assert handle.reattached is False and list(api.jobs) == [handle.job_id]
    assert api.create_requests == [{
        "training_file": files.training_file_id, "validation_file": files.validation_file_id, "model": MODEL,
        "n_epochs": 2, "n_checkpoints": 1, "n_evals": 4, "batch_size": 16, "gradient_accumulation_steps": 1,
        "max_seq_length": 768, "packing": True, "learning_rate": 2e-5,
        "lr_scheduler": {"lr_scheduler_type": "cosine",
                         "lr_scheduler_args": {"min_lr_ratio": 0.0, "num_cycles": 0.5}},
        "warmup_ratio": 0.05, "max_grad_norm": 1.0, "weight_decay": 0.01, "suffix": SUFFIX, "random_seed": 42,
        "early_stopping_enabled": False,
        "training_type": {"type": "Lora", "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0,
                          "lora_trainable_modules": "all-linear"},
        "training_method": {"method": "sft", "train_on_inputs": "auto"},
    }]
    statuses = poll_to_end(ad, handle.job_id)
    assert [s.provider_state for s in statuses] == ["queued", "running", "running", "running", "running",
                                                    "uploading", "completed"]
    assert [s.state for s in statuses] == [JobState.queued] + [JobState.running] * 5 + [JobState.succeeded]
    assert [s.progress for s in statuses] == [None, None, 0.25, 0.5, 0.75, 1.0, 1.0]
    final = statuses[-1]
    output = api.jobs[handle.job_id]["model_output_name"]
    assert output.startswith(f"thinker-tester/Meta-Llama-3.1-8B-Instruct-Reference-{SUFFIX}-")
    assert (final.model_id, final.error, final.total_steps, final.trained_tokens) == (output, None, 4, 4000)
    assert [s.model_id for s in statuses[:-1]] == [None] * 6
    assert final.metrics == {step: {"train_loss": 2.0 - 0.25 * step, "learning_rate": 1e-5, "grad_norm": 0.5,
                                    "val_loss": round(2.1 - 0.25 * step, 4)} for step in (1, 2, 3, 4)}
    assert [e.message for e in final.events] == [
        "Fine tune request created", "Training started", "Epoch completed, at step 1",
        "Epoch completed, at step 2", "Epoch completed, at step 3", "Epoch completed, at step 4",
        "Training completed", "Model upload complete", final.events[-1].message]
    assert final.events[-1].message.startswith("Job finished at ")
    ids = [e.event_id for e in final.events]
    assert len(set(ids)) == len(ids)
    assert [e.event_id for e in ad.status(handle.job_id).events] == ids  # stable across polls


def test_second_start_of_the_same_config_reattaches(together, data_files):
    api = together().app.state.api
    ad = adapter()
    files = uploaded(ad, data_files)
    first = ad.start(job(), files, FINGERPRINT)
    again = ad.start(job(), files, FINGERPRINT)
    assert (again.job_id, again.reattached) == (first.job_id, True)
    poll_to_end(ad, first.job_id)  # a succeeded job is reattached too
    assert ad.start(job(), files, FINGERPRINT).job_id == first.job_id
    other = ad.start(job(), files, "fedcba9876543210" * 4)  # another config: its own job
    assert other.reattached is False and len(api.jobs) == 2 and len(api.create_requests) == 2


def test_a_job_failing_at_together(together, data_files):
    api = together(steps=4, fail=True).app.state.api
    ad = adapter()
    handle = ad.start(job(), uploaded(ad, data_files), FINGERPRINT)
    final = poll_to_end(ad, handle.job_id)[-1]
    assert (final.state, final.provider_state, final.model_id) == (JobState.failed, "error", None)
    assert final.error == "Training failed: CUDA out of memory at step 2"
    assert final.events[-1].level == "error"
    retry = ad.start(job(), UploadedFiles(api.jobs[handle.job_id]["training_file"]), FINGERPRINT)
    assert retry.reattached is False and retry.job_id != handle.job_id  # a failed job is never reattached


def test_reads_survive_429_and_5xx(together, data_files):
    server = together()
    ad = adapter()
    handle = ad.start(job(), uploaded(ad, data_files), FINGERPRINT)
    server.faults.arm("retrieve_job=503x1,list_events=429x1,list_jobs=502x1")
    assert ad.status(handle.job_id).provider_state == "queued"
    assert ad.find_job(job(), FINGERPRINT) == handle.job_id
    assert server.faults.injected == {"retrieve_job": 1, "list_events": 1, "list_jobs": 1}


def test_a_dropped_connection_while_polling(together, data_files):
    server = together()
    ad = adapter()
    handle = ad.start(job(), uploaded(ad, data_files), FINGERPRINT)
    ad.read_retries = 1  # keep the SDK's backoff short
    server.stop()
    with pytest.raises(ProviderUnreachable, match="APIConnectionError") as lost:
        ad.status(handle.job_id)
    assert API_KEY not in str(lost.value)
    server.start()
    assert ad.status(handle.job_id).provider_state == "queued"


def test_a_create_whose_answer_is_lost_reattaches_to_that_job(together, data_files):
    api = together(create_delay_s=2.0).app.state.api
    ad = adapter()
    files = uploaded(ad, data_files)
    ad.request_timeout = 0.5  # the job is made, then the answer comes after the client gave up
    with pytest.raises(CreateOutcomeUnknown):
        ad.create(ad.translate(job(), files), job(), FINGERPRINT)
    assert len(api.jobs) == 1
    handle = ad.start(job(), files, FINGERPRINT)
    assert handle.reattached is True and list(api.jobs) == [handle.job_id] and len(api.create_requests) == 1


@pytest.mark.parametrize(("fault", "outcome_unknown"), [
    ("create_job=503x1", True),  # the POST itself: a job may exist
    ("create_job=429x1", False),  # rate-limited: nothing was made, create() tries again itself
    ("estimate_price=503x1", False),  # the SDK's price look-up before the POST: nothing was made
])
def test_a_refused_create_makes_exactly_one_job(together, data_files, fault, outcome_unknown):
    server = together()
    ad = adapter()
    files = uploaded(ad, data_files)
    server.faults.arm(fault)
    if outcome_unknown:  # a 5xx may hide a made job: create() says so, start() looks again, then creates
        with pytest.raises(CreateOutcomeUnknown):
            ad.create(ad.translate(job(), files), job(), FINGERPRINT)
        server.faults.arm(fault)
    handle = ad.start(job(), files, FINGERPRINT)
    assert handle.reattached is False and list(server.app.state.api.jobs) == [handle.job_id]
    route = fault.split("=")[0]
    assert server.faults.injected == {route: 2 if outcome_unknown else 1}


def test_limits_are_checked_before_anything_is_created(together, data_files):
    api = together().app.state.api
    ad = adapter("trainer.batch_size=4")
    files = uploaded(ad, data_files)
    with pytest.raises(ThinkerError) as refused:
        ad.start(job("trainer.batch_size=4"), files, FINGERPRINT)
    assert refused.value.what == f"trainer.batch_size=4 is outside what Together accepts for {MODEL}, [8, 32]"
    assert refused.value.stage == "train" and api.create_requests == []


def test_a_model_together_does_not_fine_tune(together, data_files):
    api = together().app.state.api
    ad = adapter("provider.base_model=acme/not-a-together-model")
    files = uploaded(ad, data_files)
    with pytest.raises(ThinkerError) as refused:
        ad.start(job("provider.base_model=acme/not-a-together-model"), files, FINGERPRINT)
    assert refused.value.what == ("Together refused to read the fine-tuning limits of acme/not-a-together-model "
                                  "(404: Model acme/not-a-together-model is not available for fine-tuning)")
    assert refused.value.fix.startswith("set provider.base_model to a model Together fine-tunes")
    assert api.create_requests == []


def test_cancel(together, data_files):
    api = together().app.state.api
    ad = adapter()
    handle = ad.start(job(), uploaded(ad, data_files), FINGERPRINT)
    ad.cancel(handle.job_id)
    cancelled = ad.status(handle.job_id)
    assert (cancelled.state, cancelled.provider_state) == (JobState.cancelled, "cancelled")
    assert api.jobs[handle.job_id]["status"] == "cancelled"
    assert ad.find_job(job(), FINGERPRINT) is None  # a cancelled job is never reattached
    with pytest.raises(ThinkerError, match="is cancelled and cannot be cancelled"):
        ad.cancel(handle.job_id)


def test_chat_samples_the_fine_tuned_model(together, data_files):
    api = together().app.state.api
    ad = adapter()
    handle = ad.start(job(), uploaded(ad, data_files), FINGERPRINT)
    model_id = poll_to_end(ad, handle.job_id)[-1].model_id
    assert ad.chat(model_id, ["first prompt", "second prompt"], GREEDY, seed=7) == [CANNED_ANSWER] * 2
    assert api.chat_requests == [(model_id, [{"role": "user", "content": "first prompt"}]),
                                 (model_id, [{"role": "user", "content": "second prompt"}])]
    assert api.chat_bodies[0] == {"model": model_id,
                                  "messages": [{"role": "user", "content": "first prompt"}],
                                  "max_tokens": 160, "temperature": 0.0, "seed": 7}
    ad.chat(model_id, ["p"], {**GREEDY, "do_sample": True}, seed=7)
    assert (api.chat_bodies[-1]["temperature"], api.chat_bodies[-1]["top_p"]) == (0.7, 0.9)


def test_chat_with_a_full_fine_tune_names_the_dedicated_endpoint(together, data_files):
    together()
    ad = adapter("method=full")
    handle = ad.start(job("method=full"), uploaded(ad, data_files), FINGERPRINT)
    model_id = poll_to_end(ad, handle.job_id)[-1].model_id
    with pytest.raises(ThinkerError) as refused:
        ad.chat(model_id, ["p"], GREEDY, seed=7)
    assert refused.value.what == f"Together serves {model_id} only on a dedicated endpoint"
    assert refused.value.stage == "eval" and f"https://api.together.ai/models/{model_id}" in refused.value.fix


def test_a_wrong_key_is_refused_without_showing_it(together, data_files, monkeypatch):
    together()
    secret = "tgp_v1_wrong-secret-0123456789"
    monkeypatch.setenv("TOGETHER_API_KEY", secret)
    ad = adapter()
    for call in (lambda: ad.find_job(job(), FINGERPRINT), lambda: ad.status("ft-x"),
                 lambda: ad.upload(data_files[0], "train")):
        with pytest.raises(ThinkerError) as refused:
            call()
        assert refused.value.what.startswith("Together refused the API key (401: Invalid API key provided")
        assert refused.value.fix == ("set TOGETHER_API_KEY to a valid key from "
                                     "https://api.together.ai/settings/api-keys")
        assert secret not in str(refused.value) and API_KEY not in str(refused.value)


def test_a_base_url_ending_in_v1_still_reaches_the_api(together, monkeypatch):
    server = together()
    monkeypatch.setenv("TOGETHER_BASE_URL", server.url + "/v1")  # the form older SDKs used
    assert adapter().find_job(job(), FINGERPRINT) is None  # a doubled /v1/v1 path would answer 404
