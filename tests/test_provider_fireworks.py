"""provider=fireworks: the adapter through the real `fireworks-ai` SDK against a loopback server that follows
Fireworks' published API (tests/provider_servers/fireworks_api.py): capabilities, validation, the create
payload, upload, job lifecycle, retries and reattachment, cancel, deploy + chat, and auth failures."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from functools import cache
from pathlib import Path

import pytest
from conftest import ROOT
from provider_servers import fireworks_api
from provider_servers.loopback import LoopbackServer

from thinker.errors import ThinkerError
from thinker.providers.adapter import (
    CreateOutcomeUnknown,
    JobState,
    ProviderUnreachable,
    UploadedFiles,
)

BASE_MODEL = "accounts/fireworks/models/qwen2p5-0p5b-instruct"
FP = "3f9a0c1b2d4e5f60718293a4b5c6d7e8f90112233445566778899aabbccddeef"
JOB_ID = "thinker-3f9a0c1b2d4e5f60"


@cache
def composed(*overrides: str):
    from thinker.launch.app import compose_config

    return compose_config(["backend=provider", "provider=fireworks", f"provider.base_model={BASE_MODEL}",
                           *overrides])


def job_of(*overrides: str):
    from thinker.config.job_configuration import job_configuration

    return job_configuration(composed(*overrides))


def make_adapter(*overrides: str):
    from thinker.providers import adapter_for

    adapter = adapter_for(composed(*overrides).provider)
    adapter.poll_interval = 0.01
    return adapter


def write_chat_jsonl(path: Path, n: int) -> Path:
    rows = [{"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": "CLAIM"}]}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def serve(monkeypatch):
    """serve(**create_app kwargs) -> the running server, with the SDK's environment pointed at it."""
    servers = []

    def start(**kwargs):
        server = LoopbackServer(fireworks_api.create_app(**kwargs)).start()
        servers.append(server)
        for name, value in fireworks_api.client_env(server.url).items():
            monkeypatch.setenv(name, value)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def uploaded(tmp_path):
    """upload(adapter) -> UploadedFiles of a 10-example train and a 3-example validation file."""

    def upload(adapter):
        train = adapter.upload(write_chat_jsonl(tmp_path / "train.jsonl", 10), "train")
        validation = adapter.upload(write_chat_jsonl(tmp_path / "validation.jsonl", 3), "validation")
        return UploadedFiles(train, validation)

    return upload


def run_to_end(adapter, job_id, polls=12):
    statuses = []
    for _ in range(polls):
        statuses.append(adapter.status(job_id))
        if statuses[-1].state.finished:
            break
    return statuses


# ---------------------------------------------------------------------- capabilities and config check


def test_capabilities_report_lora_only_with_fireworks_ranges_and_no_serverless_inference():
    caps = make_adapter().capabilities()
    assert caps.available and caps.provider == "fireworks"
    assert caps.supported_methods == ["lora"]
    assert caps.supported_schedulers == ["constant", "constant_with_warmup", "linear", "cosine"]
    ranges = {k: (r.min, r.max, r.integer) for k, r in caps.parameter_ranges.items()}
    assert ranges == {"trainer.epochs": (1, 10, True), "method.rank": (4, 128, True),
                      "trainer.max_seq_length": (512, 33000, True)}
    assert sorted(caps.custom_parameters) == ["is_turbo", "lr_decay_ratio", "region"]
    assert caps.custom_parameters["lr_decay_ratio"].max == 1.0
    assert sorted(caps.ignored_keys) == ["method.alpha", "method.dropout", "method.target_modules",
                                         "optimizer.max_grad_norm", "trainer.save_total_limit"]
    assert caps.serverless_inference == []
    assert (caps.min_examples, caps.max_file_bytes) == (3, 150_000_000)
    assert make_adapter().sdk_module() == "fireworks"
    assert caps.as_dict()["parameter_ranges"]["method.rank"] == {"min": 4, "max": 128, "integer": True}


