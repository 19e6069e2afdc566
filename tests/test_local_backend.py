"""The local backend for real: short Lightning runs of the tiny model on the shipped data, on the CPU.

Each run is a handful of optimizer steps on a slice of the sample data; the builtin model is built once
per session into a temporary models folder.
"""

from __future__ import annotations

import os
import signal

import pytest
import torch
from conftest import compose

from thinker.errors import ExitCode, ThinkerError

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("private_models_dir")]

FAST = ["data.max_examples=40", "trainer.max_seq_length=256", "trainer.batch_size=4", "validation.pytest.enabled=false",
        "logger=none"]


def run_train(tmp_path, overrides, callbacks=()):
    from thinker.backends.local.backend import train

    cfg = compose([*FAST, f"output.dir={tmp_path}", *overrides])
    return cfg, train(cfg, tmp_path, None, callbacks=callbacks)


def sample_batch(report):
    rows = report.objects["datamodule"].val_rows[:2]
    from thinker.data.packing import collate

    return collate(rows, pad_id=report.objects["tokenizer"].pad_token_id, packed=True)


@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_each_method_trains_and_saves_hf_weights(tmp_path, method):
    _cfg, report = run_train(tmp_path, [f"method={method}", "trainer.max_steps=2"])
    weights = report.checkpoint_dir
    assert report.metrics["optimizer_steps"] == 2
    assert torch.isfinite(torch.tensor(report.metrics["val_loss"]))
    if method == "full":
        assert (weights / "model.safetensors").exists()
        assert report.metrics["trainable_params"] == report.metrics["total_params"]
    else:
        assert (weights / "adapter_config.json").exists() and (weights / "adapter_model.safetensors").exists()
        assert report.metrics["trainable_params"] < 0.2 * report.metrics["total_params"]
    if method == "qlora":
        import bitsandbytes as bnb

        assert any(isinstance(m, bnb.nn.Linear4bit) for m in report.objects["model"].modules())
    assert not [p for p in tmp_path.rglob("*.tmp")], "temporary files left behind"


def test_held_out_loss_goes_down(tmp_path):
    _cfg, report = run_train(tmp_path, ["method=lora", "method.rank=16", "method.alpha=32", "optimizer.lr=3e-3",
                                        "trainer.max_steps=16",
                                        "trainer.evaluations=4", "data.max_examples=80"])
    history = report.objects["module"].val_history
    assert len(history) >= 3
    losses = [loss for _step, loss in history]
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), history  # falls at every evaluation
    assert losses[0] - losses[-1] > 0.2, history


