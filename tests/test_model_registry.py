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
    return subprocess.run([sys.executable, "-m", "thinker.commands.cli", *args], cwd=models.parent, capture_output=True,
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


# ---------------------------------------------------------------- list, should_register, prune (issue 14)


def aged(registry: Registry, name: str, age) -> None:
    """Backdate an entry's created_at by `age` (a timedelta)."""
    from datetime import UTC, datetime

    with registry.locked() as entries:
        found = next(e for e in entries if e.model_name == name)
        found.created_at = (datetime.now(UTC) - age).isoformat(timespec="seconds")


def test_list_shows_shipped_options_and_fine_tunes_with_base_method_loss_and_age(registry, tmp_path):
    from datetime import timedelta

    from thinker.models.finetunes import register_run_output

    registry.add(lambda entries: RegistryEntry(model_name="my-qwen", model_id="Qwen/Qwen2.5-0.5B-Instruct",
                                               source="huggingface", architecture="qwen2", params=494_000_000))
    tune = register_run_output(finetune_cfg("my-qwen"), tmp_path / "run" / "weights", "run-1",
                               metrics={"val_loss": 6.98765, "train_loss": 7.1, "optimizer_steps": 51.0,
                                        "trained_tokens": 99.0})
    assert tune.extra["val_loss"] == 6.98765 and tune.extra["optimizer_steps"] == 51
    assert tune.extra["named"] is False and "trained_tokens" not in tune.extra
    aged(registry, tune.model_name, timedelta(days=3, hours=2))

    out = thinker_cli(["models", "list"], registry.folder)
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split() for line in out.stdout.splitlines() if line.strip()}
    assert rows["tiny-qwen"][1:3] == ["builtin", "2.4M"]
    assert rows["qwen-0.5b"][1:3] == ["Qwen/Qwen2.5-0.5B-Instruct", "494M"]
    assert rows["llama-3.1-8b"][1:3] == ["meta-llama/Llama-3.1-8B-Instruct", "8.03B"]
    assert rows[tune.model_name][1:] == ["finetune", "10", "my-qwen", "lora", "6.9877", "3d"]
    assert rows["my-qwen"][1:3] == ["Qwen/Qwen2.5-0.5B-Instruct", "494M"]
    lines = out.stdout.splitlines()
    header = next(line for line in lines if line.startswith("NAME") and "VAL_LOSS" in line)
    row = next(line for line in lines if line.startswith(tune.model_name))
    assert row.index("my-qwen", len(tune.model_name)) == header.index("BASE")  # aligned columns
    assert row.index("3d") == header.index("AGE")

    info = thinker_cli(["models", "info", tune.model_name], registry.folder)
    assert json.loads(info.stdout)["extra"]["val_loss"] == 6.98765  # info stays JSON


def test_list_without_registry_still_shows_the_shipped_options(registry):
    out = thinker_cli(["models", "list"], registry.folder)
    assert out.returncode == 0, out.stderr
    assert "cognate-25m" in out.stdout and "no models registered" in out.stdout


def test_a_named_fine_tune_records_it(registry, tmp_path):
    from thinker.models.finetunes import register_run_output

    named = register_run_output(finetune_cfg("tiny-qwen", "mine"), tmp_path / "w", None)
    assert named.extra["named"] is True and "val_loss" not in named.extra  # no metrics given: none kept


def run_cfg(max_steps: int, register: bool | None = None, min_steps: int | None = None):
    output = {"name": None, **({} if register is None else {"register": register}),
              **({} if min_steps is None else {"register_min_steps": min_steps})}
    return OmegaConf.create({"trainer": {"max_steps": max_steps}, "output": output})


