"""objective=dpo for real on backend=local, the whole pipeline (validate -> train -> eval -> record -> registry)
with LoRA and with QLoRA on the shipped preference pairs (docs/objectives.md, "Preference tuning")."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import clean_env, launch

pytestmark = pytest.mark.slow

STEPS = 6
DPO = ["experiment=claims_dpo", f"trainer.max_steps={STEPS}", "trainer.evaluations=1", "output.register_min_steps=1",
       "evaluation.max_samples=6", "hydra.run.dir=run"]
REWARDS = ["loss", "rewards/chosen", "rewards/rejected", "rewards/margin", "rewards/accuracy"]


@pytest.fixture(scope="module")
def models_dir(private_models_dir):
    return private_models_dir


def step_metrics(cwd: Path) -> dict[str, list[tuple[int, float]]]:
    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("claims_dpo").experiment_id])
    return {k: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, k))
            for k in [*REWARDS, "pref_accuracy", "base_pref_accuracy"]}


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_dpo_runs_the_whole_pipeline_on_the_local_backend(models_dir, tmp_path, method):
    out = launch([*DPO, f"method={method}"], cwd=tmp_path, env=clean_env(THINKER_MODELS_DIR=str(models_dir)),
                 timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "run_record.json").read_text())
    assert [record["stages"][s]["status"] for s in ("validate", "train", "eval")] == ["passed"] * 3
    train = record["stages"]["train"]
    assert train["method"] == method and record["metrics"]["optimizer_steps"] == STEPS
    assert train["registered_as"]  # in the model registry, with its lineage
    weights = json.loads((tmp_path / "run" / "weights" / "metadata.json").read_text())
    assert weights["objective"] == "dpo" and weights["registered_as"] == train["registered_as"]

    evaluation = record["stages"]["eval"]
    assert {"pref_accuracy", "pref_margin", "pref_reward_accuracy"} <= set(evaluation["metrics"])
    assert set(evaluation["metrics_before"]) >= {"pref_accuracy", "pref_margin"}
    assert evaluation["metrics"]["pref_pairs"] == 6.0 and 0.0 <= evaluation["metrics"]["pref_accuracy"] <= 1.0
    assert "c1_exact_match_rate" not in record["metrics"]

    history = step_metrics(tmp_path)
    for key in REWARDS:
        assert [s for s, _ in history[key]] == list(range(1, STEPS + 1)), key
    # the first step starts at the reference: the adapters are zero, the loss ln 2, the rewards 0
    assert history["loss"][0][1] == pytest.approx(math.log(2), abs=1e-4)
    assert history["rewards/margin"][0][1] == pytest.approx(0.0, abs=1e-4)
    assert history["loss"][-1][1] < math.log(2)  # and the policy moved towards the chosen completions
    assert history["pref_accuracy"] and history["base_pref_accuracy"]


# ---------------------------------------------------------------- in process: resume, accumulation, full

IN_PROCESS = ["experiment=claims_dpo", "logger=none", "callbacks=none", "data.max_examples=24",
              "trainer.max_seq_length=768", "validation.pytest.enabled=false"]


def run_dpo(run_dir: Path, overrides: list[str], callbacks: tuple = ()):
    from conftest import compose

    from thinker.backends.local.backend import train

    cfg = compose([*IN_PROCESS, f"output.dir={run_dir}", *overrides])
    return train(cfg, run_dir, None, callbacks=callbacks)


def adapter_weights(report) -> dict:
    return {n: p.detach().clone() for n, p in report.objects["model"].named_parameters() if p.requires_grad}


def test_an_interrupted_dpo_run_resumes_to_the_same_weights(private_models_dir, tmp_path):
    import os
    import signal

    import lightning.pytorch as pl
    import torch

    from thinker.errors import ExitCode, ThinkerError

    # 21 train pairs, batch 2 x grad_accum 2: 6 steps an epoch; 9 steps cross into epoch 1; the signal after
    # step 7 stops the run at the end of step 8 (GracefulStop checks after Lightning's own callbacks)
    steps = ["trainer.max_steps=9", "trainer.evaluations=3", "trainer.batch_size=2", "trainer.grad_accum=2"]
    straight = run_dpo(tmp_path / "straight", steps)

    class StopAt(pl.Callback):
        sent = False

        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 7 and not self.sent:
                self.sent = True
                os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(ThinkerError) as info:
        run_dpo(tmp_path / "interrupted", steps, callbacks=(StopAt(),))
    assert info.value.exit_code == ExitCode.INTERRUPTED
    resumed = run_dpo(tmp_path / "interrupted", [*steps, "resume=true"])
    assert resumed.metrics["optimizer_steps"] == straight.metrics["optimizer_steps"] == 9
    assert resumed.metrics["train_loss"] == pytest.approx(straight.metrics["train_loss"], rel=1e-4)
    ours, theirs = adapter_weights(resumed), adapter_weights(straight)
    assert all(torch.allclose(ours[n], theirs[n], atol=1e-6) for n in ours)


def test_grad_accumulation_trains_the_same_step_as_one_batch(private_models_dir, tmp_path):
    # plain SGD: the step is lr x the gradient (Adam's first step, g / (|g| + eps), would magnify float noise
    # in near-zero gradients); LoRA's B starts at zero, so B after the step is the scaled gradient itself
    one = ["trainer.max_steps=1", "trainer.evaluations=0", "data.shuffle=false", "optimizer=sgd",
           "optimizer.lr=1.0", "optimizer.weight_decay=0", "optimizer.max_grad_norm=0",
           "optimizer.scheduler.type=constant", "optimizer.scheduler.warmup_ratio=0"]
    whole = run_dpo(tmp_path / "whole", [*one, "trainer.batch_size=4", "trainer.grad_accum=1"])
    split = run_dpo(tmp_path / "split", [*one, "trainer.batch_size=1", "trainer.grad_accum=4"])
    assert whole.metrics["train_loss"] == pytest.approx(split.metrics["train_loss"], rel=1e-5)
    ours, theirs = adapter_weights(split), adapter_weights(whole)
    moved = [n for n in theirs if "lora_B" in n]
    assert moved and all(theirs[n].abs().max() > 0 for n in moved)
    for name in ours:
        assert (ours[name] - theirs[name]).abs().max() <= 1e-4 * theirs[name].abs().max() + 1e-9, name


def test_full_dpo_trains_against_a_frozen_copy(private_models_dir, tmp_path):
    report = run_dpo(tmp_path, ["method=full", "trainer.max_steps=2", "trainer.evaluations=1"])
    module = report.objects["module"]
    assert module.reference is not None and not any(p.requires_grad for p in module.reference.parameters())
    assert module.history[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert (tmp_path / "weights" / "model.safetensors").exists()
