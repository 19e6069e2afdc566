"""`thinker models import`: from a save_pretrained folder and from the hub cache (offline), with license
acknowledgement, disk checks, versioned re-imports and refusal of pickle-only weights; plus the adapters."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import clean_env

from thinker.errors import ExitCode, ThinkerError
from thinker.models.registry import Registry

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    """A tiny random Qwen2 causal LM with a locally trained tokenizer, written by save_pretrained."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from thinker.models.tokenizer import train_tokenizer

    folder = tmp_path_factory.mktemp("src") / "tiny-import"
    tokenizer = train_tokenizer(["a small corpus for a small tokenizer"] * 20, 300)
    config = Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=64,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    (folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n# tiny\n")
    return folder


def thinker_cli(args: list[str], models: Path, **env: str) -> subprocess.CompletedProcess:
    # stdin from /dev/null: not a terminal, so the license needs --accept-license
    return subprocess.run([sys.executable, "-m", "thinker.commands.cli", *args], cwd=models.parent, capture_output=True,
                          text=True, timeout=180, stdin=subprocess.DEVNULL,
                          env=clean_env(THINKER_MODELS_DIR=str(models), **env))


def test_import_local_folder_then_reimport_is_versioned(tiny_folder, tmp_path):
    models = tmp_path / "models"
    out = thinker_cli(["models", "import", str(tiny_folder), "--accept-license"], models)
    assert out.returncode == 0, out.stderr
    assert "license: apache-2.0" in out.stdout and "GiB" in out.stdout

    first = Registry(models).get("tiny-import")
    assert (first.source, first.architecture, first.license, first.version) == ("local", "qwen2", "apache-2.0", 1)
    assert Path(first.local_path) == (models / "tiny-import").resolve()
    assert (models / "tiny-import" / "model.safetensors").is_file()
    assert json.loads((models / "tiny-import" / "metadata.json").read_text())["registry"]["model_name"] == "tiny-import"

    out = thinker_cli(["models", "import", str(tiny_folder), "--accept-license"], models)
    assert out.returncode == 0, out.stderr
    second = Registry(models).get("tiny-import-v2")
    assert second.version == 2 and second.model_id == first.model_id

    listing = thinker_cli(["models", "list"], models)
    assert listing.returncode == 0 and "tiny-import-v2" in listing.stdout
    info = thinker_cli(["models", "info", "tiny-import"], models)
    assert json.loads(info.stdout)["license"] == "apache-2.0"


def test_license_must_be_acknowledged(tiny_folder, tmp_path, monkeypatch):
    models = tmp_path / "models"
    out = thinker_cli(["models", "import", str(tiny_folder)], models)
    assert out.returncode == int(ExitCode.CONFIG)
    assert out.stderr.strip().startswith("[thinker] error: the license") and "--accept-license" in out.stderr
    assert not (models / "tiny-import").exists() and Registry(models).entries() == []

    # at a terminal it asks; anything but yes refuses
    from thinker.models import importer

    monkeypatch.setenv("THINKER_MODELS_DIR", str(models))
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    with pytest.raises(ThinkerError, match="not accepted"):
        importer.import_model(str(tiny_folder), ask=lambda prompt: "n")
    entry = importer.import_model(str(tiny_folder), ask=lambda prompt: "y")
    assert entry.model_name == "tiny-import"


def test_import_from_the_hub_cache_offline(tiny_folder, tmp_path):
    cache = tmp_path / "hub"
    repo = cache / "models--tiny-org--tiny-qwen2"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for path in tiny_folder.iterdir():
        (snapshot / path.name).write_bytes(path.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)

    models = tmp_path / "models"
    out = thinker_cli(["models", "import", "https://huggingface.co/tiny-org/tiny-qwen2", "--accept-license"],
                      models, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache))
    assert out.returncode == 0, out.stderr
    entry = Registry(models).get("tiny-qwen2")
    assert (entry.model_id, entry.source, entry.license) == ("tiny-org/tiny-qwen2", "huggingface", "apache-2.0")
    assert (models / "tiny-qwen2" / "model.safetensors").is_file()

    missing = thinker_cli(["models", "import", "tiny-org/not-cached", "--accept-license"], models,
                          HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache))
    assert missing.returncode == int(ExitCode.RECORD) and "[thinker] error:" in missing.stderr


