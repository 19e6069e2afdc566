"""The local backend's speed and memory switches (thinker.backends.local.speedups) compute what the plain path
computes: the same loss and gradients within float tolerance, on the CPU, on a small random Qwen2 model.

- packed rows: per-example attention (never a cross-example block) gives each example the logits it has alone,
  and the same loss and gradients as transformers' block-diagonal-mask SDPA;
- fused_kernels: the loss from the last hidden states in chunks (and Liger's kernel where installed, grouped by
  token weight), never the full logits;
- a frozen base in bf16 with fp32 adapters, gradient checkpointing, trainer.compile (slow: inductor compiles).
"""

from __future__ import annotations

import pytest
import torch

from thinker.data.tokenize import IGNORE_INDEX

ARCH = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 256, "vocab_size": 512, "tie_word_embeddings": True}
LENGTHS = (5, 7, 4, 9, 12)


def qwen2(attn: str = "sdpa", dtype: torch.dtype = torch.float32):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    return Qwen2ForCausalLM(Qwen2Config(**ARCH, attn_implementation=attn)).to(dtype).train()


def with_lora(model, checkpointing: bool = False):
    from omegaconf import OmegaConf

    from thinker.backends.local.training_model import apply_method

    method = OmegaConf.create({"name": "lora", "rank": 4, "alpha": 8.0, "dropout": 0.0,
                               "target_modules": "all-linear", "bias": "none"})
    torch.manual_seed(1)
    model = apply_method(model, method, checkpointing=checkpointing)
    for name, p in model.named_parameters():  # lora_B starts at 0: give the adapters a gradient-carrying value
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    return model


def examples() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randint(3, ARCH["vocab_size"], (n,), generator=generator) for n in LENGTHS]


def packed_batch(rows: list[list[int]], length: int) -> dict[str, torch.Tensor]:
    """Examples back to back per row (thinker.data.packing's layout), padding at the end, weights 1 or 2."""
    from thinker.data.packing import Row, collate
    from thinker.data.tokenize import TokenizedExample

    exs = examples()
    out = []
    for row in rows:
        r = Row()
        for i in row:
            ids = exs[i].tolist()
            labels = [IGNORE_INDEX] * 2 + ids[2:]  # a two-token prompt
            weights = [0.0, 0.0] + [2.0 if j % 3 == 0 else 1.0 for j in range(len(ids) - 2)]
            r.add(TokenizedExample(input_ids=ids, labels=labels, weights=weights))
        out.append(r)
    batch = collate(out, pad_id=0, packed=True)
    pad = length - batch["input_ids"].size(1)
    if pad > 0:
        batch = {k: torch.nn.functional.pad(v, (0, pad), value=IGNORE_INDEX if k == "labels" else 0)
                 for k, v in batch.items()}
        batch["position_ids"][:, -pad:] = torch.arange(pad)
    return batch


def loss_and_grads(model, batch, hidden_state_loss=None):
    from thinker.backends.local.module import FineTuneModule

    module = FineTuneModule(model, optimizer_cfg=_optimizer_cfg(), total_steps=1,
                            hidden_state_loss=hidden_state_loss)
    weighted, losses = module.weighted_and_token_losses(batch)
    model.zero_grad(set_to_none=True)
    weighted.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return weighted.detach(), losses.detach(), grads


def _optimizer_cfg():
    from omegaconf import OmegaConf

    return OmegaConf.create({"max_grad_norm": 1.0})


def assert_same(a, b, atol=1e-5, rtol=1e-4):
    torch.testing.assert_close(a[0], b[0], atol=atol, rtol=rtol)
    torch.testing.assert_close(a[1], b[1], atol=atol, rtol=rtol)
    assert a[2].keys() == b[2].keys() and a[2]
    for name in a[2]:
        torch.testing.assert_close(a[2][name], b[2][name], atol=atol, rtol=rtol, msg=name)
    assert any(g.abs().sum() > 0 for g in a[2].values())


# ---------------------------------------------------------------- attention over packed rows


