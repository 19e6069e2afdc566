"""objective=dpo's maths on the CPU: the first step's loss is ln 2 (the policy is its reference), and the local
module's loss and adapter gradients on one batch are TRL's DPOTrainer's (TRL 1.16, a test-only reference) on
the same tiny model and the same tokens, for each loss TRL has (sigmoid, ipo); SimPO against its formula."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from omegaconf import OmegaConf

from thinker.backends.local.dpo import pair_batch, tokenized_pairs
from thinker.backends.local.dpo_module import DpoModule
from thinker.config.enums import DpoLoss
from thinker.models.tokenizer import train_tokenizer
from thinker.objectives.dpo_loss import NEEDS_REFERENCE, SIMPO_GAMMA_RATIO, preference_loss, sequence_logps
from thinker.tasks.preference import PreferencePair

PAIRS = [
    PreferencePair("Extract the claim: cats purr.", "CLAIM[c1]: cats purr.", "CLAIM[c1]: dogs bark loudly."),
    PreferencePair("Extract the claim: rain is wet.", "CLAIM[c1]: rain is wet.", "CLAIM[c1]: sun."),
    PreferencePair("Extract the claim: ice melts.", "CLAIM[c1]: ice melts when warm.", "nothing"),
]
OPTIMIZER = OmegaConf.create({"max_grad_norm": 1.0})
RTOL = 1e-4


@pytest.fixture(scope="module")
def tokenizer():
    texts = [t for p in PAIRS for t in (p.prompt, p.chosen, p.rejected)] * 30
    return train_tokenizer(texts, vocab_size=300)


def tiny_lora_model(tokenizer, seed: int = 0, perturb: bool = True):
    """A two-layer Qwen2 with LoRA adapters; `perturb` moves lora_B off zero so the policy differs from the
    reference (at zero every gradient of lora_A would vanish and the comparison would test little)."""
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         attention_dropout=0.0, tie_word_embeddings=False)
    model = Qwen2ForCausalLM(config).float()
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                                             task_type="CAUSAL_LM"))
    if perturb:
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0.0, 0.3)
    return model


def local_step(model, tokenizer, loss: str, beta: float):
    """The local module's mean pair loss on one batch of every pair, and the adapters' gradients."""
    module = DpoModule(model, OmegaConf.create({"beta": beta, "loss": loss}), OPTIMIZER, total_steps=1)
    rows, _ = tokenized_pairs(tokenizer, PAIRS, max_length=256)
    out = module.pair_loss(pair_batch(rows, tokenizer.pad_token_id))
    value = out.losses.mean()
    value.backward()
    return float(value), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}, out


def trl_step(model, tokenizer, loss: str, beta: float, tmp_path):
    """TRL's DPOTrainer.compute_loss on the same token ids (its collator). The reference is the base without the
    adapters, as thinker's; TRL given an adapted model without ref_model would copy the adapters as they are."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(output_dir=str(tmp_path), beta=beta, loss_type=[loss], report_to=[], use_cpu=True, bf16=False,
                     per_device_train_batch_size=len(PAIRS), max_length=None, disable_dropout=True)
    texts = [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in PAIRS]
    base = copy.deepcopy(model).unload()  # the base model, its LoRA layers removed
    trainer = DPOTrainer(model=model, ref_model=base, args=args, train_dataset=Dataset.from_list(texts),
                         processing_class=tokenizer)
    rows, _ = tokenized_pairs(tokenizer, PAIRS, max_length=256)
    examples = []
    for chosen, rejected in rows:
        start = chosen.weights.index(1.0)  # the completion's first token: the prompt is everything before it
        assert chosen.input_ids[:start] == rejected.input_ids[:start]
        examples.append({"prompt_ids": chosen.input_ids[:start], "chosen_ids": chosen.input_ids[start:],
                         "rejected_ids": rejected.input_ids[start:]})
    inputs = trainer.data_collator(examples)
    trainer.model.train()
    value = trainer.compute_loss(trainer.model, inputs)
    value.backward()
    return float(value), {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.requires_grad}


def assert_close(ours: float, theirs: float) -> None:
    assert abs(ours - theirs) <= RTOL * max(abs(theirs), 1e-8), (ours, theirs)


