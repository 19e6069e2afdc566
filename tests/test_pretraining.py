"""method=pretrain (seed 003): token blocks, the refusals, and the whole path — a short Cognate pretraining run
whose loss falls, its progress metrics and parameter counts in MLflow, registration (architecture cognate),
then a LoRA fine-tune of the registered model with the lineage recorded."""

from __future__ import annotations

import json
import re

import pytest
from conftest import clean_env, compose, launch

from thinker.config.check import check_config
from thinker.errors import ThinkerError
from thinker.pretraining.blocks import collate, to_blocks


class CharTokenizer:
    """Enough of a tokenizer for the block maths: one id per character, EOS = 0."""

    eos_token_id = 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}


def test_texts_become_full_blocks_each_example_ended_by_eos():
    blocks = to_blocks(CharTokenizer(), ["abc", "defg"], length=3)
    assert blocks.blocks == [[97, 98, 99], [0, 100, 101], [102, 103, 0]] and blocks.tokens == 9


def test_text_shorter_than_a_block_still_trains():
    assert to_blocks(CharTokenizer(), ["ab"], length=8).blocks == [[97, 98, 0]]


def test_collate_pads_and_masks_the_padding_out_of_the_loss():
    batch = collate([[5, 6, 7], [8]], pad_id=1)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 1, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[5, 6, 7], [8, -100, -100]]


@pytest.mark.parametrize(("overrides", "says"), [
    (["experiment=cognate_pretrain", "data=sample"], "method=pretrain trains on reasoning data"),
    (["experiment=cognate_pretrain", "model=qwen-0.5b"], "cannot"),
    (["method=lora", "optimizer=grokfast"], "optimizer=grokfast only works with method=pretrain"),
    (["experiment=cognate_pretrain", "model.arch.n_layers=12"], "fixed cognate-25m specification"),
    (["experiment=cognate_pretrain", "trainer=ddp_cpu"], "method=pretrain trains in one process"),
])
def test_pretraining_refusals_at_config_check(overrides, says):
    with pytest.raises(ThinkerError) as info:
        check_config(compose(overrides), env={})
    assert says in info.value.line()


@pytest.mark.slow
def test_pretrain_register_then_fine_tune_the_pretrained_model(tmp_path, private_models_dir):
    env = clean_env(THINKER_MODELS_DIR=str(private_models_dir))
    short = ["validation.pytest.enabled=false", "trainer.max_seq_length=128", "trainer.batch_size=4",
             "evaluation.max_samples=2", "evaluation.decoding.max_new_tokens=8"]
    out = launch(["experiment=cognate_pretrain", "trainer.max_steps=8", "trainer.evaluations=2",
                  "evaluation.enabled=true", "output.register_min_steps=1", "output.name=cognate-smoke",
                  "trainer.progress_every_s=0.001", "hydra.run.dir=pre", *short], cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    # stdout is a pipe: the pretraining loop logs progress lines too (trainer.progress_every_s)
    assert re.findall(r"step (\d)/8: loss \d+\.\d{4}", out.stdout) == [str(s) for s in range(1, 9)], out.stdout[-2000:]
    record = json.loads((tmp_path / "pre" / "run_record.json").read_text())
    train = record["stages"]["train"]
    assert train["total_params"] == 25_019_682 and train["trainable_params"] == 25_019_682
    assert train["registered_as"] == "cognate-smoke"

    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(record["mlflow_run_id"])
    assert run.data.params["total_params"] == "25019682" and run.data.params["trainable_params"] == "25019682"
    losses = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "train_loss"), key=lambda m: m.step)]
    assert len(losses) == 8 and losses[-1] < losses[0] - 0.5, losses  # the loss falls
    for name in ("ponder_steps", "ponder_cost", "memory_write_gate", "memory_read_entropy", "grokfast_filter_norm"):
        history = client.get_metric_history(run.info.run_id, name)
        assert sorted(m.step for m in history) == list(range(1, 9)), name
    ponder = [m.value for m in client.get_metric_history(run.info.run_id, "ponder_steps")]
    assert all(1.0 <= p <= 4.0 for p in ponder)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "reasoning_accuracy")] == [4, 8]

    registry = json.loads((private_models_dir / "registry.json").read_text())
    entry = next(e for e in registry["models"] if e["model_name"] == "cognate-smoke")
    assert (entry["architecture"], entry["source"], entry["fine_tuned_from"]) == ("cognate", "pretrain", None)
    assert entry["extra"]["pretrained_from"] == "cognate-25m"

    # the one link between the two paths: the pretrained model as the base of a fine-tune
    tuned = launch(["model=cognate-smoke", "method=lora", "data=gsm8k", "trainer.max_steps=2",
                    "output.register_min_steps=1", "output.name=cognate-smoke-lora", "hydra.run.dir=ft",
                    "evaluation.enabled=false", *short], cwd=tmp_path, env=env)
    assert tuned.returncode == 0, tuned.stderr[-3000:]
    registry = json.loads((private_models_dir / "registry.json").read_text())
    child = next(e for e in registry["models"] if e["model_name"] == "cognate-smoke-lora")
    assert (child["fine_tuned_from"], child["architecture"], child["extra"]["method"]) == (
        "cognate-smoke", "cognate", "lora")


@pytest.mark.parametrize("data", ["gsm8k", "hotpotqa"])
def test_both_reasoning_formats_pass_the_config_check_for_pretraining(data):
    check_config(compose(["experiment=cognate_pretrain", f"data={data}"]), env={})
