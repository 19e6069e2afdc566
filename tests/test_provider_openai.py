"""provider=openai: the adapter through the real `openai` SDK over loopback HTTP against a server that follows
OpenAI's published fine-tuning API (tests/provider_servers/openai_api.py). No mocks: faults are real HTTP
answers, a dropped connection is the server stopping."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT
from provider_servers import openai_api
from provider_servers.loopback import LoopbackServer

from thinker.errors import ThinkerError
from thinker.providers.adapter import (
    FINGERPRINT_KEY,
    CreateOutcomeUnknown,
    JobState,
    ProviderUnreachable,
    UploadedFiles,
)

BASE = "gpt-4o-mini-2024-07-18"
FP = "fp-0123456789abcdef"
GREEDY = {"do_sample": False, "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 32}
# the server's metrics (provider_servers.openai_api.metrics_at) in the flow's names, step by step
METRICS = {
    1: {"train_loss": 1.75, "train_accuracy": 0.6, "val_batch_loss": 1.85, "val_batch_accuracy": 0.55},
    2: {"train_loss": 1.5, "train_accuracy": 0.7, "val_batch_loss": 1.6, "val_batch_accuracy": 0.65},
    3: {"train_loss": 1.25, "train_accuracy": 0.8, "val_batch_loss": 1.35, "val_batch_accuracy": 0.75},
    4: {"train_loss": 1.0, "train_accuracy": 0.9, "val_batch_loss": 1.1, "val_batch_accuracy": 0.85,
        "val_loss": 1.05, "val_accuracy": 0.9},
}
SDK_ENV = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "OPENAI_ADMIN_KEY",
           "OPENAI_CUSTOM_HEADERS")


# ---------------------------------------------------------------- helpers and fixtures


@functools.cache
def composed(*overrides: str):
    from thinker.launch.app import compose_config

    return compose_config(["backend=provider", "provider=openai", f"provider.base_model={BASE}", *overrides])


def job_of(*overrides: str):
    from thinker.config.job_configuration import job_configuration

    return job_configuration(composed(*overrides))


def adapter_of(*overrides: str):
    from thinker.providers import adapter_for

    adapter = adapter_for(composed(*overrides).provider)
    adapter.read_retries = 2  # quick tests: the SDK's backoff starts at 0.5 s
    return adapter


def findings(*overrides: str):
    return adapter_of(*overrides).validate(job_of(*overrides))


def jsonl(path, rows: int):
    lines = [json.dumps({"messages": [{"role": "user", "content": f"question {i}"},
                                      {"role": "assistant", "content": f"answer {i}"}]}) for i in range(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def serve(monkeypatch):
    """serve(**create_app kwargs) -> (server, state): a fresh loopback server, the SDK's env pointed at it."""
    started = []
    for name in SDK_ENV:
        monkeypatch.delenv(name, raising=False)

    def start(**kwargs):
        app = openai_api.create_app(**kwargs)
        server = LoopbackServer(app).start()
        started.append(server)
        for name, value in openai_api.client_env(server.url).items():
            monkeypatch.setenv(name, value)
        return server, app.state.api

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def files(tmp_path):
    return jsonl(tmp_path / "train.jsonl", 12), jsonl(tmp_path / "validation.jsonl", 3)


def uploaded(adapter, files) -> UploadedFiles:
    return UploadedFiles(adapter.upload(files[0], "train"), adapter.upload(files[1], "validation"))


def poll(adapter, job_id: str, limit: int = 20):
    """Poll until the job finishes: (final status, provider states seen, progress seen)."""
    states, progress = [], []
    for _ in range(limit):
        status = adapter.status(job_id)
        states.append(status.provider_state)
        progress.append(status.progress)
        if status.state.finished:
            return status, states, progress
    raise AssertionError(f"job {job_id} did not finish in {limit} polls: {states}")


# ---------------------------------------------------------------- capabilities, validate, translate (no network)


