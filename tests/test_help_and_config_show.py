"""`python launch.py --help` (rendered from the option files) and `thinker config show` (the resolved config)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from conftest import CONF, ROOT

from thinker.commands.config import show
from thinker.launch.help_text import INTERNAL_GROUPS, config_groups_text, option_description

PUBLIC_KEYS = ["stage", "seed", "data.path", "optimizer.lr", "trainer.max_steps", "validation.enabled",
               "method.rank", "method.alpha", "method.dropout", "resume", "output.name"]
# conf/hydra/ holds options of Hydra's own groups (hydra/launcher=slurm), which --help leaves to --hydra-help
USER_GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in INTERNAL_GROUPS)


def option_files():
    # conf/prices/ holds price tables (thinker.estimate.prices), not options of a group
    return sorted(p for p in CONF.glob("*/*.yaml") if p.parent.name not in INTERNAL_GROUPS)


@pytest.fixture(scope="module")
def help_text() -> str:
    out = subprocess.run([sys.executable, "launch.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("path", option_files(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_option_file_starts_with_a_one_line_description(path):
    description = option_description(path)
    assert description, f"{path.relative_to(ROOT)}: no '# ...' header comment line at the top"
    assert 15 <= len(description) <= 110, f"{path.relative_to(ROOT)}: first comment line is not a one-liner"
    assert not description.endswith((",", " of", " and", " the", " built", " compute")), description


@pytest.mark.parametrize("path", option_files(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_description_ends_at_a_sentence_end_not_mid_sentence(path):
    from thinker.launch.help_text import header_paragraph

    description = option_description(path)
    # whole sentences, or the whole first paragraph when it is one unpunctuated line (torch.optim.Adam)
    assert description.endswith((".", "!", "?")) or description == header_paragraph(path), description
    assert header_paragraph(path).startswith(description) and not description.endswith("…")


def test_a_description_takes_whole_sentences_of_the_first_paragraph(tmp_path):
    mistral = option_description(CONF / "provider" / "mistral.yaml")
    assert mistral == "Mistral: no fine-tuning any more (kept so choosing it says so)."  # was cut at "...API: it"
    option = tmp_path / "x.yaml"
    option.write_text("# @package _global_\n# Short one (e.g. this. Not a stop). Second fits.\n# Third is far "
                      + "too long " * 12 + "to fit.\n#   python launch.py x=y\nkey: 1\n")
    assert option_description(option) == "Short one (e.g. this. Not a stop). Second fits."
    option.write_text("# A lead-in. Offline, against the local server:\n#   thinker tinker-serve\n")
    assert option_description(option) == "A lead-in."
    option.write_text("# " + "word " * 40 + "end.\n")
    assert option_description(option).endswith("word…") and len(option_description(option)) <= 110


def test_help_lists_every_group_and_option_with_its_description(help_text):
    for group in USER_GROUPS:
        assert f"\n{group}=\n" in help_text, group
    for path in option_files():  # a new option file shows up by itself; this fails if the help is stale
        line = next((ln for ln in help_text.splitlines() if ln[4:].split(" ", 1)[0] == path.stem
                     and option_description(path) in ln), None)
        assert line is not None, f"{path.parent.name}={path.stem} is missing from --help"
    assert "qlora     LoRA on a base model loaded in 4 bit" in help_text
    assert "* tiny-qwen" in help_text  # the chosen option is marked
    assert "hf_peft   An alias of backend=local" in help_text


def test_help_shows_what_thinker_is_commands_public_keys_and_outputs(help_text):
    assert help_text.startswith("Thinker: describe an LLM fine-tuning experiment once")
    assert "  python launch.py [group=option" in help_text
    assert "python launch.py -m method=lora,qlora" in help_text
    keys_section = help_text.split("== Public override keys ==")[1].split("==")[0]
    for key in PUBLIC_KEYS:
        assert key in keys_section, key
    outputs = help_text.split("== Outputs ==")[1]
    for where in ("outputs/<date>/<time>/", "multirun/<date>/<time>/", "mlflow.db", "models/"):
        assert where in outputs, where


def test_help_leaves_out_internal_and_hydra_groups(help_text):
    assert "schema/" not in help_text and "thinker_schema" not in help_text
    assert not any(line.startswith("schema") for line in help_text.splitlines())
    groups = [line[:-1] for line in help_text.splitlines() if line.endswith("=") and not line.startswith((" ", "=="))]
    assert sorted(groups) == USER_GROUPS
    assert not any(g.startswith(("hydra", "schema")) for g in groups)


def test_help_follows_the_chosen_options(tmp_path):
    out = subprocess.run([sys.executable, "launch.py", "--help", "method=lora"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "  * lora " in out.stdout and "  * qlora " not in out.stdout


def test_groups_text_reads_a_new_option_file(tmp_path):
    (tmp_path / "method").mkdir()
    (tmp_path / "method" / "dora.yaml").write_text("# Weight-decomposed low-rank adaptation.\nname: dora\n")
    (tmp_path / "schema" / "method").mkdir(parents=True)
    (tmp_path / "schema" / "method" / "inner.yaml").write_text("# internal\n")
    text = config_groups_text([tmp_path], {"method": "dora"})
    assert text == "method=\n  * dora  Weight-decomposed low-rank adaptation."


def _show(capsys, *overrides):
    code = show(list(overrides))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_config_show_resolves_lr_to_the_models_recommended_lr(capsys):
    code, out, err = _show(capsys)
    assert code == 0, err
    cfg = yaml.safe_load(out)
    recommended = yaml.safe_load((CONF / "model" / "tiny-qwen.yaml").read_text())["recommended_lr"]
    assert cfg["optimizer"]["lr"] == float(recommended)
    assert "${" not in out
    assert cfg["output"]["dir"] is None  # a Hydra runtime key outside a run
    assert cfg["model"]["name"] == "tiny-qwen" and cfg["method"]["name"] == "qlora"


def test_config_show_applies_overrides(capsys):
    code, out, err = _show(capsys, "optimizer.lr=1e-4", "model=qwen-0.5b", "method=lora")
    assert code == 0, err
    cfg = yaml.safe_load(out)
    assert cfg["optimizer"]["lr"] == 1e-4
    assert cfg["model"]["recommended_lr"] == 2e-4
    assert cfg["method"]["name"] == "lora"
    code, out, _ = _show(capsys, "model=qwen-0.5b")
    assert yaml.safe_load(out)["optimizer"]["lr"] == 2e-4


@pytest.mark.parametrize("override, says", [
    ("optimizer.lr=abc", "could not be converted to Float, config key optimizer.lr"),
    ("method=nope", "Could not find 'method/nope' (available: full, lora, pretrain, qlora)"),
    ("optimizer.lr=5", "optimizer.lr=5.0 is outside the allowed range (0, 1]"),
])
def test_config_show_bad_override_is_one_error_line_and_exit_2(capsys, override, says):
    code, out, err = _show(capsys, override)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("[thinker] error: "), err
    assert says in lines[0]


def test_thinker_config_show_cli():
    out = subprocess.run([sys.executable, "-m", "thinker.commands.cli", "config", "show", "optimizer.lr=1e-4"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout)["optimizer"]["lr"] == 1e-4
    bad = subprocess.run([sys.executable, "-m", "thinker.commands.cli", "config", "show", "method=nope"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("[thinker] error:")
    assert len(bad.stderr.strip().splitlines()) == 1