def test_document_bounds_split_rows_where_positions_restart():
    from thinker.backends.local.packed_attention import document_bounds

    positions = torch.tensor([[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 4, 5]])
    assert document_bounds(positions) == [[(0, 3), (3, 5), (5, 6)], [(0, 6)]]


@pytest.mark.parametrize("rows,length", [([[0, 1, 2]], 16), ([[0, 1, 2]], 20), ([[0, 1], [2, 3]], 18),
                                         ([[3], [1, 0, 2, 4]], 40)])
def test_per_example_attention_gives_each_packed_example_its_logits_alone(rows, length):
    from thinker.backends.local.packed_attention import use_packed_attention

    model = qwen2().eval()
    assert use_packed_attention(model, "cpu") == "thinker_document_sdpa"
    exs = examples()
    batch = packed_batch(rows, length)
    with torch.no_grad():
        alone = [model(input_ids=e[None], use_cache=False).logits[0] for e in exs]
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
    for b, row in enumerate(rows):
        start = 0
        for i in row:
            end = start + len(exs[i])
            torch.testing.assert_close(logits[b, start:end], alone[i], atol=1e-5, rtol=0)
            start = end


def test_per_example_attention_trains_like_the_block_diagonal_mask():
    from thinker.backends.local.packed_attention import use_packed_attention

    batch = packed_batch([[0, 1, 2], [3, 4]], 24)
    plain = loss_and_grads(with_lora(qwen2()), batch)
    model = with_lora(qwen2())
    assert use_packed_attention(model, "cpu") == "thinker_document_sdpa"
    assert model.get_base_model().config._attn_implementation == "thinker_document_sdpa"
    assert_same(loss_and_grads(model, batch), plain)


def test_padded_batches_and_cached_decoding_keep_plain_sdpa():
    """Packing off (an attention mask) and generation with a KV cache go through sdpa unchanged."""
    from thinker.backends.local.packed_attention import use_packed_attention

    reference, model = qwen2().eval(), qwen2().eval()
    use_packed_attention(model, "cpu")
    ids = torch.tensor([[5, 6, 7, 8, 9], [5, 6, 7, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids, attention_mask=mask).logits[mask.bool()],
                                   reference(input_ids=ids, attention_mask=mask).logits[mask.bool()])
        greedy = model.generate(ids[:1], max_new_tokens=6, do_sample=False)
        assert torch.equal(greedy, reference.generate(ids[:1], max_new_tokens=6, do_sample=False))


def test_an_architecture_with_its_own_attention_keeps_it():
    from thinker.backends.local.packed_attention import use_packed_attention

    model = qwen2(attn="eager")  # not sdpa: e.g. flash_attention_2, or Cognate's own attention
    assert use_packed_attention(model, "cpu") is None
    assert model.config._attn_implementation == "eager"


# ---------------------------------------------------------------- the loss without full logits


def test_chunked_linear_cross_entropy_matches_the_logits_path():
    from thinker.backends.local.losses import chunked_linear_cross_entropy

    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 11, 16, generator=generator, requires_grad=True)
    weight = torch.randn(50, 16, generator=generator, requires_grad=True)
    targets = torch.randint(0, 50, (3, 11), generator=generator)
    targets[0, :4] = IGNORE_INDEX
    token_weights = torch.rand(3, 11, generator=generator) * 3
    token_weights[1, 2] = 0.0

    logits = hidden @ weight.t()
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, 50), targets.reshape(-1), ignore_index=IGNORE_INDEX,
                                           reduction="none").view(3, 11)
    expected = (ce * token_weights).sum()
    expected_grads = torch.autograd.grad(expected * 0.37, (hidden, weight))
    for chunk in (1, 4, 7, 100):  # chunks that do and do not divide the 33 tokens
        total, losses = chunked_linear_cross_entropy(hidden, weight, targets, token_weights, chunk=chunk)
        torch.testing.assert_close(total, expected)
        torch.testing.assert_close(losses, ce.detach())
        grads = torch.autograd.grad(total * 0.37, (hidden, weight))
        for got, want in zip(grads, expected_grads, strict=True):
            torch.testing.assert_close(got, want)
    with torch.no_grad():  # held-out evaluation: losses only
        total, losses = chunked_linear_cross_entropy(hidden, weight, targets, token_weights, chunk=4)
    torch.testing.assert_close(losses, ce.detach())