def test_pickle_only_folder_is_refused(tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    out = thinker_cli(["models", "import", str(folder), "--accept-license"], tmp_path / "models")
    assert out.returncode == int(ExitCode.RECORD)
    assert "only pickle weights (pytorch_model.bin)" in out.stderr and "safetensors" in out.stderr


def test_names_must_not_shadow_shipped_options(tiny_folder, tmp_path):
    out = thinker_cli(["models", "import", str(tiny_folder), "--name", "tiny-qwen", "--accept-license"],
                      tmp_path / "models")
    assert out.returncode == int(ExitCode.RECORD) and "shipped model option" in out.stderr


def test_too_small_disk_is_refused_before_copying(tiny_folder, tmp_path, monkeypatch):
    from collections import namedtuple

    from thinker.models import importer

    monkeypatch.setenv("THINKER_MODELS_DIR", str(tmp_path / "models"))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(importer.shutil, "disk_usage", lambda path: usage(100, 90, 10))
    with pytest.raises(ThinkerError, match="not enough disk space"):
        importer.import_model(str(tiny_folder), accept_license=True)
    assert not (tmp_path / "models" / "tiny-import").exists()


def test_hf_adapter_loads_an_imported_model(tiny_folder):
    import torch

    from thinker.models.adapters import get_adapter

    adapter = get_adapter("qwen2").load(tiny_folder)
    assert adapter.config()["hidden_size"] == 32 and adapter.config()["num_hidden_layers"] == 2
    out = adapter.forward(torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2, 3]]))
    assert out.logits.shape[-1] == adapter.config()["vocab_size"] and out.loss is not None


def test_cognate_adapter_round_trips(tmp_path):
    import torch

    from thinker.models.adapters import get_adapter

    cognate = get_adapter("cognate")
    # param_budget=None: a small spec for tests (the 25M budget applies to the fixed cognate-25m spec)
    adapter = cognate.build({"vocab_size": 50, "d_model": 32, "n_layers": 2, "n_heads": 4, "d_ff": 64,
                             "memory_slots": 4, "memory_chunk": 2, "max_seq_len": 16, "param_budget": None}, seed=0)
    ids = torch.tensor([[1, 2, 3, 4]])
    before = adapter.forward(ids, labels=ids)
    folder = adapter.save(tmp_path / "cognate")
    assert json.loads((folder / "config.json").read_text())["model_type"] == "cognate"
    loaded = cognate.load(folder)
    after = loaded.forward(ids, labels=ids)
    # the weights come back bit for bit; the logits only within fp32 rounding: safetensors loads tensors at
    # unaligned addresses, and MKL's matmul takes another path for those (5.96e-8 apart on an AMD EPYC)
    saved, reloaded = adapter.model.state_dict(), loaded.model.state_dict()
    assert saved.keys() == reloaded.keys() and all(torch.equal(saved[k], reloaded[k]) for k in saved)
    torch.testing.assert_close(after.logits, before.logits, rtol=1e-5, atol=1e-6)
    assert before.loss is not None and float(after.loss) == pytest.approx(float(before.loss), rel=1e-6)
    assert loaded.config()["n_layers"] == 2 and not cognate.supports_4bit


