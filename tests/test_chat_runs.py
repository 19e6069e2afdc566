"""Chat data (data=chat, {"messages": [...]}) trains for real on every backend: backend=local (LoRA end to end,
QLoRA in process), backend=tinker against `thinker tinker-serve`, backend=provider against a loopback server
(uploaded as the conversations themselves); chat runs are evaluated by held-out loss and a reply check."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT, clean_env, compose, launch

pytestmark = pytest.mark.slow

CHAT = ["data=chat", "validation.pytest.enabled=false", "evaluation.max_samples=2",
        "evaluation.decoding.max_new_tokens=12", "output.register_min_steps=1"]
EVAL_METRICS = {"heldout_loss", "perplexity", "replies", "reply_match_rate"}


@pytest.fixture(scope="module")
def models_dir(private_models_dir):
    return private_models_dir


def assert_chat_evaluated(record: dict) -> None:
    evaluation = record["stages"]["eval"]
    assert evaluation["status"] == "passed", evaluation
    assert EVAL_METRICS <= set(evaluation["metrics"]), evaluation["metrics"]
    assert evaluation["metrics"]["replies"] == 2.0 and 0.0 <= evaluation["metrics"]["reply_match_rate"] <= 1.0
    assert "c1_exact_match_rate" not in record["metrics"]  # claim metrics never describe chat data


def test_chat_data_trains_with_lora_on_the_local_backend_and_is_evaluated(models_dir, tmp_path):
    out = launch([*CHAT, "method=lora", "trainer.max_steps=3", "trainer.evaluations=1", "hydra.run.dir=run"],
                 cwd=tmp_path, env=clean_env(THINKER_MODELS_DIR=str(models_dir)))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "data: 18 train / 2 held-out examples" in out.stderr + out.stdout + (tmp_path / "run" / "launch.log").read_text()
    record = json.loads((tmp_path / "run" / "run_record.json").read_text())
    train = record["stages"]["train"]
    assert train["status"] == "passed" and train["method"] == "lora"
    assert record["metrics"]["optimizer_steps"] == 3
    assert_chat_evaluated(record)


def test_chat_data_trains_with_qlora_in_process(models_dir, tmp_path):
    import torch

    from thinker.backends.local.backend import train
    from thinker.data.tokenize import IGNORE_INDEX

    cfg = compose(["data=chat", "method=qlora", "trainer.max_steps=2", "trainer.batch_size=4", "logger=none",
                   f"output.dir={tmp_path}"])
    report = train(cfg, tmp_path, None)
    assert report.metrics["optimizer_steps"] == 2 and torch.isfinite(torch.tensor(report.metrics["val_loss"]))
    tokenizer = report.objects["tokenizer"]
    rows = report.objects["datamodule"].train_rows
    trained = [t for row in rows for t, label in zip(row.input_ids, row.labels, strict=True) if label != IGNORE_INDEX]
    # only assistant text and its end-of-turn marker are trained: no role header, no system or user turn
    text = tokenizer.decode(trained, skip_special_tokens=False)
    assert "<|im_start|>" not in text and "CLAIM[c1]:" in text and "<|im_end|>" in text
    assert "You extract claims" not in text


def test_chat_data_trains_on_tinker_serve(models_dir, tmp_path):
    from thinker.tinker_serve.server import start_in_thread

    key = "tml-SECRETlocalkey0123456789"
    with start_in_thread("tiny-qwen", tmp_path / "tinker-state") as server:
        out = launch([*CHAT, "backend=tinker", "trainer.max_steps=3", "trainer.evaluations=1", "hydra.run.dir=run"],
                     cwd=tmp_path, env=clean_env(TINKER_BASE_URL=server.base_url, TINKER_API_KEY=key,
                                                 THINKER_MODELS_DIR=str(models_dir)))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "run_record.json").read_text())
    train = record["stages"]["train"]
    assert train["status"] == "passed" and train["backend"] == "tinker" and train["weights"].startswith("tinker://")
    assert record["metrics"]["optimizer_steps"] == 3
    assert_chat_evaluated(record)


def test_chat_data_is_uploaded_as_conversations_to_a_provider(models_dir, tmp_path):
    import sys

    sys.path.insert(0, str(ROOT / "tests"))
    from provider_servers import together_api
    from provider_servers.loopback import LoopbackServer

    app = together_api.create_app(steps=2)
    with LoopbackServer(app) as server:
        env = clean_env(THINKER_MODELS_DIR=str(models_dir),
                        **{k: v for k, v in together_api.client_env(server.url).items() if not k.endswith("_BASE_URL")})
        url = next((v for k, v in together_api.client_env(server.url).items() if k.endswith("_BASE_URL")), server.url)
        out = launch([*CHAT, "backend=provider", "provider=together", "method=lora",
                      "provider.base_model=meta-llama/Meta-Llama-3.1-8B-Instruct-Reference", f"provider.base_url={url}",
                      "provider.poll_interval=0.05", "provider.max_wait=120", "evaluation.compare_base=false",
                      "hydra.run.dir=run"], cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    uploaded = [json.loads(line) for line in (tmp_path / "run" / "provider" / "train.jsonl").read_text().splitlines()]
    source = [json.loads(line) for line in (ROOT / "data" / "sample" / "chat.jsonl").read_text().splitlines()]
    assert len(uploaded) == 18 and all(conv in source for conv in uploaded)  # the conversations as they are
    assert any(conv["messages"][0]["role"] == "system" for conv in uploaded)  # never one user + assistant turn
    record = json.loads((tmp_path / "run" / "run_record.json").read_text())
    assert record["stages"]["train"]["status"] == "passed"
    # a provider reports no held-out loss to thinker: the reply check is what its eval stage measures
    evaluation = record["stages"]["eval"]
    assert evaluation["status"] == "passed" and evaluation["metrics"]["replies"] == 2.0
    # each held-out conversation went as its own messages, less its reply: no template rendered into a user turn
    sent = [messages for _model, messages in app.state.api.chat_requests]
    assert len(sent) == 2 and all(m[0]["role"] == "system" and m[-1]["role"] == "user" for m in sent), sent
    assert all(any(conv["messages"][:-1] == m for conv in source) for m in sent), sent
    assert "<|im_start|>" not in json.dumps(sent)