@pytest.mark.parametrize("checkpointing", [False, True])
def test_fused_kernels_loss_trains_like_the_logits_path(checkpointing):
    """LoRA on a packed batch: the hidden-state loss gives the module's loss, per-token losses and gradients;
    with gradient checkpointing too (which recomputes the layers in backward)."""
    from thinker.backends.local.losses import HiddenStateLoss

    batch = packed_batch([[0, 1, 2], [3, 4]], 24)
    plain = loss_and_grads(with_lora(qwen2()), batch)
    model = with_lora(qwen2(), checkpointing=checkpointing)
    assert HiddenStateLoss.supports(model) is None
    fused = HiddenStateLoss(model, "cpu")
    assert fused.liger is None  # Liger's kernel is CUDA only: the chunked path on the CPU
    assert_same(loss_and_grads(model, batch, fused), plain)


def test_fused_kernels_loss_trains_the_output_layer_of_a_full_fine_tune():
    from thinker.backends.local.losses import HiddenStateLoss

    batch = packed_batch([[0, 1, 2], [3, 4]], 24)
    plain, model = loss_and_grads(qwen2(), batch), qwen2()
    result = loss_and_grads(model, batch, HiddenStateLoss(model, "cpu"))
    assert "lm_head.weight" in result[2] or "model.embed_tokens.weight" in result[2]  # tied: one tensor
    assert_same(result, plain, atol=2e-5)


def test_a_lora_output_layer_keeps_the_logits_path():
    from omegaconf import OmegaConf

    from thinker.backends.local.losses import HiddenStateLoss
    from thinker.backends.local.training_model import apply_method

    method = OmegaConf.create({"name": "lora", "rank": 4, "alpha": 8.0, "dropout": 0.0,
                               "target_modules": "q_proj,lm_head", "bias": "none"})
    assert "output layer" in HiddenStateLoss.supports(apply_method(qwen2(), method, checkpointing=False))


class TorchLigerLoss(torch.nn.Module):
    """Liger's LigerFusedLinearCrossEntropyLoss interface (lin_weight, _input, target) in plain torch: its
    kernel is Triton on CUDA, so on the CPU this stands in for it to check our grouping by token weight."""

    def __init__(self, reduction: str, ignore_index: int):
        super().__init__()
        self.reduction, self.ignore_index = reduction, ignore_index

    def forward(self, lin_weight, _input, target):
        return torch.nn.functional.cross_entropy(_input @ lin_weight.t(), target, ignore_index=self.ignore_index,
                                                 reduction=self.reduction)


def test_liger_path_weights_each_token_through_groups():
    from thinker.backends.local.losses import chunked_linear_cross_entropy, liger_linear_cross_entropy

    generator = torch.Generator().manual_seed(1)
    hidden = torch.randn(2, 9, 8, generator=generator, requires_grad=True)
    weight = torch.randn(30, 8, generator=generator)
    targets = torch.randint(0, 30, (2, 9), generator=generator)
    targets[:, :2] = IGNORE_INDEX
    token_weights = torch.tensor([[0, 0, 1, 1, 5, 2, 1, 0, 1], [0, 0, 2, 2, 1, 1, 5, 1, 1]], dtype=torch.float32)
    total, losses = liger_linear_cross_entropy(hidden, weight, targets, token_weights, TorchLigerLoss)
    (grad,) = torch.autograd.grad(total, hidden)
    want_total, want_losses = chunked_linear_cross_entropy(hidden, weight, targets, token_weights)
    (want_grad,) = torch.autograd.grad(want_total, hidden)
    torch.testing.assert_close(total, want_total)
    torch.testing.assert_close(grad, want_grad)
    torch.testing.assert_close(losses.sum(), want_losses.sum())  # what the module sums (train_loss)


