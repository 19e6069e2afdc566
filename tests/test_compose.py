"""Every option of every group composes; every structured config rejects a value of the wrong type."""

from __future__ import annotations

import dataclasses
import enum
import typing

import pytest
from conftest import CONF, GROUPS, compose, group_options, launch
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ValidationError

from thinker.config import schema
from thinker.config.job_configuration import JobConfiguration

ALL_OPTIONS = [(g, o) for g in GROUPS for o in group_options(g)]


def test_every_group_has_options():
    for group in GROUPS:
        assert group_options(group), f"conf/{group} has no options"


def aliased_option(group: str, option: str) -> str:
    """The option an alias file (its defaults list only a sibling option, e.g. backend/hf_peft -> local) stands
    for; the option itself otherwise."""
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(OmegaConf.load(CONF / group / f"{option}.yaml"))
    defaults = data.get("defaults", [])
    if set(data) == {"defaults"} and len(defaults) == 1 and (CONF / group / f"{defaults[0]}.yaml").is_file():
        return defaults[0]
    return option


@pytest.mark.parametrize(("group", "option"), ALL_OPTIONS, ids=[f"{g}={o}" for g, o in ALL_OPTIONS])
def test_option_composes(group, option):
    cfg = compose([f"{group}={option}"])
    if group not in ("experiment", "hparams_search"):
        assert str(cfg[group].name) == aliased_option(group, option)
        # the option's typed schema is attached: a misspelt key cannot be added silently
        with pytest.raises(ConfigAttributeError):
            cfg[group].no_such_key = 1


def test_defaults_are_the_embedded_run():
    cfg = compose()
    assert cfg.model.name == "tiny-qwen" and str(cfg.method.name) == "qlora"
    assert str(cfg.backend.name) == "local" and cfg.data.name == "sample" and str(cfg.stage) == "run"


def test_the_quick_start_trains_24_steps_and_hosted_backends_whole_epochs():
    """trainer=quick sizes the embedded default (README, Quick start); backends that train elsewhere and the
    shipped experiments keep trainer=cpu's whole epochs (providers refuse trainer.max_steps); a trainer named on
    the command line wins over both."""
    from thinker.models.finetunes import should_register

    quick = compose().trainer
    assert (quick.name, quick.max_steps, quick.batch_size, quick.max_seq_length) == ("quick", 24, 4, 768)
    assert should_register(compose(), 24)[0] is True  # still >= output.register_min_steps
    for overrides in (["backend=tinker"], ["backend=provider", "provider=openai"], ["experiment=cognate_pretrain"],
                      ["experiment=scifact_claim_extractor"]):
        trainer = compose(overrides).trainer
        assert (trainer.name, trainer.max_steps) == ("cpu", -1), overrides
    assert compose(["backend=tinker", "trainer=quick"]).trainer.name == "quick"
    assert compose(["experiment=cognate_pretrain", "trainer=gpu"]).trainer.name == "gpu"


def _typed_fields(cls):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if tp in (int, float, bool) or (isinstance(tp, type) and issubclass(tp, enum.Enum)):
            yield f.name, "not-a-valid-value"
        elif tp in (str, str | None):
            yield f.name, {"a": "mapping", "is not": "a string"}


# JobConfiguration is left out: its fields are interpolations of typed keys elsewhere, checked there (Any here)
SCHEMA_CLASSES = sorted({c for kinds in schema.SCHEMAS.values() for c in kinds.values()
                         if c is not JobConfiguration} | {
    schema.ThinkerConfig, schema.SchedulerConfig, schema.SchemaField, schema.ValidationConfig,
    schema.PytestGateConfig, schema.EvaluationConfig}, key=lambda c: c.__name__)


@pytest.mark.parametrize("cls", SCHEMA_CLASSES, ids=lambda c: c.__name__)
def test_structured_config_rejects_wrong_type(cls):
    fields = list(_typed_fields(cls))
    assert fields, f"{cls.__name__} has no typed scalar field to check"
    for name, wrong in fields:
        node = OmegaConf.structured(cls)
        with pytest.raises(ValidationError):
            setattr(node, name, wrong)


@pytest.mark.parametrize(
    "override",
    ["optimizer.lr=abc", "trainer.batch_size=big", "method.rank=1.5", "stage=deploy", "validation.enabled=maybe"],
)
def test_compose_rejects_wrong_type(override):
    with pytest.raises(Exception) as info:  # noqa: B017 - Hydra wraps OmegaConf's errors in its own types
        compose([override])
    assert override.split("=")[0].split(".")[-1] in str(info.value) or "stage" in str(info.value)


def test_cfg_job_prints_resolved_config_for_an_option(tmp_path):
    out = launch(["--cfg", "job", "method=lora", "optimizer.lr=3e-4"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    cfg = OmegaConf.create(out.stdout)
    assert cfg.method.name == "lora" and cfg.optimizer.lr == pytest.approx(3e-4)


def test_bad_override_is_one_line_error_with_config_exit_code(tmp_path):
    out = launch(["optimizer.lr=abc"], cwd=tmp_path)
    assert out.returncode == 2
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("[thinker] error: "), out.stderr
    assert "optimizer.lr" in lines[0] and "Traceback" not in out.stderr


def test_unknown_option_lists_the_available_ones(tmp_path):
    out = launch(["method=loraa"], cwd=tmp_path)
    assert out.returncode == 2
    assert "available: full, lora, pretrain, qlora" in out.stderr and "Traceback" not in out.stderr


def test_an_unknown_key_suggests_the_closest_one(tmp_path):
    out = launch(["optimizer.lrr=1e-3"], cwd=tmp_path)
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("[thinker] error: ") and "config key optimizer.lrr, did you mean optimizer.lr? fix" in line


@pytest.mark.parametrize(("override", "suggestion"), [
    ("model=qwen05b", "did you mean model=qwen-0.5b"),
    ("method=lora method.rnk=4", "did you mean method.rank? "),  # the chosen option's own schema
    ("optimizerr=adam", "did you mean optimizer? "),
    ("trainer.max_stepz=3", "did you mean trainer.max_steps? "),
    ("hydra/launcher=slurmm", "did you mean hydra/launcher=slurm? "),
])
def test_thinker_config_show_suggests_the_closest_key_or_option(capsys, override, suggestion):
    from thinker.commands.config import show

    assert show(override.split()) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert suggestion in line


def test_nothing_is_suggested_when_nothing_is_close(capsys):
    from thinker.commands.config import show

    assert show(["optimizer.zzz=1"]) == 2
    assert "did you mean" not in capsys.readouterr().err
