"""The config fingerprint means "same training": it changes with everything that changes the trained weights
(hyperparameters, data content, model weights) and with nothing else (logging, evaluation, outputs, spelling)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import ROOT, compose
from omegaconf import OmegaConf

from thinker.tracking import file_hashes
from thinker.tracking import fingerprint as fp
from thinker.tracking.fingerprint import config_fingerprint, fingerprint_inputs, resolved_container

SAMPLE = "data/sample/claims.jsonl"


@pytest.fixture(autouse=True)
def _private_hash_cache(tmp_path, monkeypatch):
    """Each test starts with empty hash caches, kept out of the repository's models/."""
    monkeypatch.setenv("THINKER_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setattr(file_hashes, "_memory", {})


def plain(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=False)


def write(path: Path, text: str, age_s: float = 0.0) -> Path:
    path.write_text(text)
    if age_s:  # old enough for the hash cache to trust its timestamps
        then = os.stat(path).st_mtime - age_s
        os.utime(path, (then, then))
    return path


def test_stable_across_compositions():
    assert config_fingerprint(compose()) == config_fingerprint(compose())


def test_ignores_key_order():
    cfg = compose()
    data = OmegaConf.to_container(cfg, resolve=False)
    reordered = OmegaConf.create(dict(reversed(list(data.items()))))
    reordered.optimizer = OmegaConf.create(dict(reversed(list(data["optimizer"].items()))))
    reordered.trainer = OmegaConf.create(dict(reversed(list(data["trainer"].items()))))
    assert list(reordered.keys()) != list(cfg.keys())
    assert list(reordered.optimizer.keys()) != list(cfg.optimizer.keys())
    assert config_fingerprint(reordered) == config_fingerprint(cfg)


def test_is_sha256_hex_of_the_inputs():
    import hashlib

    cfg = compose()
    digest = config_fingerprint(cfg)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert digest == hashlib.sha256(fp.canonical_json(fingerprint_inputs(cfg)).encode()).hexdigest()
    assert digest == fp.fingerprint_of(fingerprint_inputs(cfg))
    json.dumps(fingerprint_inputs(cfg))  # plain JSON: it can go into the run record as it is


@pytest.mark.parametrize(
    "override",
    [
        "logger=none", "logger.tracking_uri=sqlite:///x.db", "logger.experiment_name=other",
        "evaluation.max_samples=3", "evaluation.enabled=false", "evaluation.decoding.do_sample=true",
        "validation.enabled=false", "validation.max_errors_shown=3", "validation.pytest.enabled=false",
        "trainer.log_every_n_steps=5", "trainer.save_total_limit=3", "trainer.evaluations=2",
        "trainer.accelerator=gpu", "trainer.optimizations=[sequence_packing,gradient_checkpointing]",
        "trainer.optimizations=[sequence_packing,fused_kernels]", "trainer.compile=true",
        "output.dir=/somewhere/else", "output.name=my-run", "stage=validate", "debug=true", "resume=true",
        "data.schema=[]",
    ],
)
def test_unchanged_by_what_does_not_change_training(override):
    changed = compose([override])
    assert plain(changed) != plain(compose()), f"{override} did not change the config; pick another value"
    assert config_fingerprint(changed) == config_fingerprint(compose())


@pytest.mark.parametrize(
    "override",
    [
        # optimizer, scheduler included
        "optimizer.lr=0.0003", "optimizer.weight_decay=0.1", "optimizer.max_grad_norm=0.5",
        "optimizer.betas=[0.8,0.99]", "optimizer.eps=1e-6", "optimizer=sgd",
        "optimizer.scheduler.type=linear", "optimizer.scheduler.warmup_ratio=0.1",
        "optimizer.scheduler.min_lr_ratio=0.1",
        # method
        "method=lora", "method=full", "method.rank=32", "method.alpha=64", "method.dropout=0.2",
        "method.target_modules='q_proj,v_proj'", "method.quant_type=fp4", "method.double_quant=false",
        # trainer schedule
        "trainer.max_steps=10", "trainer.epochs=1", "trainer.batch_size=2", "trainer.grad_accum=2",
        "trainer.max_seq_length=256", "trainer.precision=bf16", "trainer.train_on_inputs=enabled",
        "trainer.optimizations=[]", "trainer.devices=2", "trainer.strategy=ddp",
        # data: what is trained on and how it is weighted
        "data.validation_split=0.2", "data.max_examples=10", "data.shuffle=false",
        "data.claim_c1_weight=3.0", "data.evidence_weight=1.0", "data.format=prompt_completion",
        "data.prompt_field=question", f"data.path={ROOT / 'data/sample/claims_dev.jsonl'}",
        # model identity
        "model=qwen-0.5b", "model.family=qwen3", "model.arch.hidden_size=96",
        "model.tokenizer_corpus=[data/sample/claims_dev.jsonl]",
        # where it trains, and the run seed (also the builtin model's initialisation)
        "backend=tinker", "seed=7",
    ],
)
def test_changes_with_every_training_input(override):
    changed = compose([override])
    assert plain(changed) != plain(compose()), f"{override} did not change the config; pick another value"
    assert config_fingerprint(changed) != config_fingerprint(compose())


def test_relative_and_absolute_data_paths_to_the_same_file_agree():
    relative = compose([f"data.path={SAMPLE}"])
    absolute = compose([f"data.path={ROOT / SAMPLE}"])
    assert relative.data.path != absolute.data.path
    assert fingerprint_inputs(relative)["data"]["sha256"] is not None  # the relative spelling was found
    assert config_fingerprint(relative) == config_fingerprint(absolute)


def test_data_content_change_at_the_same_path_changes_it(tmp_path):
    data = write(tmp_path / "train.jsonl", '{"prompt": "p", "completion": "a"}\n', age_s=60)
    cfg = compose([f"data.path={data}"])
    before = config_fingerprint(cfg)
    assert config_fingerprint(cfg) == before  # stable; the second hash comes from the cache
    # the same size and a fresh timestamp: only the content (or a well-keyed cache) tells them apart
    write(data, '{"prompt": "p", "completion": "b"}\n')
    assert config_fingerprint(cfg) != before


def test_missing_data_file_or_missing_path_do_not_crash(tmp_path):
    missing = compose([f"data.path={tmp_path / 'nope.jsonl'}"])
    assert fingerprint_inputs(missing)["data"]["sha256"] is None
    unset = compose(["data=jsonl"])  # data.path: ???
    assert fingerprint_inputs(unset)["data"]["sha256"] is None
    assert config_fingerprint(missing) == config_fingerprint(compose([f"data.path={tmp_path / 'other.jsonl'}"]))
    assert config_fingerprint(missing) != config_fingerprint(compose())


def test_scifact_source_hashes_claims_and_corpus_content(tmp_path):
    claims = write(tmp_path / "claims.jsonl", '{"id": 1, "claim": "x"}\n', age_s=60)
    corpus = write(tmp_path / "corpus.jsonl", '{"doc_id": 1}\n', age_s=60)
    overrides = ["data.source_format=scifact", f"data.claims_file={claims}", f"data.corpus_file={corpus}"]
    base = config_fingerprint(compose(overrides))
    assert config_fingerprint(compose([*overrides, "data.path=ignored.jsonl"])) == base  # path is not read
    write(corpus, '{"doc_id": 2}\n')
    assert config_fingerprint(compose(overrides)) != base


def test_builtin_model_uses_corpus_content_not_its_path_and_builds_nothing(tmp_path):
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes((ROOT / SAMPLE).read_bytes())
    assert config_fingerprint(compose([f"model.tokenizer_corpus=[{copy}]"])) == config_fingerprint(compose())
    assert not (tmp_path / "models").exists()  # the builtin model was not built
    copy.write_text('{"prompt": "other", "completion": "text"}\n')
    assert config_fingerprint(compose([f"model.tokenizer_corpus=[{copy}]"])) != config_fingerprint(compose())


def _model_folder(folder: Path, weights: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write(folder / "config.json", '{"model_type": "qwen2"}', age_s=60)
    (folder / "model.safetensors").write_bytes(weights)
    then = os.stat(folder / "model.safetensors").st_mtime - 60
    os.utime(folder / "model.safetensors", (then, then))
    write(folder / "metadata.json", '{"created_at": "today"}', age_s=60)
    return folder


def test_local_folder_model_is_fingerprinted_by_its_weights(tmp_path):
    folder = _model_folder(tmp_path / "m", b"\x00" * 64)
    cfg = compose(["model=qwen-0.5b", f"model.source={folder}"])
    before = fingerprint_inputs(cfg)["model"]
    assert before["kind"] == "folder" and set(before["files"]) == {"config.json", "model.safetensors"}
    # the same weights elsewhere: the same model
    twin = _model_folder(tmp_path / "twin", b"\x00" * 64)
    assert config_fingerprint(compose(["model=qwen-0.5b", f"model.source={twin}"])) == config_fingerprint(cfg)
    # metadata (dates, lineage) is not part of the weights
    write(folder / "metadata.json", '{"created_at": "tomorrow"}')
    assert fingerprint_inputs(cfg)["model"] == before
    # new weights of the same size, written just now
    (folder / "model.safetensors").write_bytes(b"\x01" * 64)
    assert fingerprint_inputs(cfg)["model"] != before
    # a changed config.json is a different model too
    write(twin / "config.json", '{"model_type": "llama"}')
    assert config_fingerprint(compose(["model=qwen-0.5b", f"model.source={twin}"])) != config_fingerprint(cfg)


def test_adapter_folder_includes_adapter_files(tmp_path):
    folder = _model_folder(tmp_path / "adapter", b"\x02" * 32)
    (folder / "model.safetensors").rename(folder / "adapter_model.safetensors")
    write(folder / "adapter_config.json", '{"base_model_name_or_path": "/models/base", "r": 8}', age_s=60)
    cfg = compose(["model=qwen-0.5b", f"model.source={folder}"])
    before = fingerprint_inputs(cfg)["model"]
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(before["files"])
    write(folder / "adapter_config.json", '{"base_model_name_or_path": "/models/base", "r": 16}')
    assert fingerprint_inputs(cfg)["model"] != before


def test_missing_model_folder_does_not_crash(tmp_path):
    cfg = compose(["model=qwen-0.5b", f"model.source={tmp_path / 'gone'}"])
    assert fingerprint_inputs(cfg)["model"] == {"kind": "folder", "family": "qwen2", "files": None}
    assert len(config_fingerprint(cfg)) == 64


def test_big_files_are_hashed_once_across_processes(tmp_path, monkeypatch):
    folder = _model_folder(tmp_path / "m", b"\x03" * 128)
    monkeypatch.setattr(file_hashes, "PERSIST_MIN_BYTES", 100)  # model.safetensors counts as big here
    calls: list[str] = []
    real = file_hashes._hash_file
    monkeypatch.setattr(file_hashes, "_hash_file", lambda p: calls.append(Path(p).name) or real(p))
    cfg = compose(["model=qwen-0.5b", f"model.source={folder}"])
    first = config_fingerprint(cfg)
    assert "model.safetensors" in calls
    cache = json.loads((tmp_path / "models" / file_hashes.HASH_CACHE_FILE).read_text())
    assert str((folder / "model.safetensors").resolve()) in cache
    assert str((folder / "config.json").resolve()) not in cache  # small: not worth persisting
    calls.clear()
    monkeypatch.setattr(file_hashes, "_memory", {})  # as a new process would start
    assert config_fingerprint(cfg) == first
    assert "model.safetensors" not in calls


def test_hub_model_uses_the_cached_commit(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    cfg = compose(["model=qwen-0.5b"])
    assert fingerprint_inputs(cfg)["model"]["revision"] == "main"  # not cached: the configured revision
    uncached = config_fingerprint(cfg)
    refs = tmp_path / "hub" / "models--Qwen--Qwen2.5-0.5B-Instruct" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text("a" * 40)
    assert fingerprint_inputs(cfg)["model"]["revision"] == "a" * 40
    assert config_fingerprint(cfg) != uncached
    pinned = compose(["model=qwen-0.5b", f"model.revision={'a' * 40}"])
    assert config_fingerprint(pinned) == config_fingerprint(cfg)  # main resolves to the pinned commit
    (refs / "main").write_text("b" * 40)
    assert config_fingerprint(pinned) != config_fingerprint(cfg)


def test_resolved_container_still_drops_and_resolves():
    cfg = compose()
    everything = resolved_container(cfg, drop=("output.dir",))
    assert everything["optimizer"]["lr"] == cfg.model.recommended_lr  # interpolation resolved
    assert "tracking_uri" not in resolved_container(cfg)["logger"]  # default drop list
    assert "stage" in everything