# ---------------------------------------------------------------- bf16 base, compile, the config switches


def test_a_bf16_frozen_base_with_fp32_adapters_trains_like_fp32(tmp_path):
    """trainer.precision=bf16: LoRA loads the frozen base in bf16 (half its memory) with the adapters in fp32,
    as peft recommends; loss and gradients stay within bf16's rounding of the fp32 base's."""
    from thinker.backends.local.training_model import base_weights_dtype
    from thinker.models.loading import load_causal_lm

    qwen2().save_pretrained(tmp_path, safe_serialization=True)
    assert base_weights_dtype("lora", "bf16") == "bf16" and base_weights_dtype("full", "bf16") == "fp32"
    batch = packed_batch([[0, 1, 2], [3, 4]], 24)
    results = {}
    for dtype in ("fp32", "bf16"):
        model = with_lora(load_causal_lm(str(tmp_path), method="lora", dtype=dtype))
        frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
        assert frozen == {torch.float32 if dtype == "fp32" else torch.bfloat16}
        assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):  # Lightning's bf16-mixed
            results[dtype] = loss_and_grads(model, batch)
    fp32, bf16 = results["fp32"], results["bf16"]
    torch.testing.assert_close(bf16[0], fp32[0], rtol=2e-2, atol=0)
    for name, g in fp32[2].items():
        cos = torch.nn.functional.cosine_similarity(bf16[2][name].flatten().float(), g.flatten(), dim=0)
        assert cos > 0.99, name


def test_each_switch_changes_what_the_backend_runs():
    from conftest import compose

    from thinker.backends.local.speedups import apply_speedups

    plain = apply_speedups(with_lora(qwen2()), compose(["trainer.optimizations=[]"]).copy(), "cpu")
    assert (plain.attention, plain.hidden_state_loss, plain.compiled_layers) == (None, None, 0)
    packed = apply_speedups(with_lora(qwen2()), compose(["trainer.optimizations=[sequence_packing]"]), "cpu")
    assert packed.attention == "thinker_document_sdpa" and packed.hidden_state_loss is None
    fused = apply_speedups(with_lora(qwen2()), compose(["trainer.optimizations=[fused_kernels]"]), "cpu")
    assert fused.attention is None and fused.hidden_state_loss is not None
    model = with_lora(qwen2())
    compiled = apply_speedups(model, compose(["trainer.optimizations=[]", "trainer.compile=true"]), "cpu")
    assert compiled.compiled_layers == ARCH["num_hidden_layers"]
    assert all(layer._compiled_call_impl is not None for layer in model.get_base_model().model.layers)
    # the switches leave parameter names alone: checkpoints and saved adapters load as before
    assert {n for n, _ in model.named_parameters()} == {n for n, _ in with_lora(qwen2()).named_parameters()}


def test_the_config_check_accepts_the_switches_on_the_local_backend():
    from conftest import compose

    from thinker.config.rules import optimizations_supported

    cfg = compose(["trainer.optimizations=[sequence_packing,fused_kernels,gradient_checkpointing]",
                   "trainer.compile=true"])
    assert list(optimizations_supported(cfg, {})) == []
    assert cfg.trainer.compile is True


@pytest.mark.slow
def test_compiled_layers_train_like_eager_ones():
    """trainer.compile=true: inductor-compiled decoder layers (document attention stays eager inside them)."""
    from thinker.backends.local.losses import HiddenStateLoss
    from thinker.backends.local.packed_attention import use_packed_attention
    from thinker.backends.local.speedups import compile_layers

    batch = packed_batch([[0, 1, 2], [3, 4]], 24)
    eager = with_lora(qwen2())
    use_packed_attention(eager, "cpu")
    plain = loss_and_grads(eager, batch, HiddenStateLoss(eager, "cpu"))
    model = with_lora(qwen2())
    use_packed_attention(model, "cpu")
    assert compile_layers(model) == ARCH["num_hidden_layers"]
    assert_same(loss_and_grads(model, batch, HiddenStateLoss(model, "cpu")), plain, atol=1e-4, rtol=1e-3)
