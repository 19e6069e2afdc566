"""objective=dpo on backend=tinker against `thinker tinker-serve`, through the real tinker SDK over loopback HTTP
(forward_backward_custom, a base-model SamplingClient for the reference): the first step's loss is ln 2, the
loss curve is backend=local's, and the whole pipeline runs (docs/objectives.md, "Preference tuning")."""

from __future__ import annotations

import json
import math

import pytest
from conftest import clean_env, compose, launch

KEY = "tml-SECRETlocalkey0123456789"
PAIRS = ["objective=dpo", "data=preference", "data.max_examples=24", "trainer.max_seq_length=768",
         "trainer.batch_size=2", "trainer.grad_accum=2", "optimizer.lr=5e-3", "logger=none",
         "trainer.optimizations=[]"]


@pytest.fixture(scope="module")
def server(private_models_dir, tmp_path_factory):
    from thinker.tinker_serve.server import start_in_thread

    with start_in_thread("tiny-qwen", tmp_path_factory.mktemp("tinker-state")) as srv:
        yield srv


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


def train_on_tinker(server, tmp_path, monkeypatch, *overrides: str):
    from thinker.backends.tinker.preference import TinkerDpoTrainer

    monkeypatch.setenv("TINKER_API_KEY", KEY)
    cfg = compose(["backend=tinker", *PAIRS, *overrides])
    recorder = Recorder()
    report = TinkerDpoTrainer(cfg, tmp_path / "tinker", recorder, dict(cfg.backend.options), server.base_url).train()
    return report, recorder


def test_the_first_step_loss_is_ln2_and_every_dpo_metric_is_logged(server, tmp_path, monkeypatch):
    """The policy starts as the reference (the LoRA adapter is zero), so the first step's loss is ln 2."""
    report, recorder = train_on_tinker(server, tmp_path, monkeypatch, "trainer.max_steps=2", "trainer.evaluations=1")
    (step, first), _ = recorder.history("loss")
    assert step == 1 and first == pytest.approx(math.log(2), abs=1e-4)
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margin", "rewards/accuracy", "train_loss", "lr"):
        assert [s for s, _ in recorder.history(key)] == [1, 2], key
    assert recorder.history("rewards/margin")[0][1] == pytest.approx(0.0, abs=1e-4)
    assert [s for s, _ in recorder.history("val_rewards/accuracy")] == [2]
    assert report.weights.uri.endswith("/sampler_weights/final") and "val_loss" in report.metrics
    assert report.metrics["train_rewards_accuracy"] == recorder.history("rewards/accuracy")[-1][1]


@pytest.mark.slow  # trains on both backends (about a minute on 2 cores)
def test_tinker_and_local_give_the_same_dpo_loss_curve(server, tmp_path, monkeypatch):
    """Same pairs, seed, LoRA rank/alpha, schedule and reference (the starting weights): 5 steps within 2e-3."""
    from thinker.backends.local.backend import train  # objective=dpo: thinker.backends.local.dpo.train_dpo

    common = ["trainer.max_steps=5", "trainer.evaluations=1"]
    local = train(compose(["method=lora", "method.alpha=32", *PAIRS, *common]), tmp_path / "local")
    theirs = [(int(h["step"]), h["loss"]) for h in local.extra["dpo_history"]]
    _, recorder = train_on_tinker(server, tmp_path, monkeypatch, *common)
    ours = recorder.history("loss")
    assert [s for s, _ in ours] == [s for s, _ in theirs] == [1, 2, 3, 4, 5]
    for (step, a), (_, b) in zip(ours, theirs, strict=True):
        assert a == pytest.approx(b, abs=2e-3), f"step {step}: tinker {a} vs local {b}"
    assert theirs[-1][1] < theirs[0][1] - 0.01, "the curve must move for the comparison to mean much"


@pytest.mark.slow  # trains on both backends (about a minute on 2 cores)
def test_resume_continues_from_the_saved_state_with_the_same_losses(server, tmp_path, monkeypatch):
    """resume=true from a saved state (weights and Adam moments; the reference is the base again) gives the
    steps after it the losses the uninterrupted run had."""
    from thinker.backends.tinker.preference import TinkerDpoTrainer

    steps = ["trainer.max_steps=4", "trainer.evaluations=2"]
    _, whole = train_on_tinker(server, tmp_path, monkeypatch, *steps)
    ledger = tmp_path / "tinker" / "checkpoints.jsonl"
    saved = ledger.read_text().splitlines()
    assert [json.loads(line)["step"] for line in saved] == [2, 4, 4]
    ledger.write_text(saved[0] + "\n")  # as if the run had stopped after its step-2 state
    cfg = compose(["backend=tinker", *PAIRS, *steps, "resume=true"])
    recorder = Recorder()
    TinkerDpoTrainer(cfg, tmp_path / "tinker", recorder, dict(cfg.backend.options), server.base_url).train()
    resumed = recorder.history("loss")
    assert [s for s, _ in resumed] == [3, 4]
    for (step, a), (_, b) in zip(resumed, whole.history("loss")[2:], strict=True):
        assert a == pytest.approx(b, abs=1e-4), f"step {step}: resumed {a} vs uninterrupted {b}"


@pytest.mark.slow
def test_launch_objective_dpo_on_tinker_runs_the_whole_pipeline(server, private_models_dir, tmp_path):
    """validate -> train -> eval -> record -> registry, as users launch it, with per-step DPO metrics in MLflow."""
    import mlflow

    out = launch(["backend=tinker", "objective=dpo", "data=preference", "data.max_examples=24",
                  "trainer.max_seq_length=768", "trainer.max_steps=4", "trainer.evaluations=2",
                  "output.register_min_steps=1", "evaluation.max_samples=2", "evaluation.decoding.max_new_tokens=16",
                  "validation.pytest.enabled=false", "hydra.run.dir=run"], cwd=tmp_path,
                 env=clean_env(TINKER_BASE_URL=server.base_url, TINKER_API_KEY=KEY,
                               THINKER_MODELS_DIR=str(private_models_dir)))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "run_record.json").read_text())
    stages = record["stages"]
    assert [stages[s]["status"] for s in ("validate", "train", "eval")] == ["passed", "passed", "passed"]
    assert stages["train"]["weights"].endswith("/sampler_weights/final")
    # the held-out pairs scored through the service's log-probs, base before -> trained after
    assert 0.0 <= record["metrics"]["pref_accuracy"] <= 1.0 and "pref_margin" in record["metrics"]
    assert stages["eval"]["metrics_before"]["pref_pairs"] == record["metrics"]["pref_pairs"] > 0
    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("thinker").experiment_id])
    for key in ("loss", "rewards/chosen", "rewards/rejected", "rewards/margin", "rewards/accuracy"):
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == [1, 2, 3, 4], key
    registry = json.loads((private_models_dir / "registry.json").read_text())
    assert [e for e in registry["models"] if e.get("weights_uri") == stages["train"]["weights"]]
    assert KEY not in out.stdout + out.stderr
