"""thinker.models: the locally built tokenizer and builtin model, loading (safetensors only, 4 bit on CPU),
hub errors, parameter counting, and padding-free packed sequences."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest
from conftest import ROOT
from omegaconf import OmegaConf

from thinker.errors import ThinkerError

# small enough that tokenizer training and the model build take well under a second
TINY_ARCH = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "vocab_size": 512,
    "tie_word_embeddings": True,
}
QLORA = {"quant_type": "nf4", "double_quant": True, "compute_dtype": "fp32"}
SEED = 7


def tiny_model_cfg(**changes):
    cfg = {"name": "tiny-test", "family": "qwen2", "source": "builtin", "revision": None, "arch": TINY_ARCH}
    return OmegaConf.create({**cfg, **changes})


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """The first 40 records of the shipped sample data: realistic text, fast to train on."""
    lines = (ROOT / "data/sample/claims.jsonl").read_text().splitlines()[:40]
    path = tmp_path_factory.mktemp("corpus") / "claims.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def built(tmp_path_factory, corpus) -> Path:
    """One builtin model shared by the loading tests (building it per test would only cost time)."""
    from thinker.models.builtin import ensure_builtin

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("THINKER_MODELS_DIR", str(tmp_path_factory.mktemp("models")))
        return ensure_builtin(tiny_model_cfg(), SEED, [corpus])


@pytest.fixture
def models_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "models"
    monkeypatch.setenv("THINKER_MODELS_DIR", str(home))
    return home


def corpus_texts(corpus: Path) -> list[str]:
    records = [json.loads(line) for line in corpus.read_text().splitlines()]
    return [f"{r['prompt']}\n{r['completion']}" for r in records]


# ---------------------------------------------------------------- paths and tokenizer


def test_models_dir_is_env_or_cwd_models(tmp_path, monkeypatch):
    from thinker.models.paths import models_dir

    monkeypatch.setenv("THINKER_MODELS_DIR", str(tmp_path / "elsewhere"))
    assert models_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("THINKER_MODELS_DIR")
    monkeypatch.chdir(tmp_path)
    assert models_dir() == tmp_path / "models"


def test_tokenizer_is_deterministic_with_qwen_special_tokens(corpus):
    from thinker.models.tokenizer import train_tokenizer

    texts = corpus_texts(corpus)
    first, second = train_tokenizer(texts, 512), train_tokenizer(texts, 512)

    assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str()
    assert len(first) == 512
    assert (first.eos_token, first.pad_token, first.bos_token) == ("<|endoftext|>", "<|endoftext|>", None)
    assert first.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [0, 1, 2]
    text = "CLAIM[c2] (Document 12): naïve ünïcode 😀\nRELATION: c2 supports c1<|im_end|>"
    ids = first(text)["input_ids"]
    assert ids == second(text)["input_ids"]
    assert ids[-1] == 2  # special tokens stay whole
    assert first.decode(ids) == text  # byte level: any text round-trips


def test_tokenizer_refuses_a_vocab_below_the_byte_alphabet():
    from thinker.models.tokenizer import train_tokenizer

    with pytest.raises(ValueError, match="byte-level minimum"):
        train_tokenizer(["a b c"], 100)


# ---------------------------------------------------------------- builtin model


def test_builtin_build_is_deterministic(tmp_path, monkeypatch, corpus, built):
    from transformers import AutoTokenizer

    from thinker.models.builtin import builtin_dir, ensure_builtin

    monkeypatch.setenv("THINKER_MODELS_DIR", str(tmp_path / "again"))
    again = ensure_builtin(tiny_model_cfg(), SEED, [corpus])

    assert again.name == built.name  # same hash: arch, seed, corpus and format version
    assert again == builtin_dir(tiny_model_cfg(), SEED, [corpus])
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (again / name).read_bytes() == (built / name).read_bytes(), name
    metadata = json.loads((again / "metadata.json").read_text())
    assert metadata["source"] == "builtin" and metadata["seed"] == SEED and metadata["arch"] == TINY_ARCH
    config = json.loads((again / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(again)
    assert config["vocab_size"] == len(tokenizer) == 512
    assert config["eos_token_id"] == config["pad_token_id"] == tokenizer.eos_token_id
    assert config["bos_token_id"] is None


def test_builtin_is_reused_not_rebuilt(models_home, monkeypatch, corpus):
    from thinker.models import builtin

    first = builtin.ensure_builtin(tiny_model_cfg(), SEED, [corpus])
    assert (first / builtin.COMPLETE_MARKER).is_file()

    def no_rebuild(*args, **kwargs):
        raise AssertionError("a complete builtin model was built again")

    monkeypatch.setattr(builtin, "_build_into", no_rebuild)
    assert builtin.ensure_builtin(tiny_model_cfg(), SEED, [corpus]) == first
    # what the weights depend on changes the folder
    assert builtin.builtin_dir(tiny_model_cfg(), SEED + 1, [corpus]) != first
    bigger = tiny_model_cfg(arch={**TINY_ARCH, "num_hidden_layers": 3})
    assert builtin.builtin_dir(bigger, SEED, [corpus]) != first
    assert [p.name for p in (models_home / "builtin").iterdir()] == [first.name]  # no temp dir left behind


def test_builtin_rejects_a_family_it_cannot_build(models_home, corpus):
    from thinker.models.builtin import ensure_builtin

    with pytest.raises(ThinkerError, match="cannot be built") as caught:
        ensure_builtin(tiny_model_cfg(family="llama"), SEED, [corpus])
    assert caught.value.stage == "train"


def test_a_new_family_is_one_entry_in_the_family_table(models_home, corpus, monkeypatch):
    """The adapters, the importer and the builder all read thinker.models.families: one entry there (here
    Mistral, which transformers ships) makes the family buildable, loadable and importable."""
    from thinker.models import families
    from thinker.models.adapters import adapter_for, get_adapter
    from thinker.models.adapters.hf_causal import HFCausalLMAdapter
    from thinker.models.builtin import ensure_builtin
    from thinker.models.importer import ImportSource, check_architecture

    monkeypatch.setitem(families.FAMILIES, "mistral", families.Family(
        "mistral", families.HF_CAUSAL, config_class="transformers:MistralConfig"))

    folder = ensure_builtin(tiny_model_cfg(family="mistral"), SEED, [corpus])
    assert json.loads((folder / "config.json").read_text())["model_type"] == "mistral"
    assert get_adapter("mistral") is HFCausalLMAdapter and adapter_for(folder, "mistral") is HFCausalLMAdapter
    assert check_architecture(ImportSource(str(folder), None, model_type="mistral")) == "mistral"


def _build_in_child(models_home: str, corpus: str, barrier) -> str:
    os.environ["THINKER_MODELS_DIR"] = models_home
    import transformers  # noqa: F401  (import before the barrier, so the builds themselves race)

    from thinker.models.builtin import ensure_builtin

    barrier.wait()
    return str(ensure_builtin(tiny_model_cfg(), SEED, [Path(corpus)]))


@pytest.mark.slow
def test_concurrent_builds_end_with_one_valid_folder(models_home, corpus, built):
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        barrier = manager.Barrier(4)
        args = [(str(models_home), str(corpus), barrier)] * 4
        with context.Pool(4) as pool:
            paths = pool.starmap(_build_in_child, args, chunksize=1)
            pool.close()
            pool.join()

    assert len(set(paths)) == 1
    folder = Path(paths[0])
    assert [p.name for p in (models_home / "builtin").iterdir()] == [folder.name]  # temp dirs discarded
    assert (folder / "COMPLETE").is_file()
    # built in other processes, yet byte-identical to the one built in this process
    for name in ("model.safetensors", "tokenizer.json"):
        assert (folder / name).read_bytes() == (built / name).read_bytes(), name


# ---------------------------------------------------------------- resolving and loading


def test_resolve_model_path(models_home, corpus, tmp_path):
    from thinker.models.loading import resolve_model_path

    assert resolve_model_path(tiny_model_cfg(), SEED, [corpus]).startswith(str(models_home))
    assert resolve_model_path(tiny_model_cfg(source=str(tmp_path)), SEED, []) == str(tmp_path)
    hub_id = "Qwen/Qwen2.5-0.5B-Instruct"
    assert resolve_model_path(tiny_model_cfg(source=hub_id), SEED, []) == hub_id
    with pytest.raises(ThinkerError, match="does not exist"):
        resolve_model_path(tiny_model_cfg(source=str(tmp_path / "missing" / "model")), SEED, [])


def test_load_from_a_folder_written_by_save_pretrained(built, tmp_path):
    import torch

    from thinker.models.loading import load_causal_lm, load_tokenizer

    model = load_causal_lm(str(built), method="full", quant=None)
    assert model.config._attn_implementation == "sdpa"
    model.save_pretrained(tmp_path / "saved")
    load_tokenizer(str(built)).save_pretrained(tmp_path / "saved")

    reloaded = load_causal_lm(str(tmp_path / "saved"), method="lora", quant=None)
    tokenizer = load_tokenizer(str(tmp_path / "saved"))
    assert tokenizer.pad_token == "<|endoftext|>"
    for (name, expected), actual in zip(
        model.state_dict().items(), reloaded.state_dict().values(), strict=True
    ):
        assert torch.equal(expected, actual), name


def test_pickle_only_folder_is_refused(built, tmp_path):
    import shutil

    import torch

    from thinker.models.loading import load_causal_lm

    folder = tmp_path / "pickled"
    folder.mkdir()
    shutil.copy(built / "config.json", folder)
    torch.save({"w": torch.zeros(1)}, folder / "pytorch_model.bin")
    with pytest.raises(ThinkerError, match="safetensors only") as caught:
        load_causal_lm(str(folder), method="full", quant=None)
    assert "pytorch_model.bin" in caught.value.what and caught.value.stage == "train"

    (folder / "pytorch_model.bin").unlink()
    with pytest.raises(ThinkerError, match="no model weights"):
        load_causal_lm(str(folder), method="full", quant=None)


def test_missing_hub_model_offline_is_a_thinker_error(monkeypatch):
    import huggingface_hub.constants

    from thinker.models.loading import load_causal_lm, load_tokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read once, at import
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_secret")
    for load in (load_tokenizer, lambda source: load_causal_lm(source, method="full", quant=None)):
        with pytest.raises(ThinkerError, match="could not download thinker-test/no-such-model") as caught:
            load("thinker-test/no-such-model")
        assert "HF_TOKEN" in caught.value.fix
        assert "hf_not_a_real_secret" not in caught.value.line()
        assert "\n" not in caught.value.line()


def test_gated_repo_error_names_hf_token_without_its_value(monkeypatch):
    import httpx
    from huggingface_hub.errors import GatedRepoError

    from thinker.models.loading import hub_errors

    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_secret")
    request = httpx.Request("GET", "https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct")
    gated = GatedRepoError("403 gated", response=httpx.Response(403, request=request))
    with (
        pytest.raises(ThinkerError, match="gated") as caught,
        hub_errors("meta-llama/Llama-3.1-8B-Instruct", None),
    ):
        raise OSError("You are trying to access a gated repo.") from gated
    assert "HF_TOKEN" in caught.value.line() and "hf_not_a_real_secret" not in caught.value.line()


def test_load_dtype_must_be_a_float_precision(built):
    from thinker.models.loading import load_causal_lm

    with pytest.raises(ThinkerError, match="cannot be used to load weights"):
        load_causal_lm(str(built), method="full", quant=None, dtype="int8")


# ---------------------------------------------------------------- 4 bit on CPU and counting


def test_qlora_loads_in_4bit_on_cpu_and_trains_lora_adapters(built):
    import bitsandbytes as bnb
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    from thinker.models.loading import count_parameters, load_causal_lm

    model = load_causal_lm(str(built), method="qlora", quant=QLORA)
    assert isinstance(model.model.layers[0].self_attn.q_proj, bnb.nn.Linear4bit)
    assert model.model.layers[0].self_attn.q_proj.weight.device.type in {"cpu", "cuda"}
    full = load_causal_lm(str(built), method="full", quant=None)
    assert count_parameters(model)[1] == count_parameters(full)[1]  # packed 4-bit weights counted logically

    ids = torch.randint(3, 512, (2, 12), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(model(input_ids=ids).logits).all()

    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    assert count_parameters(peft_model) == peft_model.get_nb_trainable_parameters()
    loss = peft_model(input_ids=ids, labels=ids, use_cache=False).loss
    loss.backward()
    grads = [p.grad for n, p in peft_model.named_parameters() if "lora_B" in n]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_count_parameters_of_a_full_model(built):
    from thinker.models.loading import count_parameters, load_causal_lm

    model = load_causal_lm(str(built), method="full", quant=None)
    total = sum(p.numel() for p in model.parameters())
    assert count_parameters(model) == (total, total)
    model.model.embed_tokens.weight.requires_grad_(False)
    assert count_parameters(model) == (total - model.model.embed_tokens.weight.numel(), total)
    assert total == json.loads((built / "metadata.json").read_text())["parameters"]


# ---------------------------------------------------------------- padding-free packing


def _pack(examples, rows, length):
    """Concatenate examples per row; position_ids restart at 0 per example and for the trailing padding."""
    import torch

    ids, positions = [], []
    for row in rows:
        tokens = torch.cat([examples[i] for i in row])
        pad = length - len(tokens)
        ids.append(torch.cat([tokens, torch.zeros(pad, dtype=torch.long)]))
        positions.append(torch.cat([*(torch.arange(len(examples[i])) for i in row), torch.arange(pad)]))
    return torch.stack(ids), torch.stack(positions)


@pytest.mark.parametrize("method", ["full", "qlora"])
def test_packed_sequences_do_not_attend_across_examples(built, method):
    """transformers builds a block-diagonal causal mask from restarting position_ids when attention_mask
    is None and no KV cache exists: use_cache=False is required (the config default creates a cache, and
    then packing is not detected and examples attend to each other)."""
    import torch

    from thinker.models.loading import load_causal_lm

    model = load_causal_lm(str(built), method=method, quant=QLORA).eval()
    generator = torch.Generator().manual_seed(0)
    examples = [torch.randint(3, 512, (n,), generator=generator) for n in (5, 7, 4, 9)]
    with torch.no_grad():
        alone = [model(input_ids=e[None], use_cache=False).logits[0] for e in examples]
        for rows, length in [
            ([[0, 1, 2]], 16),
            ([[0, 1, 2]], 20),
            ([[0, 1], [2, 3]], 14),
            ([[3], [1, 0, 2]], 17),
        ]:
            ids, positions = _pack(examples, rows, length)
            logits = model(input_ids=ids, position_ids=positions, attention_mask=None, use_cache=False).logits
            for b, row in enumerate(rows):
                start = 0
                for i in row:
                    end = start + len(examples[i])
                    torch.testing.assert_close(logits[b, start:end], alone[i], atol=1e-5, rtol=0)
                    start = end