@pytest.mark.parametrize(("cfg", "expected", "reason"), [
    (run_cfg(500, register=False), False, "output.register=false"),
    (run_cfg(-1, register=False), False, "output.register=false"),
    (run_cfg(2), False, "below output.register_min_steps=20"),
    (run_cfg(19), False, "trainer.max_steps=19 is below"),
    (run_cfg(20), True, ">= output.register_min_steps=20"),
    (run_cfg(51), True, "trainer.max_steps=51 >="),
    (run_cfg(-1), True, "the epochs decide"),
    (run_cfg(2, min_steps=1), True, ">= output.register_min_steps=1"),
    (run_cfg(30, min_steps=40), False, "below output.register_min_steps=40"),
    (OmegaConf.create({"output": {"name": None}}), True, "epochs decide"),  # no trainer section: -1
])
def test_should_register(cfg, expected, reason):
    from thinker.models.finetunes import should_register

    decision, why = should_register(cfg, 7)
    assert decision is expected and reason in why and "7 optimizer steps" in why


def test_the_composed_defaults_register_the_quick_start_but_not_smoke_runs():
    from conftest import compose

    from thinker.models.finetunes import should_register

    default, smoke = compose(), compose(["trainer.max_steps=2"])
    kept = compose(["trainer.max_steps=2", "output.register_min_steps=1"])
    off = compose(["output.register=false"])
    assert default.output.register is True and default.output.register_min_steps == 20
    assert default.trainer.max_steps == 24 and should_register(default, 24)[0] is True  # the quick start
    assert should_register(smoke, 2)[0] is False and should_register(kept, 2)[0] is True
    assert should_register(off, 51)[0] is False


def test_a_run_that_will_not_register_is_not_stopped_by_a_taken_name(registry):
    from thinker.config.rules import output_name_free

    registry.add(lambda entries: entry("mine"))
    cfg = OmegaConf.merge(finetune_cfg("tiny-qwen", "mine"), {"trainer": {"max_steps": 2}})
    assert list(output_name_free(cfg, {})) == []
    cfg.output.register_min_steps = 1  # now it registers, so the taken name stops it
    assert "already registered" in list(output_name_free(cfg, {}))[0].what
    cfg.output.register_min_steps = 20
    assert "not a valid model name" in list(output_name_free(OmegaConf.merge(cfg, {"output": {"name": "Bad Name"}}),
                                                             {}))[0].what


