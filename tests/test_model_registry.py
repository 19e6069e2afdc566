"""The model registry: lineage, versioned names, locking under 8 concurrent writers, corrupt files, rm,
and `model=<registry name>` composing through launch.py."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONF, ROOT, clean_env, launch
from omegaconf import OmegaConf

from thinker.errors import ExitCode, ThinkerError
from thinker.models.registry import Registry, RegistryEntry, versioned_name


def entry(name: str, parent: str | None = None, path: str = "/nowhere", model_id: str = "org/m") -> RegistryEntry:
    return RegistryEntry(model_name=name, model_id=model_id, source="finetune" if parent else "huggingface",
                         architecture="qwen2", local_path=path, fine_tuned_from=parent)


@pytest.fixture
def registry(tmp_path, monkeypatch) -> Registry:
    monkeypatch.setenv("THINKER_MODELS_DIR", str(tmp_path / "models"))
    return Registry()


def thinker_cli(args: list[str], models: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "thinker.cli", *args], cwd=models.parent, capture_output=True,
                          text=True, timeout=120, env=clean_env(THINKER_MODELS_DIR=str(models)))


def finetune_cfg(base: str, output_name: str | None = None):
    return OmegaConf.create({
        "model": {"name": base, "family": "qwen2", "source": "builtin", "params": 10, "recommended_lr": 3e-3,
                  "supports_4bit": True},
        "method": {"name": "lora"}, "backend": {"name": "local"}, "output": {"name": output_name}, "stage": "run",
    })


def test_two_finetunes_form_a_lineage(registry, tmp_path):
    from thinker.models.finetunes import register_run_output

    first_weights = tmp_path / "run1" / "weights"
    first_weights.mkdir(parents=True)
    (first_weights / "metadata.json").write_text(json.dumps({"base_model": "tiny-qwen", "steps": 3}))
    first = register_run_output(finetune_cfg("tiny-qwen"), first_weights, "run-1")
    second = register_run_output(finetune_cfg(first.model_name, "second"), tmp_path / "run2", "run-2")

    assert first.model_name.startswith("tiny-qwen-finetuned-") and first.fine_tuned_from == "tiny-qwen"
    assert second.fine_tuned_from == first.model_name and second.mlflow_run_id == "run-2"
    assert [e.model_name for e in registry.lineage("second")] == ["second", first.model_name]
    metadata = json.loads((first_weights / "metadata.json").read_text())
    assert metadata["steps"] == 3 and metadata["registered_as"] == first.model_name  # extended, not replaced
    assert metadata["mlflow_run_id"] == "run-1"

    out = thinker_cli(["models", "lineage", "second"], registry.folder)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("second") and "run-2" in lines[0]
    assert lines[1].strip().startswith(first.model_name) and "tiny-qwen [not in the registry]" in lines[2]


def test_taken_output_name_is_refused_before_training(registry):
    from thinker.config.rules import output_name_free

    registry.add(lambda entries: entry("mine"))
    found = list(output_name_free(finetune_cfg("tiny-qwen", "mine"), {}))
    assert found and "already registered" in found[0].what
    assert list(output_name_free(finetune_cfg("tiny-qwen", "free-name"), {})) == []
    assert "shipped model option" in list(output_name_free(finetune_cfg("tiny-qwen", "qwen-0.5b"), {}))[0].what


def test_versioned_names_for_reimports():
    entries = [entry("qwen", model_id="org/qwen")]
    assert versioned_name("qwen", "org/qwen", entries) == ("qwen-v2", 2)
    entries.append(entry("qwen-v2", model_id="org/qwen"))
    assert versioned_name("qwen", "org/qwen", entries) == ("qwen-v3", 3)
    assert versioned_name("other", "org/other", entries) == ("other", 1)


def _register_in_child(models: str, index: int, barrier) -> None:
    from thinker.models.registry import Registry, RegistryEntry

    barrier.wait()  # every writer starts its read-modify-write at the same moment
    Registry(Path(models)).add(lambda entries: RegistryEntry(
        model_name=f"job-{index}", model_id="org/m", source="finetune", architecture="qwen2",
        local_path=f"/runs/{index}"))


def test_eight_concurrent_writers_leave_eight_entries(tmp_path):
    models = tmp_path / "models"
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        barrier = manager.Barrier(8)
        workers = [context.Process(target=_register_in_child, args=(str(models), i, barrier)) for i in range(8)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
    assert [w.exitcode for w in workers] == [0] * 8
    data = json.loads((models / "registry.json").read_text())
    assert sorted(e["model_name"] for e in data["models"]) == sorted(f"job-{i}" for i in range(8))


def test_corrupt_registry_is_reported_and_left_untouched(registry):
    registry.folder.mkdir(parents=True)
    registry.path.write_text('{"models": [ broken')
    before = registry.path.read_bytes()
    with pytest.raises(ThinkerError, match="corrupt") as error:
        registry.add(lambda entries: entry("x"))
    assert error.value.exit_code == ExitCode.RECORD
    assert registry.path.read_bytes() == before

    out = thinker_cli(["models", "list"], registry.folder)
    assert out.returncode == int(ExitCode.RECORD)
    assert out.stderr.strip().startswith("[thinker] error: the model registry") and "corrupt" in out.stderr
    assert registry.path.read_bytes() == before


def test_rm_refuses_a_parent_unless_forced(registry):
    folder = registry.folder / "base"
    folder.mkdir(parents=True)
    outside = registry.folder.parent / "run" / "weights"
    outside.mkdir(parents=True)
    registry.add(lambda entries: entry("base", path=str(folder)))
    registry.add(lambda entries: entry("child", parent="base", path=str(outside)))

    out = thinker_cli(["models", "rm", "base"], registry.folder)
    assert out.returncode == int(ExitCode.RECORD) and "child" in out.stderr
    assert registry.find("base") is not None and folder.is_dir()

    registry.remove("child")
    assert outside.is_dir()  # a run folder outside models/ is never deleted
    out = thinker_cli(["models", "rm", "base"], registry.folder)
    assert out.returncode == 0, out.stderr
    assert registry.find("base") is None and not folder.exists()


def test_registry_names_compose_as_model_options(registry):
    from hydra import compose, initialize_config_dir

    from thinker.models.registry_options import register_registry_options

    registry.add(lambda entries: entry("my-qwen", path="/models/my-qwen"))
    assert register_registry_options() == ["my-qwen"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["model=my-qwen"])
    assert cfg.model.name == "my-qwen" and cfg.model.source == "/models/my-qwen"
    assert cfg.model.family == "qwen2" and cfg.model.supports_4bit is True


def test_launch_selects_a_registry_model(tmp_path):
    models = tmp_path / "models"
    Registry(models).add(lambda entries: entry("my-qwen", path=str(models / "my-qwen")))
    out = launch(["--cfg", "job", "model=my-qwen"], cwd=tmp_path, env=clean_env(THINKER_MODELS_DIR=str(models)))
    assert out.returncode == 0, out.stderr
    assert "name: my-qwen" in out.stdout and f"source: {models / 'my-qwen'}" in out.stdout


def test_corrupt_registry_does_not_break_launch(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / "registry.json").write_text("not json")
    out = launch(["--cfg", "job"], cwd=tmp_path, env=clean_env(THINKER_MODELS_DIR=str(models)))
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("[thinker] warning: the model registry") == 1  # warned once
    assert (models / "registry.json").read_text() == "not json"


def test_registry_modules_stay_light():
    script = ("import sys, thinker.models.registry, thinker.models.registry_options, thinker.models.finetunes, "
              "thinker.models.importer, thinker.models.adapters, thinker.models.adapters.cognate, "
              "thinker.commands.model_registry; "
              "print(sorted(m for m in sys.modules if m.split('.')[0] in "
              "('torch', 'transformers', 'mlflow', 'huggingface_hub', 'lightning')))")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
