"""objective=grpo for real: the mean reward rises on a small task the tiny model can learn in a couple of minutes
on the CPU (docs/objectives.md, "Reinforcement learning"). The task: short prompts, and a reward of the user's
own (a module on PYTHONPATH, named by its dotted path) for completions rich in vowels; the builtin tiny-qwen is
random, so its adapters include the output layer (Tinker's train_unembed) to move its next-token choices."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from conftest import clean_env, launch

pytestmark = pytest.mark.slow

REWARD_MODULE = '''
def vowel_share(prompt, completion, record):
    """The share of the completion's letters that are vowels."""
    letters = [c for c in completion.lower() if c.isalpha()]
    return sum(c in "aeiou" for c in letters) / max(1, len(letters))
'''
WORDS = "cell protein gene study patients risk cancer treatment effect dose".split()
# LoRA on attention, MLP and the output layer (what backend=tinker trains with backend.options.train_unembed=true)
ALL_WITH_UNEMBED = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,lm_head"
STEPS = 30
LEARN = ["objective=grpo", "data=jsonl", "objective.rewards=[rl_rewards.vowel_share]", "objective.group_size=8",
         "objective.max_new_tokens=16", "trainer=cpu", f"trainer.max_steps={STEPS}", "trainer.batch_size=4",
         "optimizer.lr=0.01", "method=lora", "method.alpha=32", f"method.target_modules='{ALL_WITH_UNEMBED}'",
         "validation.pytest.enabled=false", "evaluation.max_samples=2", "evaluation.decoding.max_new_tokens=8",
         "objective.table_every=10", "hydra.run.dir=run"]


@pytest.fixture(scope="module")
def task(tmp_path_factory, private_models_dir):
    """(data file, environment): 64 three-word prompts, the reward module on PYTHONPATH, one models folder."""
    folder = tmp_path_factory.mktemp("grpo-task")
    (folder / "plugin").mkdir()
    (folder / "plugin" / "rl_rewards.py").write_text(REWARD_MODULE)
    rng = random.Random(0)
    data = folder / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": " ".join(rng.choice(WORDS) for _ in range(3)),
                                        "completion": "-"}) + "\n" for _ in range(64)))
    pythonpath = os.pathsep.join(p for p in (str(folder / "plugin"), os.environ.get("PYTHONPATH")) if p)
    return data, clean_env(PYTHONPATH=pythonpath, THINKER_MODELS_DIR=str(private_models_dir), HF_HUB_OFFLINE="1")


def mlflow_metrics(cwd: Path) -> tuple[object, dict[str, list[tuple[int, float]]]]:
    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("thinker").experiment_id])
    keys = ["reward/mean", "reward/std", "reward/rl_rewards.vowel_share", "advantage/std", "kl/policy_ref",
            "kl/sample_train", "entropy", "completion/length", "train_loss"]
    return client, run, {k: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, k))
                         for k in keys}


def test_local_grpo_raises_the_mean_reward(task, tmp_path):
    data, env = task
    out = launch([*LEARN, f"data.path={data}"], cwd=tmp_path, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "run_record.json").read_text())
    metrics = record["stages"]["train"]["metrics"] if "metrics" in record["stages"]["train"] else record["metrics"]
    start, end = metrics["reward_start"], metrics["reward_end"]
    assert end > start + 0.2, f"mean reward {start:.3f} -> {end:.3f} over {STEPS} steps"
    client, run, history = mlflow_metrics(tmp_path)
    for key, points in history.items():
        assert [s for s, _ in points] == list(range(1, STEPS + 1)), key
    assert abs(history["kl/sample_train"][0][1]) < 1e-3  # sampler and trainer agree at step 0
    assert history["kl/policy_ref"][0][1] == pytest.approx(0.0, abs=1e-6)  # LoRA starts as the base
    assert history["entropy"][-1][1] < history["entropy"][0][1]  # the policy sharpened
    tables = sorted(p.name for p in (tmp_path / "run" / "rl_samples").iterdir())
    assert tables == ["step_000001.json", "step_000010.json", "step_000020.json", "step_000030.json"]
    table = json.loads((tmp_path / "run" / "rl_samples" / "step_000030.json").read_text())
    assert table["columns"] == ["prompt", "completion", "reward", "rl_rewards.vowel_share"]
    assert table["data"] and len(table["data"]) % 8 == 0  # whole groups (an epoch's last step may have fewer prompts)
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "rl_samples")]
    assert "rl_samples/step_000030.json" in artifacts