def test_durations_and_ages():
    from datetime import timedelta

    from thinker.models.registry import format_age, parse_duration

    assert parse_duration("7d") == timedelta(days=7) and parse_duration("12h") == timedelta(hours=12)
    assert parse_duration("30m") == timedelta(minutes=30)
    for bad in ("7", "7w", "-1d", "d", "1.5h"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert [format_age(timedelta(seconds=s)) for s in (5, 90, 5 * 3600 + 59, 3 * 86400 + 7200)] == \
        ["now", "1m", "5h", "3d"]
    assert format_age(None) == "-"


def test_prune_forgets_only_old_unnamed_leaf_fine_tunes(registry, tmp_path):
    from datetime import timedelta

    weights = tmp_path / "run-old" / "weights"
    weights.mkdir(parents=True)

    def tune(name, parent="tiny-qwen", named=None, path="/runs/x"):
        made = entry(name, parent=parent, path=path)
        if named is not None:
            made.extra["named"] = named
        registry.add(lambda entries: made)

    tune("tiny-qwen-finetuned-20250101-000000", named=False, path=str(weights))  # old, unnamed, leaf: goes
    tune("tiny-qwen-finetuned-20250102-000000")  # old, before `named` was recorded, automatic name: goes
    tune("kept-named", named=True)  # old but named by the user
    tune("tiny-qwen-finetuned-20250103-000000", named=False)  # old, unnamed, but a parent
    tune("child", parent="tiny-qwen-finetuned-20250103-000000", named=True)
    tune("tiny-qwen-finetuned-20250104-000000", named=False)  # unnamed leaf, but recent
    tune("hand-named-legacy")  # old, no `named`, a name no run picks automatically
    registry.add(lambda entries: entry("imported-long-ago"))  # not a fine-tune
    for name in ("tiny-qwen-finetuned-20250101-000000", "tiny-qwen-finetuned-20250102-000000", "kept-named",
                 "tiny-qwen-finetuned-20250103-000000", "child", "hand-named-legacy", "imported-long-ago"):
        aged(registry, name, timedelta(days=10))
    aged(registry, "tiny-qwen-finetuned-20250104-000000", timedelta(hours=5))
    gone = ["tiny-qwen-finetuned-20250101-000000", "tiny-qwen-finetuned-20250102-000000"]
    everything = {e.model_name for e in registry.entries()}

    before = registry.path.read_bytes()
    out = thinker_cli(["models", "prune", "--older-than", "7d", "--dry-run"], registry.folder)
    assert out.returncode == 0, out.stderr
    listed = {line.split()[0] for line in out.stdout.splitlines() if line.strip() and line.split()[0] in everything}
    assert listed == set(gone) and "would forget 2" in out.stdout and "nothing was removed" in out.stdout
    assert registry.path.read_bytes() == before

    out = thinker_cli(["models", "prune", "--older-than", "7d"], registry.folder)
    assert out.returncode == 0, out.stderr
    assert {e.model_name for e in registry.entries()} == everything - set(gone)  # named, parents, recent stay
    assert "weights stay in the run folders" in out.stdout and str(weights) in out.stdout
    assert weights.is_dir()  # only the registry forgets

    out = thinker_cli(["models", "prune", "--older-than", "4h"], registry.folder)  # now the 5h-old one goes too
    assert out.returncode == 0, out.stderr
    assert {e.model_name for e in registry.entries()} == everything - {*gone, "tiny-qwen-finetuned-20250104-000000"}

    out = thinker_cli(["models", "prune", "--older-than", "30m"], registry.folder)
    assert out.returncode == 0 and "nothing to prune" in out.stdout
    assert thinker_cli(["models", "prune", "--older-than", "7x"], registry.folder).returncode == 2


def test_prune_keeps_recent_fine_tunes_within_the_age(registry):
    from datetime import timedelta

    registry.add(lambda entries: entry("tiny-qwen-finetuned-20250101-000000", parent="tiny-qwen"))
    aged(registry, "tiny-qwen-finetuned-20250101-000000", timedelta(days=6))
    assert registry.prune(timedelta(days=7)) == [] and len(registry.entries()) == 1
    assert [e.model_name for e in registry.prune(timedelta(days=5), dry_run=True)] == [
        "tiny-qwen-finetuned-20250101-000000"]
    assert len(registry.entries()) == 1
    assert len(registry.prune(timedelta(days=5))) == 1 and registry.entries() == []


def auto_tunes(registry: Registry, count: int, parent: str = "tiny-qwen") -> list[str]:
    """`count` auto-named fine-tunes of `parent`, the first the oldest (one hour apart)."""
    from datetime import timedelta

    names = [f"{parent}-finetuned-2026010{i + 1}-000000" for i in range(count)]
    for age, name in zip(range(count, 0, -1), names, strict=True):
        made = entry(name, parent=parent)
        made.extra["named"] = False
        registry.add(lambda entries, made=made: made)
        aged(registry, name, timedelta(hours=age))
    return names


def test_auto_named_fine_tunes_stay_out_of_option_lists_but_compose(registry, capsys):
    from thinker.commands.config import show
    from thinker.launch.help_text import config_groups_text
    from thinker.models.registry_options import register_registry_options

    auto = auto_tunes(registry, 3)
    registry.add(lambda entries: entry("my-qwen", path="/models/my-qwen"))
    register_registry_options()
    help_block = config_groups_text([CONF]).split("\nmodel=\n")[1].split("\n\n")[0]
    assert "my-qwen" in help_block and "(and 3 auto-named fine-tunes: thinker models list)" in help_block
    assert not any(name in help_block for name in auto)

    assert show(["model=qwen05b"]) == 2  # the same folding as python launch.py (tested there below)
    line = capsys.readouterr().err.strip()
    listed = line.split("(available: ")[1].split(")")[0]
    assert "my-qwen" in listed and listed.endswith("tiny-qwen; 3 auto-named fine-tunes: thinker models list")
    assert "did you mean model=qwen-0.5b" in line and not any(name in line for name in auto)

    assert show([f"model={auto[0]}"]) == 0  # named explicitly, an auto-named fine-tune still composes
    assert f"name: {auto[0]}" in capsys.readouterr().out


def test_launch_leaves_auto_named_fine_tunes_out_of_its_error(tmp_path):
    models = tmp_path / "models"
    auto = auto_tunes(Registry(models), 2)
    out = launch(["model=tiny-qwn"], cwd=tmp_path, env=clean_env(THINKER_MODELS_DIR=str(models)))
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert "(available: cognate-25m, llama-3.1-8b, qwen-0.5b, qwen-1.5b, tiny-qwen; 2 auto-named" in line
    assert "did you mean model=tiny-qwen? " in line and not any(name in line for name in auto)


def test_list_shows_named_models_and_the_newest_auto_named_and_counts_the_rest(registry):
    from thinker.commands.model_registry import RECENT_AUTO_NAMED

    auto = auto_tunes(registry, RECENT_AUTO_NAMED + 3)
    registry.add(lambda entries: entry("mine", parent=auto[0]))  # named, made from the oldest auto-named one
    registry.add(lambda entries: entry("my-qwen"))
    out = thinker_cli(["models", "list"], registry.folder)
    assert out.returncode == 0, out.stderr
    registry_rows = out.stdout.split("registry (")[1].splitlines()[2:]
    names = [row.split()[0] for row in registry_rows if not row.startswith("...")]
    assert names[:2] == ["mine", "my-qwen"] or names[:2] == ["my-qwen", "mine"]  # named first
    assert names[2:] == auto[::-1][:RECENT_AUTO_NAMED]  # then the newest auto-named, newest first
    assert registry_rows[-1].startswith("... and 3 older auto-named fine-tunes (thinker models list --all")

    every = thinker_cli(["models", "list", "--all"], registry.folder)
    assert every.returncode == 0, every.stderr
    rows = every.stdout.split("registry (")[1].splitlines()[2:]
    assert [row.split()[0] for row in rows][2:] == auto[::-1] and "... and" not in every.stdout


def test_prune_keep_forgets_all_but_the_newest_auto_named_and_says_which_bases_stay(registry):
    auto = auto_tunes(registry, 6)
    registry.add(lambda entries: entry("mine", parent=auto[0]))  # named child of the oldest: keeps it
    named_old = entry("kept-named", parent="tiny-qwen")
    named_old.extra["named"] = True
    registry.add(lambda entries: named_old)
    registry.add(lambda entries: entry("my-qwen"))

    before = registry.path.read_bytes()
    dry = thinker_cli(["models", "prune", "--keep", "2", "--dry-run"], registry.folder)
    assert dry.returncode == 0, dry.stderr
    assert registry.path.read_bytes() == before
    assert f"kept {auto[0]}: mine was fine-tuned from it" in dry.stdout
    assert "would forget 3 auto-named fine-tune(s) beyond the 2 newest" in dry.stdout

    out = thinker_cli(["models", "prune", "--keep", "2"], registry.folder)
    assert out.returncode == 0, out.stderr
    assert {e.model_name for e in registry.entries()} == {auto[0], auto[4], auto[5], "mine", "kept-named",
                                                          "my-qwen"}
    assert registry.lineage("mine")[1].model_name == auto[0]  # lineage whole

    both = thinker_cli(["models", "prune", "--keep", "0", "--older-than", "90m"], registry.folder)
    assert both.returncode == 0, both.stderr  # auto[4] is 2h old and goes; auto[5] is 1h old and stays
    assert {e.model_name for e in registry.entries()} == {auto[0], auto[5], "mine", "kept-named", "my-qwen"}

    bare = thinker_cli(["models", "prune"], registry.folder)
    assert bare.returncode == 2 and bare.stderr.startswith("[thinker] error: thinker models prune needs --keep N")
    assert thinker_cli(["models", "prune", "--keep", "-1"], registry.folder).returncode == 2