def logits_of(model, batch):
    with torch.no_grad():
        return model.eval()(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_evaluation_loads_the_adapter_on_the_base_it_was_trained_on(tmp_path, method):
    from peft import PeftModel

    from thinker.evaluation.generate import load_model
    from thinker.models.loading import load_causal_lm

    _cfg, report = run_train(tmp_path, [f"method={method}", "trainer.max_steps=3"])
    batch = sample_batch(report)
    trained = logits_of(report.objects["model"], batch)
    evaluated, _tokenizer = load_model(report.checkpoint_dir, "cpu")  # what the eval stage scores
    torch.testing.assert_close(logits_of(evaluated, batch), trained, atol=1e-5, rtol=1e-5)
    if method == "qlora":
        # the adapter on the original full-precision base is a different model from the one trained
        naive = PeftModel.from_pretrained(load_causal_lm(report.objects["base_path"], method="full", quant=None),
                                          str(report.checkpoint_dir))
        assert (logits_of(naive, batch) - trained).abs().max() > 1e-3


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_merged_model_matches_adapter(tmp_path, method):
    from transformers import AutoModelForCausalLM

    from thinker.commands.cli import main

    _cfg, report = run_train(tmp_path / "run", [f"method={method}", "trainer.max_steps=3"])
    assert main(["models", "merge", str(tmp_path / "run"), "--out", str(tmp_path / "merged")]) == 0
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    batch = sample_batch(report)
    torch.testing.assert_close(logits_of(merged, batch), logits_of(report.objects["model"], batch),
                               atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("avx512_bf16", [True, False], ids=["cpu-with-avx512_bf16", "cpu-without"])
def test_qlora_trains_after_held_out_evaluation_on_any_cpu(tmp_path, monkeypatch, avx512_bf16):
    """bitsandbytes repacks 4-bit weights for CPU inference in eval mode when the CPU has avx512_bf16; force
    that capability on or off whatever this CPU has, then train -> held-out eval -> train -> final eval."""
    import bitsandbytes as bnb
    import bitsandbytes.nn.modules as bnb_modules
    import lightning.pytorch as pl

    monkeypatch.setattr(bnb_modules, "has_avx512bf16", lambda: avx512_bf16)  # what Linear4bit reads when built
    built = []

    class Spy(pl.Callback):
        def on_train_start(self, trainer, module):
            built.extend(m for m in module.modules() if isinstance(m, bnb.nn.Linear4bit))

    _cfg, report = run_train(tmp_path, ["method=qlora", "trainer.max_steps=4", "trainer.evaluations=2"],
                             callbacks=(Spy(),))
    assert built, "no 4-bit layers in the trained model"
    assert report.metrics["optimizer_steps"] == 4
    history = report.objects["module"].val_history
    assert [step for step, _ in history] == [2, 4]  # training went on after the evaluation at step 2
    assert not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in built)


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    """grad_accum=4 x batch 1 and grad_accum=1 x batch 4 see the same rows in one step: same gradients and
    the same recorded step loss (the loss is normalised over the whole step's target tokens)."""
    import lightning.pytorch as pl

    def first_step_gradients(overrides, folder):
        grads = {}

        class Capture(pl.Callback):
            def on_before_optimizer_step(self, trainer, module, optimizer):
                if not grads:
                    grads.update({n: p.grad.detach().clone() for n, p in module.named_parameters()
                                  if p.grad is not None})

        _cfg, report = run_train(tmp_path / folder, ["method=full", "trainer.max_steps=1", "optimizer=sgd",
                                                     "data.max_examples=24", *overrides], callbacks=(Capture(),))
        return grads, report.metrics["train_loss"]

    accumulated, loss_a = first_step_gradients(["trainer.grad_accum=4", "trainer.batch_size=1"], "accum")
    batched, loss_b = first_step_gradients(["trainer.grad_accum=1", "trainer.batch_size=4"], "batch")
    assert accumulated.keys() == batched.keys() and len(batched) > 10
    for name, grad in batched.items():
        torch.testing.assert_close(accumulated[name], grad, atol=1e-5, rtol=1e-4, msg=name)
    assert loss_a == pytest.approx(loss_b, rel=1e-5)


def test_fine_tuning_a_registered_lora_fine_tune_starts_from_it(tmp_path):
    import lightning.pytorch as pl

    from thinker.models.finetunes import register_run_output
    from thinker.models.loading import load_causal_lm
    from thinker.models.registry_options import register_registry_options

    parent_cfg, parent = run_train(tmp_path / "parent", ["method=lora", "trainer.max_steps=4",
                                                         "output.name=parent-lora"])
    entry = register_run_output(parent_cfg, parent.checkpoint_dir, None)
    assert entry.model_name in register_registry_options()
    batch = sample_batch(parent)
    starting = {}

    class StartingLogits(pl.Callback):
        def on_train_start(self, trainer, module):
            starting["logits"] = logits_of(module.model, batch)
            module.model.train()

    _cfg, child = run_train(tmp_path / "child", [f"model={entry.model_name}", "method=lora", "trainer.max_steps=1"],
                            callbacks=(StartingLogits(),))
    parent_logits = logits_of(parent.objects["model"], batch)
    base_logits = logits_of(load_causal_lm(parent.objects["base_path"], method="full", quant=None), batch)
    torch.testing.assert_close(starting["logits"], parent_logits, atol=1e-4, rtol=1e-4)
    assert (starting["logits"] - base_logits).abs().max() > 1e-2  # not the plain base
    assert child.objects["base_path"] != parent.objects["base_path"]  # trained on the merged parent


def test_bf16_training_loads_the_frozen_base_in_bf16_and_keeps_adapters_in_fp32(tmp_path):
    _cfg, report = run_train(tmp_path, ["method=lora", "trainer.precision=bf16", "trainer.max_steps=2"])
    model = report.objects["model"]
    assert {p.dtype for p in model.parameters() if not p.requires_grad} == {torch.bfloat16}
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    assert torch.isfinite(torch.tensor(report.metrics["val_loss"]))


@pytest.mark.parametrize("enabled", [False, True])
def test_gradient_checkpointing_follows_trainer_optimizations(tmp_path, enabled):
    features = "sequence_packing,gradient_checkpointing" if enabled else "sequence_packing"
    _cfg, report = run_train(tmp_path, ["method=qlora", "trainer.max_steps=1", f"trainer.optimizations=[{features}]"])
    checkpointed = [m for m in report.objects["model"].modules() if getattr(m, "gradient_checkpointing", False) is True]
    assert bool(checkpointed) is enabled


def test_zero_evaluations_means_no_held_out_evaluation(tmp_path):
    _cfg, report = run_train(tmp_path, ["method=lora", "trainer.max_steps=3", "trainer.evaluations=0"])
    assert report.objects["module"].val_history == [] and "val_loss" not in report.metrics
    assert report.metrics["optimizer_steps"] == 3 and (tmp_path / "checkpoints" / "last.ckpt").exists()


class SignalAtStep:
    """Sends this process a real SIGTERM after optimizer step `step`, as a scheduler would."""

    def __init__(self, step: int):
        import lightning.pytorch as pl

        class _Cb(pl.Callback):
            def on_train_batch_end(cb, trainer, *args):
                if trainer.global_step == step and not getattr(cb, "sent", False):
                    cb.sent = True
                    os.kill(os.getpid(), signal.SIGTERM)

        self.callback = _Cb()


def test_resume_reaches_the_same_loss_as_an_uninterrupted_run(tmp_path):
    # 24 examples make 6 steps an epoch: the run crosses into epoch 1 and is stopped there
    # grad_accum=2: a stop can only land between optimizer steps, never inside one
    steps = ["method=lora", "trainer.max_steps=9", "trainer.evaluations=3", "optimizer.lr=2e-3",
             "data.max_examples=24", "trainer.batch_size=2", "trainer.grad_accum=2"]
    _cfg, straight = run_train(tmp_path / "straight", steps)

    interrupted_dir = tmp_path / "interrupted"
    signal_at = SignalAtStep(7)
    # Lightning's own callbacks run before ours (thinker's GracefulStop checks on the next batch end)
    with pytest.raises(ThinkerError) as info:
        run_train(interrupted_dir, steps, callbacks=(signal_at.callback,))
    assert info.value.exit_code == ExitCode.INTERRUPTED
    assert (interrupted_dir / "checkpoints" / "last.ckpt").exists()
    assert signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None) or callable(signal.getsignal(signal.SIGTERM))

    _cfg, resumed = run_train(interrupted_dir, [*steps, "resume=true"])
    assert resumed.metrics["optimizer_steps"] == straight.metrics["optimizer_steps"] == 9
    # Same seed, same batches, same RNG: on the CPU the two runs agree to float rounding.
    assert resumed.metrics["train_loss"] == pytest.approx(straight.metrics["train_loss"], rel=1e-4)
    assert resumed.metrics["val_loss"] == pytest.approx(straight.metrics["val_loss"], rel=1e-4)


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ThinkerError) as info:
        run_train(tmp_path, ["resume=true"])
    assert "no checkpoint" in str(info.value) and "hydra.run.dir" in str(info.value)