def test_capabilities_report_what_openai_offers():
    caps = adapter_of().capabilities()
    assert caps.available is True
    assert caps.supported_methods == ["full"]
    assert caps.serverless_inference == ["full"]
    assert sorted(caps.custom_parameters) == ["learning_rate_multiplier", "suffix"]
    rate = caps.custom_parameters["learning_rate_multiplier"]
    assert (rate.type, rate.min, rate.max) == ("number", 0.0, 10.0)
    ranges = {k: (r.min, r.max, r.integer) for k, r in caps.parameter_ranges.items()}
    assert ranges == {"trainer.epochs": (1, 20, True), "trainer.batch_size": (1, 64, True)}
    assert set(caps.ignored_keys) == {"trainer.max_seq_length", "trainer.save_total_limit", "trainer.evaluations",
                                      "optimizer.weight_decay", "optimizer.max_grad_norm",
                                      "optimizer.scheduler.warmup_ratio", "optimizer.scheduler.min_lr_ratio",
                                      "optimizer.scheduler.cycles"}
    assert (caps.min_examples, caps.max_file_bytes, caps.upload_format) == (10, 512 * 1024 ** 2,
                                                                            "chat_messages_jsonl")
    assert "learning_rate_multiplier" in caps.learning_rate_note and "not sent" in caps.learning_rate_note
    assert "2027-01-06" in caps.notes[0] and "winding self-serve fine-tuning down" in caps.notes[0]
    assert caps.alternatives == ["together", "fireworks"]
    assert caps.as_dict()["parameter_ranges"]["trainer.epochs"] == {"min": 1, "max": 20, "integer": True}


