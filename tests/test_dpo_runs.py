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