@pytest.mark.parametrize(("loss", "beta"), [("sigmoid", 0.1), ("sigmoid", 0.5), ("ipo", 0.1)])
def test_loss_and_adapter_gradients_match_trls_dpo_trainer(tokenizer, tmp_path, loss, beta):
    model = tiny_lora_model(tokenizer)
    reference_copy = copy.deepcopy(model)
    ours, our_grads, out = local_step(model, tokenizer, loss, beta)
    theirs, their_grads = trl_step(reference_copy, tokenizer, loss, beta, tmp_path)
    assert_close(ours, theirs)
    if loss == "sigmoid":
        assert abs(ours - math.log(2)) > 1e-3  # the adapters moved the policy off its reference
    assert our_grads.keys() == their_grads.keys() and any("lora_A" in n for n in our_grads)
    for name, grad in our_grads.items():
        other = their_grads[name]
        assert grad.abs().max() > 0, name
        scale = other.abs().max().item()
        assert (grad - other).abs().max().item() <= RTOL * scale, name


@pytest.mark.parametrize("loss", ["sigmoid", "ipo"])
def test_the_first_step_is_at_the_reference(tokenizer, loss):
    """LoRA's B starts at zero: policy == reference, so sigmoid gives ln 2 and IPO (1 / (2 beta))^2, rewards 0."""
    _, _, out = local_step(tiny_lora_model(tokenizer, perturb=False), tokenizer, loss, 0.1)
    expected = math.log(2) if loss == "sigmoid" else (1 / (2 * 0.1)) ** 2
    assert torch.allclose(out.losses, torch.full_like(out.losses, expected), atol=1e-4), out.losses
    assert out.chosen_rewards.abs().max() < 1e-5 and out.rejected_rewards.abs().max() < 1e-5


def test_a_full_fine_tune_starts_at_its_frozen_copy(tokenizer):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))
    module = DpoModule(model, OmegaConf.create({"beta": 0.1, "loss": "sigmoid"}), OPTIMIZER, total_steps=1, full=True)
    assert module.reference is not None and not any(p.requires_grad for p in module.reference.parameters())
    rows, _ = tokenized_pairs(tokenizer, PAIRS, max_length=256)
    out = module.pair_loss(pair_batch(rows, tokenizer.pad_token_id))
    assert torch.allclose(out.losses, torch.full_like(out.losses, math.log(2)), atol=1e-4)
    with torch.no_grad():  # a changed policy leaves the frozen reference where it was
        next(model.parameters()).add_(0.5)
    assert not torch.allclose(module.pair_loss(pair_batch(rows, tokenizer.pad_token_id)).losses,
                              torch.full_like(out.losses, math.log(2)), atol=1e-4)


def test_simpo_is_its_formula_and_needs_no_reference():
    chosen, rejected = torch.tensor([-3.0, -9.0]), torch.tensor([-6.0, -2.0])  # means -1.5 > -2, -3 < -2
    tokens_c, tokens_r = torch.tensor([2.0, 3.0]), torch.tensor([3.0, 1.0])
    out = preference_loss("simpo", 2.0, chosen, rejected, chosen_tokens=tokens_c, rejected_tokens=tokens_r)
    logits = 2.0 * (chosen / tokens_c - rejected / tokens_r) - SIMPO_GAMMA_RATIO * 2.0
    assert torch.allclose(out.losses, -torch.nn.functional.logsigmoid(logits))
    assert out.accuracies.tolist() == [1.0, 0.0]
    assert NEEDS_REFERENCE == {"sigmoid": True, "ipo": True, "simpo": False}
    assert set(NEEDS_REFERENCE) == set(DpoLoss.values())  # every configurable loss is implemented


def test_sequence_logps_sums_the_completion_targets_only():
    logits = torch.randn(1, 4, 5)
    ids = torch.tensor([[1, 2, 3, 4]])
    weights = torch.tensor([[0.0, 0.0, 1.0, 1.0]])  # tokens 3 and 4 are the completion
    logprobs = torch.log_softmax(logits, -1)
    assert torch.allclose(sequence_logps(logits, ids, weights), logprobs[0, 1, 3] + logprobs[0, 2, 4])