def test_config_check_imports_no_sdk_and_the_module_does_not_shadow_it():
    script = textwrap.dedent(f"""
        import sys
        from thinker.launch.app import compose_config
        from thinker.config.job_configuration import job_configuration
        from thinker.providers import adapter_for
        from thinker.providers.adapter import UploadedFiles
        cfg = compose_config(["backend=provider", "provider=openai", "provider.base_model={BASE}"])
        adapter = adapter_for(cfg.provider)
        job = job_configuration(cfg)
        adapter.capabilities(); adapter.validate(job); adapter.translate(job, UploadedFiles("file-a"))
        heavy = [m for m in ("openai", "torch", "transformers", "mlflow") if m in sys.modules]
        import openai
        print(heavy, adapter.sdk_module(), hasattr(openai, "OpenAI"), openai.__file__.endswith(
            "site-packages/openai/__init__.py"))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[] openai True True"


def test_qlora_is_refused_with_the_reason():
    errors = [f for f in findings("method=qlora") if f.error]
    assert [f.key for f in errors] == ["method"]
    assert errors[0].message == ("provider=openai does not train method=qlora: OpenAI offers supervised "
                                 "fine-tuning of whole models only (no LoRA/QLoRA choice)")
    assert errors[0].fix == "use method=full, or provider=together / provider=fireworks for LoRA"


def test_the_default_method_is_full_and_the_defaults_pass():
    assert composed().method.name == "full"
    assert [f for f in findings() if f.error] == []


def test_out_of_range_values_are_refused_naming_the_key_and_range():
    (epochs,) = [f for f in findings("trainer.epochs=25") if f.error]
    assert epochs.key == "trainer.epochs"
    assert epochs.message == "trainer.epochs=25 is outside what provider=openai accepts, integer [1, 20]"
    (batch,) = [f for f in findings("trainer.batch_size=64", "trainer.grad_accum=8") if f.error]
    assert batch.key == "trainer.batch_size"
    assert batch.message == ("trainer.batch_size x trainer.grad_accum = 512 examples per step is outside what "
                             "provider=openai accepts, integer [1, 256]")
    (rate,) = [f for f in findings("+provider.options.learning_rate_multiplier=50") if f.error]
    assert rate.key == "provider.options.learning_rate_multiplier"
    assert rate.message == "provider.options.learning_rate_multiplier=50 is not a number in [0.0, 10.0]"
    (zero,) = [f for f in findings("+provider.options.learning_rate_multiplier=0") if f.error]
    assert zero.fix == "set a number in (0, 10]"


def test_dropped_settings_are_warnings_naming_what_is_dropped():
    warnings = {f.key: f.message for f in findings("optimizer.weight_decay=0.1", "optimizer.max_grad_norm=0.5")
                if not f.error}
    assert warnings["optimizer.weight_decay"] == ("optimizer.weight_decay=0.1 is dropped: OpenAI has no "
                                                  "weight-decay setting")
    assert warnings["optimizer.max_grad_norm"] == ("optimizer.max_grad_norm=0.5 is dropped: OpenAI has no "
                                                   "gradient-clipping setting")
    assert warnings["optimizer.lr"].startswith("optimizer.lr=0.003 is dropped: OpenAI scales its own unpublished")
    with_rate = {f.key: f.message for f in findings("+provider.options.learning_rate_multiplier=0.5")}
    assert with_rate["optimizer.lr"] == ("optimizer.lr=0.003 is dropped: provider.options.learning_rate_multiplier"
                                         "=0.5 is sent instead")


@pytest.mark.parametrize(("override", "key"), [
    ("optimizer.scheduler.type=linear", "optimizer.scheduler.type"),
    ("trainer.max_steps=100", "trainer.max_steps"),
    ("trainer.train_on_inputs=enabled", "trainer.train_on_inputs"),
    ("provider.base_model=Qwen/Qwen2.5-0.5B-Instruct", "provider.base_model"),
    ("provider.base_model=null", "provider.base_model"),
    ("+provider.options.suffix=" + "s" * 65, "provider.options.suffix"),
    ("+provider.options.warmup=3", "provider.options.warmup"),
])
def test_settings_openai_cannot_honour_are_refused(override, key):
    assert [f.key for f in findings(override) if f.error] == [key]


def test_a_fine_tuned_model_can_be_trained_further():
    assert [f for f in findings("provider.base_model=ft:gpt-4o-mini-2024-07-18:org::abc123") if f.error] == []


def test_translate_maps_the_job_to_openais_create_payload():
    adapter = adapter_of()
    assert adapter.translate(job_of(), UploadedFiles("file-t", "file-v")) == {
        "model": BASE, "training_file": "file-t", "validation_file": "file-v", "seed": 42,
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3, "batch_size": 8}}},
    }
    overrides = ("trainer.epochs=5", "trainer.batch_size=4", "trainer.grad_accum=3", "seed=7",
                 "optimizer.lr=0.5", "+provider.options.learning_rate_multiplier=0.3", "+provider.options.suffix=sci")
    assert adapter_of(*overrides).translate(job_of(*overrides), UploadedFiles("file-t")) == {
        "model": BASE, "training_file": "file-t", "seed": 7, "suffix": "sci",
        "method": {"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 5, "batch_size": 12, "learning_rate_multiplier": 0.3}}},
    }


# ---------------------------------------------------------------- the SDK against the loopback server


def test_upload_sends_the_chat_jsonl_as_a_fine_tune_file(serve, files):
    _, api = serve()
    file_id = adapter_of().upload(files[0], "train")
    stored = api.files[file_id]
    assert (stored["purpose"], stored["filename"], stored["content"]) == ("fine-tune", "train.jsonl",
                                                                          files[0].read_bytes())


def test_an_upload_openai_rejects_is_a_thinker_error(serve, tmp_path):
    serve()
    bad = tmp_path / "train.jsonl"
    bad.write_text('{"prompt": "no messages"}\n', encoding="utf-8")
    with pytest.raises(ThinkerError) as caught:
        adapter_of().upload(bad, "train")
    assert "Invalid file format. Example 1: missing 'messages' list." in str(caught.value)
    assert caught.value.stage == "train"


def test_a_job_runs_to_success_with_events_and_metrics(serve, files):
    _, api = serve(steps=4)
    adapter = adapter_of()
    handle = adapter.start(job_of(), uploaded(adapter, files), FP)
    assert handle.reattached is False
    job = api.jobs[handle.job_id].body
    assert job["metadata"] == {FINGERPRINT_KEY: FP}
    assert api.create_bodies[0]["method"] == {"type": "supervised", "supervised": {
        "hyperparameters": {"n_epochs": 3, "batch_size": 8}}}
    status, states, progress = poll(adapter, handle.job_id)
    assert states == ["validating_files", "queued", "running", "running", "running", "running", "succeeded"]
    assert progress == [None, None, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert status.state is JobState.succeeded
    model = f"ft:{BASE}:{openai_api.ORGANIZATION}::{handle.job_id[-8:]}"
    assert status.model_id == job["fine_tuned_model"] == model
    assert status.metrics == METRICS
    assert (status.total_steps, status.trained_tokens, status.error) == (4, 4936, None)
    assert [e.message for e in status.events] == [
        f"Created fine-tuning job: {handle.job_id}", f"Validating training file: {job['training_file']}",
        "Files validated, moving job to queued state", "Fine-tuning job started",
        f"New fine-tuned model created: {model}", "The job has successfully completed",
        f"checkpoint at step 4: {model}:ckpt-step-4"]
    again = adapter.status(handle.job_id)  # cumulative and stable: the same events, ids and metrics
    assert [(e.event_id, e.message) for e in again.events] == [(e.event_id, e.message) for e in status.events]
    assert again.metrics == METRICS


def test_a_fresh_adapter_reads_the_whole_history_across_event_pages(serve, files):
    serve(steps=6)
    adapter = adapter_of()
    adapter.events_page = 4  # 12 events: the first poll after success reads 2 new pages, a fresh adapter 3
    job_id = adapter.start(job_of(), uploaded(adapter, files), FP).job_id
    status, _, _ = poll(adapter, job_id)
    fresh = adapter_of()
    fresh.events_page = 4
    again = fresh.status(job_id)
    assert sorted(again.metrics) == [1, 2, 3, 4, 5, 6] and again.metrics[6]["val_loss"] == 0.55
    assert again.metrics == status.metrics
    assert [e.event_id for e in again.events] == [e.event_id for e in status.events]
    assert len(again.events) == 7


def test_a_job_that_fails_at_openai_reports_failed_with_its_error(serve, files):
    _, api = serve(fail=True)
    adapter = adapter_of()
    job_id = adapter.start(job_of(), uploaded(adapter, files), FP).job_id
    status, states, _ = poll(adapter, job_id)
    assert states == ["validating_files", "failed"]
    assert status.state is JobState.failed and status.model_id is None
    assert status.error == (f"{openai_api.FAILURE[1]} (invalid_training_file)")
    # a failed job is never reattached: the next launch of the config creates a new one
    again = adapter.start(job_of(), uploaded(adapter, files), FP)
    assert again.reattached is False and again.job_id != job_id and len(api.jobs) == 2


def test_rate_limits_and_server_errors_on_reads_are_retried_by_the_sdk(serve, files):
    server, api = serve()
    adapter = adapter_of()
    job_id = adapter.start(job_of(), uploaded(adapter, files), FP).job_id
    server.faults.arm("retrieve_job=429x1,list_events=503x1,list_jobs=500x2")
    assert adapter.find_job(job_of(), FP) == job_id
    status = adapter.status(job_id)
    assert (status.state, status.provider_state) == (JobState.queued, "validating_files")
    assert server.faults.injected == {"retrieve_job": 1, "list_events": 1, "list_jobs": 2}
    adapter.read_retries = 0
    server.faults.arm("retrieve_job=503x1")
    with pytest.raises(ProviderUnreachable):
        adapter.status(job_id)
    assert adapter.status(job_id).provider_state == "queued"


def test_a_dropped_connection_while_polling_is_unreachable_then_polling_resumes(serve, files):
    server, api = serve()
    adapter = adapter_of()
    job_id = adapter.start(job_of(), uploaded(adapter, files), FP).job_id
    assert adapter.status(job_id).provider_state == "validating_files"
    server.stop()
    adapter.read_retries = 1
    with pytest.raises(ProviderUnreachable):
        adapter.status(job_id)
    server.start()
    status, states, _ = poll(adapter, job_id)
    assert status.state is JobState.succeeded and states[0] == "queued"
    assert status.metrics == METRICS


def test_a_create_that_times_out_after_the_job_was_made_reattaches_to_it(serve, files):
    _, api = serve(create_delay_s=1.5)
    adapter = adapter_of()
    adapter.create_timeout = 0.3  # the server makes the job, then answers 1.5 s later: the answer is lost
    upload = uploaded(adapter, files)
    handle = adapter.start(job_of(), upload, FP)
    assert handle.reattached is True
    assert list(api.jobs) == [handle.job_id] and len(api.create_bodies) == 1  # one POST, one job
    with pytest.raises(CreateOutcomeUnknown):  # create alone says so (and the SDK does not re-POST)
        adapter.create(adapter.translate(job_of(), upload), job_of(), "fp-other")
    assert len(api.create_bodies) == 2


def test_a_create_answered_503_is_looked_up_then_made_once(serve, files):
    server, api = serve()
    adapter = adapter_of()
    upload = uploaded(adapter, files)
    server.faults.arm("create_job=503x1")
    handle = adapter.start(job_of(), upload, FP)
    assert handle.reattached is False and list(api.jobs) == [handle.job_id]
    assert server.faults.injected == {"create_job": 1}


def test_a_rate_limited_create_is_retried_and_makes_one_job(serve, files):
    server, api = serve()
    adapter = adapter_of()
    upload = uploaded(adapter, files)
    server.faults.arm("create_job=429x2")
    handle = adapter.start(job_of(), upload, FP)
    assert list(api.jobs) == [handle.job_id] and server.faults.injected == {"create_job": 2}


def test_a_second_start_of_the_same_config_reattaches(serve, files):
    _, api = serve()
    adapter = adapter_of()
    upload = uploaded(adapter, files)
    first = adapter.start(job_of(), upload, FP)
    second = adapter_of().start(job_of(), upload, FP)
    assert (second.job_id, second.reattached) == (first.job_id, True)
    assert len(api.jobs) == 1
    other = adapter.start(job_of(), upload, "fp-another-config")
    assert other.reattached is False and len(api.jobs) == 2


def test_create_refused_with_403_says_openai_takes_no_more_jobs(serve, files):
    server, api = serve()
    adapter = adapter_of()
    upload = uploaded(adapter, files)
    server.faults.arm("create_job=403x3")
    with pytest.raises(ThinkerError) as caught:
        adapter.start(job_of(), upload, FP)
    assert caught.value.what == ("provider no longer accepts fine-tuning jobs for this organisation (OpenAI "
                                 "answered 403: injected fault 403)")
    assert caught.value.fix.startswith("use provider=together or provider=fireworks")
    assert caught.value.stage == "train"
    assert api.jobs == {} and server.faults.injected == {"create_job": 1}  # refused, not retried


def test_a_model_openai_does_not_fine_tune_is_refused_by_the_server(serve, files):
    serve()
    adapter = adapter_of()
    payload = {**adapter.translate(job_of(), uploaded(adapter, files)), "model": "gpt-nope"}
    with pytest.raises(ThinkerError) as caught:
        adapter.create(payload, job_of(), FP)
    assert caught.value.what == ("OpenAI refused creating the fine-tuning job (400: Model gpt-nope is not "
                                 "available for fine-tuning or does not exist.)")


def test_cancel(serve, files):
    _, api = serve()
    adapter = adapter_of()
    job_id = adapter.start(job_of(), uploaded(adapter, files), FP).job_id
    adapter.status(job_id)
    adapter.cancel(job_id)
    assert api.jobs[job_id].body["status"] == "cancelled"
    status = adapter.status(job_id)
    assert (status.state, status.events[-1].message) == (JobState.cancelled, "Fine-tuning job cancelled")
    assert adapter.find_job(job_of(), FP) is None  # cancelled jobs are not reattached
    with pytest.raises(ThinkerError) as caught:
        adapter.cancel(job_id)
    assert "has already cancelled" in caught.value.what


def test_chat_calls_the_fine_tuned_model_once_per_prompt(serve, files):
    _, api = serve(steps=1)
    adapter = adapter_of()
    status, _, _ = poll(adapter, adapter.start(job_of(), uploaded(adapter, files), FP).job_id)
    prompts = ["What is 2+2?", "Name a colour."]
    assert adapter.chat(status.model_id, prompts, GREEDY, seed=3) == [openai_api.ANSWER] * 2
    assert api.chat_requests == [(status.model_id, [{"role": "user", "content": p}]) for p in prompts]
    body = api.chat_bodies[0]
    assert (body["temperature"], body["max_completion_tokens"], body["seed"], "top_p" in body) == (0.0, 32, 3, False)
    adapter.chat(status.model_id, prompts[:1], {**GREEDY, "do_sample": True}, seed=3)
    assert (api.chat_bodies[-1]["temperature"], api.chat_bodies[-1]["top_p"]) == (0.7, 0.9)


def test_a_wrong_key_is_a_thinker_error_without_the_key(serve, monkeypatch, files):
    serve()
    wrong = "sk-wrong-key-000011112222abcd"
    monkeypatch.setenv("OPENAI_API_KEY", wrong)
    adapter = adapter_of()
    for call in (lambda: adapter.status("ftjob-1"), lambda: adapter.find_job(job_of(), FP),
                 lambda: adapter.upload(files[0], "train"),
                 lambda: adapter.create({"model": BASE, "training_file": "file-1"}, job_of(), FP)):
        with pytest.raises(ThinkerError) as caught:
            call()
        text = str(caught.value)
        assert "OpenAI refused the API key (401)" in text and "OPENAI_API_KEY" in text
        assert wrong not in text and "sk-" not in text and "abcd" not in text
        assert caught.value.__cause__ is None  # OpenAI's own 401 text (part of the key) is not chained


def test_a_missing_key_is_named(serve, monkeypatch):
    serve()
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(ThinkerError) as caught:
        adapter_of().status("ftjob-1")
    assert caught.value.what == "OPENAI_API_KEY is not set"