@pytest.mark.slow
def test_training_a_registry_model_registers_the_fine_tune(tiny_folder, tmp_path):
    from conftest import launch

    models = tmp_path / "models"
    env = clean_env(THINKER_MODELS_DIR=str(models), HF_HUB_OFFLINE="1")
    assert thinker_cli(["models", "import", str(tiny_folder), "--accept-license"], models).returncode == 0
    # short records: the tiny imported tokenizer is byte-level, so the shipped claims would not fit 64 tokens
    data = tmp_path / "short.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Claim {i}?", "completion": f"CLAIM[c1]: claim {i}"}) + "\n"
                            for i in range(16)))
    quick = ["method=full", "trainer.max_steps=2", "trainer.max_seq_length=64", "data=jsonl", f"data.path={data}",
             "logger=none", "validation.pytest.enabled=false", "trainer.evaluations=1", "evaluation.enabled=false",
             "output.register_min_steps=1"]  # a 2-step run is a smoke run, registered only on request

    out = launch(["model=tiny-import", *quick, "hydra.run.dir=run1"], cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    record = json.loads((tmp_path / "run1" / "run_record.json").read_text())
    first = Registry(models).get(record["stages"]["train"]["registered_as"])
    assert first.model_name.startswith("tiny-import-finetuned-") and first.fine_tuned_from == "tiny-import"
    metadata = json.loads((tmp_path / "run1" / "weights" / "metadata.json").read_text())
    assert metadata["registered_as"] == first.model_name and metadata["fine_tuned_from"] == "tiny-import"

    out = launch([f"model={first.model_name}", *quick, "output.name=second", "hydra.run.dir=run2"],
                 cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert [e.model_name for e in Registry(models).lineage("second")] == ["second", first.model_name, "tiny-import"]

    again = launch([f"model={first.model_name}", *quick, "output.name=second", "hydra.run.dir=run3"],
                   cwd=tmp_path, env=env)
    assert again.returncode == int(ExitCode.CONFIG) and "already registered" in again.stderr
    assert "train" not in json.loads((tmp_path / "run3" / "run_record.json").read_text())["stages"]


def test_hub_metadata_is_checked_before_any_download(tmp_path, monkeypatch):
    """Not cached: the repo's file sizes and files decide (too big for the disk, pickle only) before a byte moves."""
    from types import SimpleNamespace

    import huggingface_hub

    from thinker.models import importer

    monkeypatch.setenv("THINKER_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(importer, "cached_snapshot", lambda source: None)
    files = [SimpleNamespace(rfilename="model.safetensors", size=10**15), SimpleNamespace(rfilename="config.json", size=9)]
    info = SimpleNamespace(siblings=files, card_data=None, config={"model_type": "qwen2"})
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda self, *a, **k: info)
    monkeypatch.setattr(importer, "fetch_into", lambda *a: pytest.fail("downloaded despite a failed check"))

    with pytest.raises(ThinkerError, match="not enough disk space"):
        importer.import_model("big-org/huge", accept_license=True)
    files[0] = SimpleNamespace(rfilename="pytorch_model.bin", size=10)
    with pytest.raises(ThinkerError, match="only pickle weights"):
        importer.import_model("big-org/pickled", accept_license=True)


def test_an_import_that_loses_a_race_for_its_name_says_the_other_one_registered_it(tiny_folder, tmp_path,
                                                                                    monkeypatch):
    """Two imports under one --name at the same time: the one that finishes copying second finds the name
    registered by the other, and says so (not "exists but is not registered")."""
    from thinker.models import importer

    monkeypatch.setenv("THINKER_MODELS_DIR", str(tmp_path / "models"))
    fetch = importer.fetch_into

    def fetch_while_another_import_finishes(source, staging):
        fetch(source, staging)
        monkeypatch.setattr(importer, "fetch_into", fetch)  # the other import copies as usual
        importer.import_model(str(tiny_folder), name="shared", accept_license=True)

    monkeypatch.setattr(importer, "fetch_into", fetch_while_another_import_finishes)
    with pytest.raises(ThinkerError) as lost:
        importer.import_model(str(tiny_folder), name="shared", accept_license=True)
    line = lost.value.line()
    assert "'shared' was registered by another import while this one was copying" in line, line
    assert "is not registered" not in line and "model=shared" in line
    assert lost.value.exit_code == ExitCode.RECORD
    registry = Registry(tmp_path / "models")
    assert [e.model_name for e in registry.entries()] == ["shared"]
    assert sorted(p.name for p in (tmp_path / "models").iterdir() if p.name.startswith(".import-")) == []