def test_save_total_limit_keeps_only_the_newest_checkpoints(tmp_path):
    run_train(tmp_path, ["method=lora", "trainer.max_steps=6", "trainer.evaluations=3", "trainer.save_total_limit=1"])
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").glob("*.ckpt"))
    assert ckpts == ["last.ckpt", "step000006.ckpt"], ckpts


def test_8bit_adamw_runs_on_cpu_with_8bit_state(tmp_path):
    _cfg, report = run_train(tmp_path, ["method=lora", "optimizer=adamw_8bit", "trainer.max_steps=2"])
    assert report.metrics["optimizer_steps"] == 2
    optimizer = report.objects["module"].trainer.optimizers[0]
    import bitsandbytes as bnb

    assert isinstance(optimizer, bnb.optim.AdamW8bit)
    big = [s for s in optimizer.state.values() if "state1" in s and s["state1"].numel() >= 4096]
    assert big and all(s["state1"].dtype == torch.uint8 for s in big)


def test_sequence_length_that_cuts_every_completion_is_a_clear_error(tmp_path):
    with pytest.raises(ThinkerError) as info:
        run_train(tmp_path, ["method=lora", "trainer.max_seq_length=32", "trainer.max_steps=1"])
    assert "trainer.max_seq_length=32" in str(info.value)


def test_paged_optimizer_on_cpu_is_a_clear_error(tmp_path):
    with pytest.raises(ThinkerError) as info:
        run_train(tmp_path, ["method=lora", "optimizer=paged_adamw", "trainer.max_steps=1"])
    assert "CUDA" in str(info.value)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_qlora_on_cuda(tmp_path):
    _cfg, report = run_train(tmp_path, ["method=qlora", "trainer=gpu", "trainer.precision=bf16",
                                        "method.compute_dtype=bf16", "trainer.max_steps=3", *FAST])
    assert torch.isfinite(torch.tensor(report.metrics["val_loss"]))
