"""The Cognate model (seed 003, issue 12): its fixed 25M specification, adaptive computation time, the
long-term memory, and the Hugging Face path it shares with every other model (save/load, generate, peft LoRA,
merge, the builtin build, the registry through its architecture's adapter). Small specs (param_budget=None)
everywhere except the 25M count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import CONF, ROOT, compose
from omegaconf import OmegaConf

from thinker.errors import ThinkerError

torch = pytest.importorskip("torch")

# about 27k parameters: a forward and backward take milliseconds
SMALL = {"vocab_size": 320, "d_model": 32, "n_heads": 4, "d_ff": 64, "n_layers": 1, "act_layers": 1,
         "max_ponder_steps": 4, "memory_slots": 8, "memory_chunk": 4, "max_seq_len": 64, "param_budget": None}
EXACT_25M = 25_019_682


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: on a busy 2-core machine a second thread only adds synchronisation waits (10-100x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_model(seed: int = 0, **changes):
    from thinker.models.adapters.cognate_model import CognateConfig, CognateForCausalLM

    torch.manual_seed(seed)
    return CognateForCausalLM(CognateConfig(**{**SMALL, **changes})).eval()


def batch(rows: int = 3, length: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, SMALL["vocab_size"], (rows, length), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- the fixed specification


def test_the_25m_specification_builds_with_25m_parameters_and_the_option_mirrors_it():
    from thinker.models.adapters.cognate_model import CognateConfig, CognateForCausalLM
    from thinker.models.adapters.cognate_spec import PARAM_BUDGETS, SPEC_25M, budget_range, parameter_count

    model = CognateForCausalLM(CognateConfig())
    total = sum(p.numel() for p in model.parameters())  # the tied LM head counts once
    assert total == parameter_count(SPEC_25M) == EXACT_25M
    low, high = budget_range(PARAM_BUDGETS["cognate-25m"])
    assert (low, high) == (24_750_000, 25_250_000) and low <= total <= high
    assert model.lm_head.weight is model.model.embed_tokens.weight

    option = OmegaConf.load(CONF / "model" / "cognate-25m.yaml")
    assert OmegaConf.to_container(option.arch) == dict(SPEC_25M)
    assert option.params == PARAM_BUDGETS["cognate-25m"] and option.supports_4bit is False


def test_a_specification_off_the_budget_is_refused_at_construction():
    from thinker.models.adapters.cognate_model import CognateConfig

    with pytest.raises(ValueError, match=r"24,750,000\.\.25,250,000") as caught:
        CognateConfig(d_model=256)
    assert "parameters" in str(caught.value)
    with pytest.raises(ValueError, match="parameters, outside"):
        CognateConfig(memory_slots=8000)  # +4.1M in memory slots alone
    assert CognateConfig(**SMALL).parameter_count() < 100_000  # param_budget=None: the explicit small path


@pytest.mark.parametrize("changes", [{}, {"tie_word_embeddings": False}, {"n_layers": 0, "act_layers": 3},
                                     {"memory_slots": 3, "max_ponder_steps": 1}])
def test_the_parameter_formula_matches_what_is_built(changes):
    model = small_model(**changes)  # the constructor raises when its own count and the formula disagree
    unique = {id(p): p.numel() for p in model.parameters()}
    assert sum(unique.values()) == model.config.parameter_count()


def test_the_cognate_25m_option_refuses_another_arch():
    from thinker.models.adapters.cognate_spec import config_settings, spec_violation

    assert spec_violation(compose(["model=cognate-25m"]).model) is None
    changed = compose(["model=cognate-25m", "model.arch.d_model=256"]).model
    assert spec_violation(changed) == "model.arch.d_model=256 differs from the fixed cognate-25m specification (512)"
    with pytest.raises(ThinkerError, match="immutable") as caught:
        config_settings(changed)
    assert caught.value.stage == "train"
    extra = compose(["model=cognate-25m", "+model.arch.n_kv_heads=2"]).model
    assert "n_kv_heads is not a key" in spec_violation(extra)


# ---------------------------------------------------------------- adaptive computation time


def test_halting_weights_sum_to_one_and_steps_stay_within_bounds():
    model = small_model()
    ids = batch()
    mask = torch.ones_like(ids)
    mask[0, :5] = 0  # left padding in the first row
    out = model(ids, attention_mask=mask, labels=ids)
    real = mask.bool()
    assert torch.allclose(out.halting_weights.sum(-1)[real], torch.ones(int(real.sum())), atol=1e-6)
    steps = out.token_ponder_steps
    assert steps[real].min() >= 1 and steps[real].max() <= SMALL["max_ponder_steps"]
    assert (steps[~real] == 0).all()  # padding never ponders
    assert out.ponder_steps == pytest.approx(float(steps[real].mean()))
    assert torch.allclose(out.loss, out.lm_loss + model.config.ponder_weight * out.ponder_cost)
    assert out.ponder_cost > out.ponder_steps - 1  # N + R with R in (0, 1]
    assert 0 < out.memory_write_gate < 1 and 0 < out.memory_read_entropy <= 1 and out.memory_read_norm > 0


def test_halting_follows_the_halting_unit():
    eager = small_model(halt_bias_init=50.0)  # p ~ 1 at the first step
    assert (eager(batch()).token_ponder_steps == 1).all()
    patient = small_model(halt_bias_init=-50.0)  # p ~ 0: every token runs to the cap
    out = patient(batch())
    assert (out.token_ponder_steps == SMALL["max_ponder_steps"]).all()
    assert torch.allclose(out.halting_weights[..., -1], torch.ones(3, 24), atol=1e-6)  # the remainder takes it all


def _ponder_after_training(ponder_weight: float, steps: int = 8) -> tuple[float, float]:
    model = small_model(seed=1, ponder_weight=ponder_weight, halt_bias_init=-1.0).train()
    ids = batch(4, 24, seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    start = float(model(ids).ponder_steps)
    for _ in range(steps):
        loss = model(ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return start, float(model(ids).ponder_steps)


def test_the_ponder_cost_pushes_towards_fewer_steps():
    start, without = _ponder_after_training(0.0)
    same_start, with_cost = _ponder_after_training(1.0)
    assert start == same_start == SMALL["max_ponder_steps"]  # p = sigmoid(-1): every token starts at the cap
    assert with_cost < without - 0.5, (with_cost, without)


# ---------------------------------------------------------------- long-term memory


def test_memory_write_and_read_shapes_and_gate():
    memory = small_model().model.memory
    n, slots, d, chunk = 5, SMALL["memory_slots"], SMALL["d_model"], SMALL["memory_chunk"]
    state = torch.randn(n, slots, d)
    new, gate = memory.write(state, torch.randn(n, d))
    assert new.shape == (n, slots, d) and gate.shape == (n,)
    assert ((gate > 0) & (gate < 1)).all()
    assert not torch.allclose(new, state)
    read, attention = memory.read(torch.randn(n, chunk, d), state)
    assert read.shape == (n, chunk, d) and attention.shape == (n, SMALL["n_heads"], chunk, slots)
    assert torch.allclose(attention.sum(-1), torch.ones(n, SMALL["n_heads"], chunk), atol=1e-6)

    with torch.no_grad():
        memory.write_gate.bias.fill_(-1e4)  # a closed gate
    closed, gate = memory.write(state, torch.randn(n, d))
    assert (gate == 0).all() and torch.equal(closed, state)


def test_a_token_reads_only_what_earlier_chunks_wrote():
    from thinker.models.adapters.cognate_model import token_layout

    memory = small_model().model.memory
    x = torch.randn(1, 16, SMALL["d_model"])  # four chunks of four tokens
    layout = token_layout(x.shape[:2], x.device, SMALL["memory_chunk"], None, None)
    _, before = memory(x, layout)
    changed = x.clone()
    changed[0, 5] += torch.randn(SMALL["d_model"])  # a token of the second chunk (not a constant: norms remove it)
    _, after = memory(changed, layout)
    assert before.versions.shape == (4, SMALL["memory_slots"], SMALL["d_model"])
    assert torch.equal(before.versions[0], memory.memory)  # the initial memory, copied
    # the first two chunks' memories are computed from the same tokens in both calls: equal within fp32 rounding
    # (a leak of the changed token would move them by far more than 1e-6)
    torch.testing.assert_close(after.versions[:2], before.versions[:2], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(after.versions[2], before.versions[2])  # the third chunk reads the second's write
    assert 0 < float(before.read_entropy) <= 1 and float(before.read_norm) > 0 and before.write_gate.shape == (4,)


def test_no_future_leakage_and_no_leakage_across_packed_examples():
    model = small_model()
    ids = batch(1, 24)
    later = ids.clone()
    later[0, 13] = (later[0, 13] + 1) % SMALL["vocab_size"]
    with torch.no_grad():
        a, b = model(ids).logits, model(later).logits
    assert torch.allclose(a[0, :13], b[0, :13], atol=1e-6)
    assert not torch.allclose(a[0, 13:], b[0, 13:], atol=1e-4)

    # a packed row: two examples, positions restarting at 0 (thinker.data.packing); the second sees nothing of
    # the first, by attention or through the memory, so it scores as it does alone
    positions = torch.cat([torch.arange(10), torch.arange(14)])[None]
    with torch.no_grad():
        packed = model(ids, position_ids=positions).logits
        alone = model(ids[:, 10:]).logits
    assert torch.allclose(packed[0, 10:], alone[0], atol=1e-5)


def test_left_padding_does_not_change_a_row():
    model = small_model()
    ids = batch(2, 20)
    mask = torch.ones_like(ids)
    mask[1, :7] = 0
    with torch.no_grad():
        padded = model(ids, attention_mask=mask).logits
        alone = model(ids[1:, 7:]).logits
        right = torch.ones_like(ids)
        right[0, 15:] = 0  # right padding takes the plain causal path, an explicit mask the masked one
        causal_path = model(ids, attention_mask=right).logits
        masked_path = model(ids, attention_mask=right, position_ids=torch.arange(20).expand(2, -1)).logits
    assert torch.allclose(padded[1, 7:], alone[0], atol=1e-5)
    assert torch.allclose(masked_path[0, :15], causal_path[0, :15], atol=1e-5)
    assert torch.allclose(masked_path[1], causal_path[1], atol=1e-5)


# ---------------------------------------------------------------- the KV cache (generation)


def _varied_ponderer():
    """A model whose tokens halt after different numbers of steps, so a later token often ponders longer than
    the tokens it attends to (what the cache must still hold keys and values for)."""
    model = small_model(seed=2, halt_bias_init=-0.5)
    with torch.no_grad():
        model.model.act.halt.weight.normal_(0, 1.0)
    return model


def test_token_by_token_with_the_cache_gives_the_whole_sequence_logits():
    model = _varied_ponderer()
    ids = batch(3, 23, seed=3)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding: the rows cross memory chunks (4 tokens) at different columns
    mask[2, :6] = 0
    with torch.no_grad():
        whole = model(ids, attention_mask=mask)
        out = model(ids[:, :7], attention_mask=mask[:, :7], use_cache=True)  # a prompt, then one token at a time
        cache, pieces = out.past_key_values, [out.logits]
        for t in range(7, 23):
            out = model(ids[:, t:t + 1], attention_mask=mask[:, :t + 1], past_key_values=cache)
            pieces.append(out.logits)
    steps = whole.token_ponder_steps[mask.bool()]
    assert len(steps.unique()) >= 3, steps  # halting varies: the cache must hold every step of every token
    real = mask.bool()
    torch.testing.assert_close(torch.cat(pieces, dim=1)[real], whole.logits[real], rtol=1e-4, atol=1e-5)
    assert len(cache.layers) == SMALL["n_layers"] + SMALL["max_ponder_steps"] * SMALL["act_layers"]
    assert cache.get_seq_length() == 23 and cache.chunk_index.tolist() == [5, 4, 4]  # 23, 20, 17 real tokens


def test_cached_generation_is_the_uncached_greedy_output():
    model = _varied_ponderer()
    prompt = batch(3, 9, seed=4)
    mask = torch.ones_like(prompt)
    mask[1, :3] = 0
    mask[2, :6] = 0
    runs = {}
    for use_cache in (False, True):
        runs[use_cache] = model.generate(input_ids=prompt, attention_mask=mask, max_new_tokens=14, do_sample=False,
                                         use_cache=use_cache, output_scores=True, return_dict_in_generate=True,
                                         pad_token_id=0, eos_token_id=None)
    assert runs[True].past_key_values is not None and runs[False].past_key_values is None
    assert torch.equal(runs[True].sequences, runs[False].sequences)
    torch.testing.assert_close(torch.stack(runs[True].scores), torch.stack(runs[False].scores), rtol=1e-4, atol=1e-5)
    assert model.generation_config.use_cache  # generate() takes the cached path unless told otherwise


def test_a_folder_saved_without_the_cache_generates_with_it(tmp_path):
    from thinker.models.loading import load_causal_lm

    model = small_model()
    model.generation_config.use_cache = False  # what folders saved before the cache existed say
    model.save_pretrained(tmp_path / "old", safe_serialization=True)
    assert json.loads((tmp_path / "old" / "generation_config.json").read_text())["use_cache"] is False
    assert load_causal_lm(str(tmp_path / "old"), method="full", quant=None).generation_config.use_cache is True


def test_the_cache_follows_repeated_rows_and_refuses_packed_positions():
    model = _varied_ponderer()
    ids = batch(1, 10, seed=5)
    with torch.no_grad():
        whole = model(ids.expand(2, -1)).logits
        out = model(ids[:, :6], use_cache=True)  # the serving path: one prefill, its cache repeated per sample
        out.past_key_values.batch_repeat_interleave(2)
        for t in range(6, 10):
            out = model(ids[:, t:t + 1].expand(2, -1), past_key_values=out.past_key_values, logits_to_keep=1)
    torch.testing.assert_close(out.logits[:, 0], whole[:, -1], rtol=1e-4, atol=1e-5)
    packed = torch.cat([torch.arange(4), torch.arange(6)])[None]
    with pytest.raises(ValueError, match="use_cache=False"):
        model(ids, position_ids=packed, use_cache=True)


# ---------------------------------------------------------------- the Hugging Face path


def test_save_and_auto_load_round_trip_and_generate(tmp_path):
    from transformers import AutoModelForCausalLM

    from thinker.models.loading import load_causal_lm

    model = small_model()
    model.save_pretrained(tmp_path / "cognate", safe_serialization=True)
    assert json.loads((tmp_path / "cognate" / "config.json").read_text())["model_type"] == "cognate"
    ids = batch()
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "cognate").eval()
    through_adapter = load_causal_lm(str(tmp_path / "cognate"), method="full", quant=None).eval()
    saved = model.state_dict()
    for loaded in (reloaded.state_dict(), through_adapter.state_dict()):  # the weights come back bit for bit
        assert loaded.keys() == saved.keys() and all(torch.equal(saved[k], v) for k, v in loaded.items())
    with torch.no_grad():
        expected = model(ids).logits
        # the logits within fp32 rounding: safetensors loads tensors at unaligned addresses, where MKL's matmul
        # takes another path (tests/test_model_import.py measured 6e-8)
        torch.testing.assert_close(reloaded(ids).logits, expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(through_adapter(ids).logits, expected, rtol=1e-5, atol=1e-6)

    prompt = ids[:, :6]
    mask = torch.ones_like(prompt)
    mask[0, :2] = 0
    out = reloaded.generate(input_ids=prompt, attention_mask=mask, max_new_tokens=5, do_sample=False,
                            pad_token_id=0, eos_token_id=None)
    assert out.shape == (3, 11) and torch.equal(out[:, :6], prompt)
    # greedy decoding is the argmax of a plain forward pass, one token at a time
    with torch.no_grad():
        first = reloaded(prompt, attention_mask=mask).logits[:, -1].argmax(-1)
    assert torch.equal(out[:, 6], first)


def test_lora_on_all_linear_layers_trains_and_merges():
    from peft import LoraConfig, get_peft_model

    model = small_model().train()
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                  task_type="CAUSAL_LM"))
    wrapped = {name.rsplit(".", 1)[-1] for name, module in peft_model.named_modules() if hasattr(module, "lora_A")}
    assert {"q_proj", "v_proj", "up_proj", "down_proj", "halt", "read_query", "write_gate"} <= wrapped
    assert "lm_head" not in wrapped  # all-linear leaves the output layer alone
    ids = batch()
    optimizer = torch.optim.Adam([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(6):
        loss = peft_model(input_ids=ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0] - 0.1, losses

    peft_model.eval()
    with torch.no_grad():
        adapted = peft_model(input_ids=ids).logits
        generated = peft_model.generate(input_ids=ids[:, :4], max_new_tokens=3, do_sample=False, pad_token_id=0)
        merged = peft_model.merge_and_unload()(ids).logits
    assert generated.shape == (3, 7)
    assert torch.allclose(adapted, merged, atol=1e-5)


def test_gradient_checkpointing_recomputes_the_same_gradients():
    ids = batch()
    plain, checkpointed = small_model().train(), small_model().train()
    checkpointed.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert checkpointed.model.act.blocks[0].gradient_checkpointing  # the shared ACT blocks too
    for model in (plain, checkpointed):
        model(ids, labels=ids).loss.backward()
    for name in ("model.layers.0.attn.q_proj.weight", "model.act.halt.weight", "model.memory.write_gate.weight"):
        grads = [dict(m.named_parameters())[name].grad for m in (plain, checkpointed)]
        assert grads[0].abs().sum() > 0 and torch.allclose(*grads, atol=1e-6), name


def test_qlora_and_flash_attention_are_refused_for_cognate(tmp_path):
    from thinker.models.loading import load_causal_lm

    small_model().save_pretrained(tmp_path / "cognate", safe_serialization=True)
    quant = {"quant_type": "nf4", "double_quant": True, "compute_dtype": "fp32"}
    with pytest.raises(ThinkerError, match="4-bit loading"):
        load_causal_lm(str(tmp_path / "cognate"), method="qlora", quant=quant)
    with pytest.raises(ThinkerError, match="its own attention"):
        load_causal_lm(str(tmp_path / "cognate"), method="lora", quant=None, attn_implementation="flash_attention_2")


# ---------------------------------------------------------------- built locally, registered, merged


def _corpus(tmp_path: Path) -> Path:
    lines = (ROOT / "data/sample/claims.jsonl").read_text().splitlines()[:40]
    path = tmp_path / "claims.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_builtin_cognate_25m_builds_with_its_tokenizer(tmp_path, monkeypatch):
    from thinker.models.builtin import ensure_builtin
    from thinker.models.loading import load_causal_lm, load_tokenizer

    monkeypatch.setenv("THINKER_MODELS_DIR", str(tmp_path / "models"))
    cfg = compose(["model=cognate-25m"]).model
    folder = ensure_builtin(cfg, 3, [_corpus(tmp_path)])
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["parameters"] == EXACT_25M and metadata["family"] == "cognate"
    tokenizer = load_tokenizer(str(folder))
    model = load_causal_lm(str(folder), method="full", quant=None, family="cognate")
    assert type(model).__name__ == "CognateForCausalLM"
    assert len(tokenizer) <= model.config.vocab_size == 8192  # the fixed vocab; a small corpus leaves rows unused
    assert model.config.eos_token_id == tokenizer.eos_token_id

    changed = compose(["model=cognate-25m", "model.arch.n_layers=6"]).model
    with pytest.raises(ThinkerError, match="n_layers=6 differs"):
        ensure_builtin(changed, 3, [_corpus(tmp_path)])


def test_reasoning_records_feed_the_tokenizer_corpus(tmp_path):
    from thinker.models.builtin import _corpus_texts

    path = tmp_path / "gsm8k.jsonl"
    records = [{"question": "What is 2 + 3?", "answer": "2 + 3 = 5\n#### 5"},
               {"question": "Who?", "answer": "Ada", "context": [["Title", ["One.", "Two."]]]},
               {"prompt": "P", "completion": "C", "metadata": {"id": "ignored"}}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert list(_corpus_texts([path])) == ["What is 2 + 3?\n2 + 3 = 5\n#### 5", "Who?\nAda\nTitle\nOne.\nTwo.",
                                           "P\nC"]


def _save_small_with_tokenizer(folder: Path) -> Path:
    from thinker.models.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(["a small corpus for a small cognate tokenizer"] * 20, 300)
    model = small_model(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def _save_tiny_qwen(folder: Path) -> Path:
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=320, max_position_embeddings=64)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder, safe_serialization=True)
    return folder


def test_registry_entries_load_through_their_architectures_adapter(tmp_path):
    from thinker.models.adapter_weights import training_start_point
    from thinker.models.adapters import get_adapter
    from thinker.models.adapters.cognate import CognateAdapter
    from thinker.models.adapters.hf_causal import HFCausalLMAdapter
    from thinker.models.loading import load_causal_lm, load_model_adapter
    from thinker.models.registry import Registry, RegistryEntry
    from thinker.models.registry_options import model_config_for

    registry = Registry(tmp_path / "models")
    cognate = _save_small_with_tokenizer(tmp_path / "models" / "my-cognate")
    qwen = _save_tiny_qwen(tmp_path / "models" / "my-qwen")
    for name, folder, arch in (("my-cognate", cognate, "cognate"), ("my-qwen", qwen, "qwen2")):
        registry.add(lambda entries, n=name, f=folder, a=arch: RegistryEntry(
            model_name=n, model_id=n, source="custom", architecture=a, local_path=str(f),
            supports_4bit=get_adapter(a).supports_4bit))

    ids = batch(2, 8)

    def load_registered(name):  # a LoRA fine-tune's folder holds an adapter: its merged weights are loaded
        entry = registry.get(name)
        return load_model_adapter(training_start_point(entry.local_path), family=entry.architecture)

    loaded = {name: load_registered(name) for name in ("my-cognate", "my-qwen")}
    assert type(loaded["my-cognate"]) is CognateAdapter and type(loaded["my-qwen"]) is HFCausalLMAdapter
    for adapter in loaded.values():
        out = adapter.forward(ids, labels=ids)
        assert out.logits.shape == (2, 8, 320) and out.loss is not None
    assert loaded["my-cognate"].config()["memory_slots"] == SMALL["memory_slots"]

    # model=<registry name>: the option's family picks the same adapter as the entry's architecture
    option = model_config_for(registry.get("my-cognate"))
    assert (option.family, option.supports_4bit) == ("cognate", False)
    model = load_causal_lm(option.source, method="lora", quant=None, family=option.family)
    with torch.no_grad():  # the same weights through either loader, so within fp32 rounding
        torch.testing.assert_close(model(ids).logits, loaded["my-cognate"].model(ids).logits, rtol=1e-5, atol=1e-6)
    with pytest.raises(ThinkerError, match="holds a cognate model, not the qwen2"):
        load_causal_lm(str(cognate), method="full", quant=None, family="qwen2")


def test_a_cognate_lora_adapter_merges_like_a_qwen_one(tmp_path):
    from peft import LoraConfig, get_peft_model

    from thinker.models.loading import load_causal_lm
    from thinker.models.merge import merge_adapter

    base = _save_small_with_tokenizer(tmp_path / "base")
    model = load_causal_lm(str(base), method="lora", quant=None)
    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                  init_lora_weights=False, task_type="CAUSAL_LM"))
    weights = tmp_path / "run" / "weights"
    peft_model.save_pretrained(weights)
    (weights / "metadata.json").write_text(json.dumps({"base_path": str(base), "method": "lora"}))
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(base).save_pretrained(weights)  # training saves the tokenizer beside the adapter

    out = merge_adapter(tmp_path / "run", tmp_path / "merged")
    merged = load_causal_lm(str(out), method="full", quant=None).eval()
    ids = batch(2, 10)
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, peft_model.eval()(input_ids=ids).logits, atol=1e-5)
    assert json.loads((out / "config.json").read_text())["model_type"] == "cognate"


@pytest.mark.slow
def test_a_registered_cognate_model_fine_tunes_chats_and_merges_like_any_other(tmp_path):
    """`thinker models import` a Cognate folder, then `model=<its name> method=lora` trains it through the local
    backend, `thinker chat` samples it and `thinker models merge` merges it; qlora is refused at config check."""
    import subprocess
    import sys

    from conftest import clean_env, launch

    from thinker.errors import ExitCode
    from thinker.models.registry import Registry

    models = tmp_path / "models"
    env = clean_env(THINKER_MODELS_DIR=str(models), HF_HUB_OFFLINE="1")

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "thinker.commands.cli", *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300, stdin=subprocess.DEVNULL, env=env)

    source = _save_small_with_tokenizer(tmp_path / "my-cognate")
    out = cli("models", "import", str(source), "--accept-license")
    assert out.returncode == 0, out.stderr
    entry = Registry(models).get("my-cognate")
    assert (entry.architecture, entry.supports_4bit) == ("cognate", False)

    data = tmp_path / "short.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Claim {i}?", "completion": f"CLAIM[c1]: claim {i}"}) + "\n"
                            for i in range(16)))
    quick = ["trainer.max_steps=2", "trainer.max_seq_length=64", "data=jsonl", f"data.path={data}", "logger=none",
             "validation.pytest.enabled=false", "trainer.evaluations=1", "evaluation.enabled=false",
             "output.register_min_steps=1"]
    out = launch(["model=my-cognate", "method=lora", *quick, "hydra.run.dir=run1"], cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    record = json.loads((tmp_path / "run1" / "run_record.json").read_text())
    fine_tune = Registry(models).get(record["stages"]["train"]["registered_as"])
    assert fine_tune.fine_tuned_from == "my-cognate" and fine_tune.architecture == "cognate"

    out = cli("chat", str(tmp_path / "run1"), "--prompt", "Claim 3?", "--max-new-tokens", "4")
    assert out.returncode == 0, out.stderr[-3000:]
    out = cli("models", "merge", str(tmp_path / "run1"), "--out", str(tmp_path / "merged"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((tmp_path / "merged" / "config.json").read_text())["model_type"] == "cognate"

    refused = launch(["model=my-cognate", "method=qlora", *quick, "hydra.run.dir=run2"], cwd=tmp_path, env=env)
    assert refused.returncode == int(ExitCode.CONFIG) and "4-bit" in refused.stderr


def test_a_prompt_of_padding_alone_generates_the_same_with_the_cache():
    """generate() numbers a row whose prompt is all padding from 1 (its padding at 0): the cache takes the
    positions it is given, as the uncached pass does."""
    model = _varied_ponderer()
    prompt = batch(2, 5, seed=6)
    mask = torch.ones_like(prompt)
    mask[1] = 0
    runs = [model.generate(input_ids=prompt, attention_mask=mask, max_new_tokens=6, do_sample=False,
                           use_cache=use_cache, pad_token_id=0, eos_token_id=None) for use_cache in (False, True)]
    assert torch.equal(runs[0], runs[1])