def test_config_check_and_translate_import_no_sdk_and_nothing_heavy():
    script = textwrap.dedent(f"""
        import json, sys
        from thinker.launch.app import compose_config
        from thinker.config.job_configuration import job_configuration
        from thinker.providers import adapter_for
        from thinker.providers.adapter import UploadedFiles
        cfg = compose_config(["backend=provider", "provider=fireworks", "provider.base_model={BASE_MODEL}",
                              "optimizer.scheduler.warmup_ratio=0"])
        adapter = adapter_for(cfg.provider)
        adapter.capabilities()
        adapter.validate(job_configuration(cfg))
        adapter.translate(job_configuration(cfg), UploadedFiles("accounts/a/datasets/d"))
        heavy = {{"fireworks", "torch", "transformers", "mlflow", "httpx"}}
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)))
        """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_the_default_config_passes_with_only_the_warnings_fireworks_implies():
    findings = make_adapter().validate(job_of())
    assert [f for f in findings if f.error] == []
    assert {f.key: f.message for f in findings} == {
        "trainer.precision": "trainer.precision=fp32 is dropped: provider=fireworks trains in bf16",
        "trainer.evaluations": "trainer.evaluations=4 is dropped: Fireworks evaluates the validation dataset "
                               "at its own cadence",
    }


@pytest.mark.parametrize("overrides, key, fragment", [
    (("method=qlora",), "method", "provider=fireworks does not train method=qlora"),
    (("method=full",), "method", "provider=fireworks does not train method=full"),
    (("method.rank=256",), "method.rank", "method.rank=256 is outside what provider=fireworks accepts, "
                                          "integer [4, 128]"),
    (("trainer.epochs=15",), "trainer.epochs", "trainer.epochs=15 is outside what provider=fireworks accepts, "
                                               "integer [1, 10]"),
    (("method.rank=12",), "method.rank", "method.rank=12: Fireworks trains LoRA ranks that are powers of two"),
    (("optimizer.scheduler.type=polynomial",), "optimizer.scheduler.type",
     "provider=fireworks has no polynomial learning-rate schedule"),
    (("optimizer.scheduler.cycles=1.5",), "optimizer.scheduler.cycles",
     "optimizer.scheduler.cycles=1.5: Fireworks' cosine schedule anneals once from the peak (half a cycle)"),
    (("trainer.train_on_inputs=enabled",), "trainer.train_on_inputs", "Fireworks computes the loss on assistant"),
    (("trainer.max_steps=100",), "trainer.max_steps", "trainer.max_steps=100: Fireworks trains whole epochs"),
    (("provider.base_model=Qwen/Qwen2.5-0.5B-Instruct",), "provider.base_model",
     "provider.base_model=Qwen/Qwen2.5-0.5B-Instruct is not a Fireworks model name"),
    (("+provider.options.lr_decay_ratio=2",), "provider.options.lr_decay_ratio",
     "provider.options.lr_decay_ratio=2 is not a number in [0.0, 1.0]"),
    (("+provider.options.warmup=5",), "provider.options.warmup", "provider=fireworks has no parameter warmup"),
])
def test_validate_refuses_what_fireworks_cannot_train(overrides, key, fragment):
    errors = [f for f in make_adapter(*overrides).validate(job_of(*overrides)) if f.error]
    assert [f.key for f in errors] == [key]
    assert errors[0].message.startswith(fragment), errors[0].message
    assert errors[0].fix


def test_validate_drops_parameters_fireworks_has_no_setting_for_with_a_warning():
    overrides = ("method.dropout=0.1", "optimizer.max_grad_norm=0.5", "optimizer.scheduler.type=constant",
                 "optimizer.scheduler.min_lr_ratio=0.2", "+provider.options.is_turbo=true")
    findings = make_adapter(*overrides).validate(job_of(*overrides))
    assert [f for f in findings if f.error] == []
    warnings = {f.key: f.message for f in findings}
    assert warnings["method.dropout"] == "method.dropout=0.1 is dropped: Fireworks' API has no LoRA dropout setting"
    assert warnings["optimizer.max_grad_norm"] == ("optimizer.max_grad_norm=0.5 is dropped: Fireworks clips "
                                                   "gradients itself (its API has no setting for it)")
    assert warnings["optimizer.scheduler.min_lr_ratio"] == ("optimizer.scheduler.min_lr_ratio=0.2 is dropped: a "
                                                            "constant schedule has no floor")


def test_validate_refuses_a_model_with_no_fireworks_id():
    from thinker.config.job_configuration import job_configuration

    cfg = composed("provider.base_model=null")
    errors = [f for f in make_adapter().validate(job_configuration(cfg)) if f.error]
    assert [f.key for f in errors] == ["provider.base_model"]
    assert "provider.base_model=accounts/fireworks/models/" in errors[0].fix


# ---------------------------------------------------------------------- translate


def test_translate_maps_the_universal_job_onto_fireworks_fields():
    overrides = ("method.rank=16", "optimizer.lr=0.0002", "trainer.epochs=2", "trainer.batch_size=4",
                 "trainer.grad_accum=2", "trainer.max_seq_length=1024", "optimizer.weight_decay=0.0",
                 "optimizer.scheduler.warmup_ratio=0.1", "optimizer.scheduler.min_lr_ratio=0.1",
                 "+provider.options.is_turbo=true", "+provider.options.lr_decay_ratio=0.8")
    adapter = make_adapter(*overrides)
    adapter.examples["accounts/a/datasets/train"] = 100
    payload = adapter.translate(job_of(*overrides), UploadedFiles("accounts/a/datasets/train",
                                                                  "accounts/a/datasets/val"))
    assert payload == {
        "dataset": "accounts/a/datasets/train",
        "evaluation_dataset": "accounts/a/datasets/val",
        "base_model": BASE_MODEL,
        "epochs": 2,
        "learning_rate": 0.0002,
        "lora_rank": 16,
        "max_context_length": 1024,
        "batch_size_samples": 8,  # batch 4 x accumulation 2
        "optimizer_weight_decay": 0.0,
        "learning_rate_warmup_steps": 3,  # 0.1 x (ceil(100 / 8) x 2 epochs = 26 steps)
        "is_turbo": True,
        "extra_body": {"lrScheduler": {"cosine": {"minLrRatio": 0.1, "decayRatio": 0.8}}},
    }


@pytest.mark.parametrize("scheduler, expected", [
    ("linear", {"linear": {"minLrRatio": 0.0}}),
    ("constant", {"constant": {}}),
    ("constant_with_warmup", {"constant": {}}),
])
def test_translate_maps_each_supported_scheduler(scheduler, expected):
    overrides = (f"optimizer.scheduler.type={scheduler}", "optimizer.scheduler.warmup_ratio=0",
                 "provider.base_model=qwen2p5-1p5b-instruct")
    payload = make_adapter(*overrides).translate(job_of(*overrides), UploadedFiles("accounts/a/datasets/t"))
    assert payload["extra_body"] == {"lrScheduler": expected}
    assert payload["base_model"] == "accounts/fireworks/models/qwen2p5-1p5b-instruct"
    assert payload["eval_auto_carveout"] is False and "evaluation_dataset" not in payload
    assert payload["learning_rate_warmup_steps"] == 0


# ---------------------------------------------------------------------- upload, create, status


def test_upload_makes_one_ready_dataset_per_file_content(serve, tmp_path):
    server = serve()
    api = server.app.state.api
    adapter = make_adapter()
    path = write_chat_jsonl(tmp_path / "train.jsonl", 5)
    first = adapter.upload(path, "train")
    again = adapter.upload(path, "train")  # a re-launch uploads the same file: same dataset, no second one
    assert first == again and first.startswith("accounts/thinker-test/datasets/thinker-train-")
    assert first.endswith("-5ex")  # its example count travels in its id (translate() needs it for warmup)
    assert list(api.files) == [first.rsplit("/", 1)[-1]]
    entry = api.files[first.rsplit("/", 1)[-1]]
    assert entry["content"] == path.read_bytes() and entry["filename"] == "train.jsonl"
    assert entry["dataset"]["state"] == "READY" and entry["dataset"]["exampleCount"] == "5"
    assert adapter.examples[first] == 5
    val = adapter.upload(write_chat_jsonl(tmp_path / "validation.jsonl", 3), "validation")
    assert "/thinker-val-" in val and len(api.files) == 2


def test_a_job_is_created_polled_to_success_with_events_and_step_metrics(serve, uploaded):
    server = serve(steps=3)
    api = server.app.state.api
    adapter = make_adapter()
    files = uploaded(adapter)
    handle = adapter.start(job_of(), files, FP)
    assert (handle.job_id, handle.reattached) == (JOB_ID, False)
    body = api.created_bodies[0]
    assert body["dataset"] == files.training_file_id and body["evaluationDataset"] == files.validation_file_id
    assert body["displayName"] == f"thinker {FP[:32]}" and body["loraRank"] == 8
    assert body["lrScheduler"] == {"cosine": {"minLrRatio": 0.0}}

    statuses = run_to_end(adapter, handle.job_id)
    assert [s.provider_state for s in statuses] == ["JOB_STATE_VALIDATING"] + ["JOB_STATE_RUNNING"] * 3 + [
        "JOB_STATE_COMPLETED"]
    assert [s.state for s in statuses] == [JobState.queued] + [JobState.running] * 3 + [JobState.succeeded]
    assert [s.progress for s in statuses] == [None, 0.33, 0.66, 1.0, 1.0]
    final = statuses[-1]
    assert final.model_id == f"accounts/thinker-test/models/{JOB_ID}" and final.error is None
    assert [s.model_id for s in statuses[:-1]] == [None] * 4
    assert final.metrics == {
        1: {"train_loss": 1.75, "val_loss": 2.25, "learning_rate": 0.003, "epoch": 0.0},
        2: {"train_loss": 1.5, "val_loss": 2.0, "learning_rate": 0.003, "epoch": 1.0},
        3: {"train_loss": 1.25, "val_loss": 1.75, "learning_rate": 0.003, "epoch": 2.0},
    }
    assert [e.event_id for e in final.events] == [
        f"{JOB_ID}:created", f"{JOB_ID}:state:JOB_STATE_VALIDATING", f"{JOB_ID}:state:JOB_STATE_RUNNING",
        f"{JOB_ID}:epoch:0", f"{JOB_ID}:epoch:1", f"{JOB_ID}:epoch:2", f"{JOB_ID}:state:JOB_STATE_COMPLETED"]
    # cumulative: every event of an earlier poll is still there, with the same id and time
    earlier = {e.event_id: e.created_at for e in statuses[2].events}
    assert {e.event_id: e.created_at for e in final.events if e.event_id in earlier} == earlier


def test_a_job_that_fails_at_fireworks_reports_failed_with_its_reason(serve, uploaded):
    server = serve(steps=3, fail=True)
    adapter = make_adapter()
    handle = adapter.start(job_of(), uploaded(adapter), FP)
    final = run_to_end(adapter, handle.job_id)[-1]
    assert (final.state, final.provider_state) == (JobState.failed, "JOB_STATE_FAILED")
    assert final.error == fireworks_api.FAILURE and final.model_id is None
    assert final.events[-1].message == fireworks_api.FAILURE and final.events[-1].level == "error"
    assert server.app.state.api.jobs[JOB_ID]["state"] == "JOB_STATE_FAILED"


def test_a_relaunch_after_a_failed_job_creates_the_next_job_id(serve, uploaded):
    server = serve(steps=2, fail=True)
    adapter = make_adapter()
    files = uploaded(adapter)
    first = adapter.start(job_of(), files, FP)
    run_to_end(adapter, first.job_id)
    again = make_adapter().start(job_of(), files, FP)  # a failed job is not reattached to
    assert (again.job_id, again.reattached) == (f"{JOB_ID}-2", False)
    assert sorted(server.app.state.api.jobs) == [JOB_ID, f"{JOB_ID}-2"]


def test_reads_are_retried_by_the_sdk_on_429_and_5xx(serve, uploaded):
    server = serve(steps=3)
    adapter = make_adapter()
    handle = adapter.start(job_of(), uploaded(adapter), FP)
    server.faults.arm("get_job=503x2")
    assert adapter.status(handle.job_id).provider_state == "JOB_STATE_VALIDATING"
    server.faults.arm("get_job=429x2")
    assert adapter.status(handle.job_id).provider_state == "JOB_STATE_RUNNING"
    assert server.faults.injected["get_job"] == 4 and server.faults.remaining("get_job") == 0
    server.faults.arm("get_job=502x3")  # one more than the SDK's 2 retries: the flow waits and polls again
    with pytest.raises(ProviderUnreachable):
        adapter.status(handle.job_id)
    assert adapter.status(handle.job_id).job_id == JOB_ID and len(server.app.state.api.jobs) == 1


def test_a_dropped_connection_while_polling_is_unreachable_then_polling_resumes(serve, uploaded):
    server = serve(steps=2)
    adapter = make_adapter()
    handle = adapter.start(job_of(), uploaded(adapter), FP)
    assert adapter.status(handle.job_id).state == JobState.queued
    server.stop()
    with pytest.raises(ProviderUnreachable):
        adapter.status(handle.job_id)
    server.start()  # same port, same state
    final = run_to_end(adapter, handle.job_id)[-1]
    assert final.state == JobState.succeeded and final.model_id == f"accounts/thinker-test/models/{JOB_ID}"
    assert sorted(final.metrics) == [1, 2]


def test_a_create_that_times_out_after_the_job_was_made_reattaches_to_that_job(serve, uploaded):
    server = serve(steps=2, create_delay_s=1.5)
    api = server.app.state.api
    adapter = make_adapter()
    files = uploaded(adapter)
    adapter.request_timeout = 0.5  # shorter than the server's delay: the create's answer is lost
    handle = adapter.start(job_of(), files, FP)
    assert (handle.job_id, handle.reattached) == (JOB_ID, True)
    assert list(api.jobs) == [JOB_ID] and len(api.created_bodies) == 1


def test_a_second_start_of_the_same_config_reattaches_and_creates_nothing(serve, uploaded):
    server = serve(steps=2)
    adapter = make_adapter()
    files = uploaded(adapter)
    first = adapter.start(job_of(), files, FP)
    second = make_adapter().start(job_of(), files, FP)  # a later launch: a new adapter, the same config
    assert (first.reattached, second.reattached) == (False, True) and second.job_id == first.job_id
    assert len(server.app.state.api.created_bodies) == 1


def test_a_create_answered_409_is_looked_up_again_not_duplicated(serve, uploaded):
    server = serve(steps=2)
    adapter, other = make_adapter(), make_adapter()
    files = uploaded(adapter)
    assert adapter.find_job(job_of(), FP) is None
    other.start(job_of(), files, FP)  # another launch of the same config got there first
    payload = adapter.translate(job_of(), files)
    with pytest.raises(CreateOutcomeUnknown):
        adapter.create(payload, job_of(), FP)
    assert adapter.start(job_of(), files, FP).reattached is True
    assert len(server.app.state.api.jobs) == 1


def test_create_is_never_re_sent_on_5xx_but_is_on_429(serve, uploaded):
    server = serve(steps=2)
    api = server.app.state.api
    adapter = make_adapter()
    files = uploaded(adapter)
    payload = adapter.translate(job_of(), files)
    server.faults.arm("create_job=503x1")
    with pytest.raises(CreateOutcomeUnknown):
        adapter.create(payload, job_of(), FP)
    assert server.faults.injected["create_job"] == 1 and api.jobs == {}  # the SDK did not POST again
    server.faults.arm("create_job=429x1")  # a 429 made nothing: sent again after Retry-After
    handle = adapter.start(job_of(), files, FP)
    assert (handle.job_id, handle.reattached) == (JOB_ID, False)
    assert server.faults.injected["create_job"] == 2 and list(api.jobs) == [JOB_ID]


def test_cancel_stops_the_job(serve, uploaded):
    server = serve(steps=5)
    adapter = make_adapter()
    handle = adapter.start(job_of(), uploaded(adapter), FP)
    adapter.status(handle.job_id)
    adapter.cancel(handle.job_id)
    status = adapter.status(handle.job_id)
    assert (status.state, status.provider_state) == (JobState.cancelled, "JOB_STATE_CANCELLED")
    assert server.app.state.api.jobs[JOB_ID]["state"] == "JOB_STATE_CANCELLED"


def test_the_fine_tuned_model_is_deployed_chatted_with_and_undeployed(serve, uploaded):
    server = serve(steps=1)
    api = server.app.state.api
    adapter = make_adapter()
    handle = adapter.start(job_of(), uploaded(adapter), FP)
    model = run_to_end(adapter, handle.job_id)[-1].model_id
    with pytest.raises(ThinkerError, match="not deployed") as refused:  # a LoRA is served only when deployed
        adapter.chat(model, ["p"], {"do_sample": False, "max_new_tokens": 8}, seed=1)
    assert refused.value.stage == "eval"
    name = adapter.deploy(model)
    deployment = f"accounts/thinker-test/deployments/{JOB_ID}"
    assert name == f"{model}#{deployment}"
    assert api.deployments[JOB_ID]["baseModel"] == model and api.deployments[JOB_ID]["state"] == "READY"
    answers = adapter.chat(name, ["first prompt", "second prompt"],
                           {"do_sample": False, "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 32}, seed=7)
    assert answers == [fireworks_api.CANNED_ANSWER] * 2
    assert api.chat_requests[1:] == [(name, [{"role": "user", "content": "first prompt"}]),
                                     (name, [{"role": "user", "content": "second prompt"}])]
    params = api.chat_params[-1]
    assert (params["temperature"], params["max_tokens"], params["seed"], "top_p" in params) == (0.0, 32, 7, False)
    adapter.chat(name, ["p"], {"do_sample": True, "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 4}, seed=7)
    assert (api.chat_params[-1]["temperature"], api.chat_params[-1]["top_p"]) == (0.7, 0.9)
    adapter.undeploy(name)
    assert api.deployments == {}


def test_a_wrong_key_is_a_thinker_error_that_never_shows_the_key(serve, uploaded, monkeypatch, tmp_path):
    serve(steps=2)
    secret = "fw-wrong-secret-7d1e0c"
    monkeypatch.setenv("FIREWORKS_API_KEY", secret)
    adapter = make_adapter()
    with pytest.raises(ThinkerError) as raised:
        adapter.upload(write_chat_jsonl(tmp_path / "t.jsonl", 3), "train")
    with pytest.raises(ThinkerError) as polled:
        adapter.status(JOB_ID)
    for error in (raised.value, polled.value):
        assert "(401)" in error.line() and "FIREWORKS_API_KEY" in error.line()
        assert secret not in error.line() and secret not in repr(error.__context__)
        assert error.stage == "train"


def test_a_missing_account_id_is_named(serve, monkeypatch):
    serve()
    monkeypatch.delenv("FIREWORKS_ACCOUNT_ID")
    with pytest.raises(ThinkerError, match="FIREWORKS_ACCOUNT_ID is not set"):
        make_adapter().status(JOB_ID)


def test_the_server_lists_jobs_in_pages_and_filters_them_as_the_sdk_asks(serve, uploaded):
    from fireworks import Fireworks

    server = serve(steps=2, fail=True)
    adapter = make_adapter()
    files = uploaded(adapter)
    first = adapter.start(job_of(), files, FP)
    run_to_end(adapter, first.job_id)
    make_adapter().start(job_of(), files, FP)
    env = fireworks_api.client_env(server.url)
    client = Fireworks(api_key=env["FIREWORKS_API_KEY"], account_id=env["FIREWORKS_ACCOUNT_ID"], base_url=server.url)
    names = [j.name for j in client.supervised_fine_tuning_jobs.list(page_size=1)]  # auto-pages
    assert names == [f"accounts/thinker-test/supervisedFineTuningJobs/{i}" for i in (JOB_ID, f"{JOB_ID}-2")]
    failed = client.supervised_fine_tuning_jobs.list(filter='state="JOB_STATE_FAILED"')
    assert [j.name.rsplit("/", 1)[-1] for j in failed] == [JOB_ID]
