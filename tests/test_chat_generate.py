"""`thinker chat` and `thinker generate`: a trained run (folder or registry name) sampled through the eval
stage's sampler, with prompts rendered as in training; clear errors for what cannot be used.

The error cases need no model (fake run folders); the tests marked slow train one tiny LoRA run (2 steps).
"""

from __future__ import annotations

import argparse
import io
import json
import os

import pytest
from conftest import compose
from omegaconf import OmegaConf

pytestmark = pytest.mark.usefixtures("private_models_dir")

FAST = ["data.max_examples=40", "trainer.max_seq_length=256", "trainer.batch_size=4", "validation.pytest.enabled=false",
        "logger=none"]
TOKENS = 12  # --max-new-tokens in these tests: short generations keep them quick
PROMPT = "Claim: aspirin lowers the risk of heart attacks."


def thinker(argv: list[str]) -> int:
    """`thinker <argv>` as the console command runs it (errors: one stderr line and the exit code)."""
    from thinker.commands.cli import main

    return main(argv)


def save_run_config(run_dir, cfg) -> None:
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")


@pytest.fixture
def fake_run(tmp_path):
    """A run folder with its config and a weights/ folder that only looks trained (nothing ever loads it)."""
    run_dir = tmp_path / "run"
    save_run_config(run_dir, compose([*FAST, "method=lora", f"output.dir={run_dir}"]))
    (run_dir / "weights").mkdir()
    (run_dir / "weights" / "adapter_config.json").write_text("{}")
    return run_dir


# ------------------------------------------------------------------ errors (no model needed)


def test_a_run_folder_without_weights_is_a_clear_error(tmp_path, capsys):
    run_dir = tmp_path / "untrained"
    save_run_config(run_dir, compose([*FAST, f"output.dir={run_dir}"]))
    assert thinker(["chat", str(run_dir), "--prompt", PROMPT]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("[thinker] error: ") and "has no trained weights" in err[-1], err
    assert str(run_dir / "weights") in err[-1]


def test_a_folder_that_is_no_run_is_a_clear_error(tmp_path, capsys):
    assert thinker(["chat", str(tmp_path), "--prompt", PROMPT]) == 2
    assert ".hydra/config.yaml" in capsys.readouterr().err


def test_an_unknown_registry_name_lists_close_names(capsys):
    from thinker.models.registry import Registry, RegistryEntry

    Registry().add(lambda _entries: RegistryEntry(model_name="tiny-qwen-finetuned-a", model_id="x", source="finetune",
                                                  architecture="qwen2", local_path="/nonexistent"))
    assert thinker(["generate", "tiny-qwen-finetuned-b", "--input", "in.jsonl", "--output", "out.jsonl"]) == 2
    err = capsys.readouterr().err
    assert "'tiny-qwen-finetuned-b' is neither a run folder nor a model in the registry" in err
    assert "did you mean tiny-qwen-finetuned-a?" in err


def test_a_registry_entry_whose_run_folder_is_gone(tmp_path, capsys):
    from thinker.models.registry import Registry, RegistryEntry

    gone = tmp_path / "deleted-run"
    Registry().add(lambda _entries: RegistryEntry(
        model_name="gone-run", model_id="x", source="finetune", architecture="qwen2",
        local_path=str(gone / "weights"), extra={"run_dir": str(gone), "backend": "local"}))
    assert thinker(["chat", "gone-run", "--prompt", PROMPT]) == 2
    err = capsys.readouterr().err
    assert f"the run folder of gone-run is gone ({gone})" in err and "thinker models rm gone-run" in err


@pytest.mark.parametrize("bad_line, problem", [
    ('{"prompt": "unterminated', "invalid JSON (Unterminated string starting at column 12)"),
    ('["a list"]', "a JSON array, not an object"),
    ('{"text": "no prompt field"}', "field 'prompt' is missing"),
    ('{"prompt": 7}', "field 'prompt' is integer, not a string"),
])
def test_a_bad_input_line_is_named_with_its_file_and_line(fake_run, tmp_path, capsys, bad_line, problem):
    source, out = tmp_path / "prompts.jsonl", tmp_path / "out.jsonl"
    source.write_text(json.dumps({"prompt": "fine"}) + "\n\n" + bad_line + "\n")
    assert thinker(["generate", str(fake_run), "--input", str(source), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"[thinker] error: {source} has 1 bad line (line 3: {problem}), --input, "), err
    assert not out.exists()


def test_every_bad_input_line_has_its_own_reason_and_the_file_is_named_once(fake_run, tmp_path, capsys):
    from thinker.commands.use import BAD_LINES_SHOWN

    source, out = tmp_path / "prompts.jsonl", tmp_path / "out.jsonl"
    bad = ['{"text": "x"}', '{"prompt": null}', '{"prompt": "a", "x": 1', "[" * 5000 + "]" * 5000]
    bad += ['{"prompt": 1}'] * (BAD_LINES_SHOWN - len(bad) + 2)  # two beyond what is shown
    source.write_text("\n".join([json.dumps({"prompt": "fine"}), *bad]) + "\n")
    assert thinker(["generate", str(fake_run), "--input", str(source), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    line = err[0]
    assert line.count(str(source)) == 1, line
    assert "line 2: field 'prompt' is missing; line 3: field 'prompt' is null, not a string; " in line
    assert "line 4: invalid JSON (Expecting ',' delimiter at column 23); line 5: invalid JSON (nested 5000" in line
    assert f"{source} has {len(bad)} bad lines (" in line and "; and 2 more)" in line
    assert not out.exists()


def test_a_named_pipe_as_the_prompts_file_is_refused_without_opening_it(fake_run, tmp_path, capsys):
    fifo = tmp_path / "prompts.jsonl"
    os.mkfifo(fifo)  # opening it for reading would block until something writes to it
    assert thinker(["generate", str(fake_run), "--input", str(fifo), "--output", str(tmp_path / "out.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (f"[thinker] error: --input={fifo} is a named pipe (FIFO), not a regular file, --input, point --input "
                   "at a regular file (a pipe or a device is refused: reading it may never end)"), err


def test_overrides_must_name_existing_keys(fake_run, capsys):
    assert thinker(["chat", str(fake_run), "--prompt", PROMPT, "trainer.acclerator=cpu"]) == 2
    assert "the run's config has no key trainer.acclerator" in capsys.readouterr().err
    assert thinker(["chat", str(fake_run), "method=full", "--prompt", PROMPT]) == 2
    assert "method is a config group" in capsys.readouterr().err


def test_options_and_overrides_after_the_model_are_parsed():
    from thinker.commands.use import apply_overrides, complete_args

    args = argparse.Namespace(model="m", prompt=None, max_new_tokens=None, sample=None,
                              overrides=["--prompt", "hi", "evaluation.decoding.temperature=0.5", "--sample",
                                         "--max-new-tokens", "7"])
    args = complete_args("chat", args)
    assert (args.prompt, args.sample, args.max_new_tokens) == ("hi", True, 7)
    assert args.overrides == ["evaluation.decoding.temperature=0.5"]
    cfg = apply_overrides(compose(FAST), args.overrides, args.max_new_tokens, args.sample)
    assert cfg.evaluation.decoding == {"do_sample": True, "temperature": 0.5, "top_p": 0.9, "max_new_tokens": 7}


@pytest.fixture
def chat_run(tmp_path, monkeypatch):
    """A run folder trained (to look at) on data=chat, and the prompts its sampler is given (it answers "ok")."""
    run_dir = tmp_path / "chat-run"
    save_run_config(run_dir, compose([*FAST, "data=chat", "method=lora", f"output.dir={run_dir}"]))
    (run_dir / "weights").mkdir()
    (run_dir / "weights" / "adapter_config.json").write_text("{}")
    given: list[list[str]] = []

    def sampler(_target, _cfg):
        return lambda prompts: given.append(list(prompts)) or ["ok"] * len(prompts)

    monkeypatch.setattr("thinker.commands.use.build_generate", sampler)
    return run_dir, given


def test_a_chat_trained_model_is_prompted_in_its_chat_template(chat_run, tmp_path, capsys):
    """`thinker chat` and `thinker generate` on a data=chat run render each prompt as one user turn in the
    tokenizer's chat template, the assistant header after it: what training and the eval stage gave the model
    (thinker.tasks.chat), not the `Prompt:` rendering of prompt/completion data."""
    from thinker.data.tokenize import render_prompt
    from thinker.models.loading import load_training_tokenizer

    run_dir, given = chat_run
    tokenizer = load_training_tokenizer(compose(["data=chat"]))
    expected = tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], tokenize=False,
                                             add_generation_prompt=True)
    assert expected.startswith("<|im_start|>user\n" + PROMPT) and expected.endswith("<|im_start|>assistant\n")
    assert thinker(["chat", str(run_dir), "--prompt", PROMPT]) == 0
    assert capsys.readouterr().out == "ok\n"
    source, out = tmp_path / "prompts.jsonl", tmp_path / "out.jsonl"
    source.write_text(json.dumps({"prompt": PROMPT}) + "\n")
    assert thinker(["generate", str(run_dir), "--input", str(source), "--output", str(out)]) == 0
    assert given == [[expected], [expected]] and expected != render_prompt(PROMPT)
    assert json.loads(out.read_text())["completion"] == "ok"


# ------------------------------------------------------------------ a real tiny run


@pytest.fixture(scope="module")
def trained(private_models_dir, tmp_path_factory):
    """A 2-step LoRA run with its .hydra/config.yaml, registered in the (private) model registry."""
    from thinker.backends.local.backend import train
    from thinker.models.finetunes import register_run_output

    run_dir = tmp_path_factory.mktemp("run")
    cfg = compose([*FAST, "method=lora", "trainer.max_steps=2", f"output.dir={run_dir}"])
    save_run_config(run_dir, cfg)
    report = train(cfg, run_dir, None)
    entry = register_run_output(cfg, report.weights, None)
    return run_dir, cfg, entry.model_name


def eval_sampler(run_dir, cfg):
    """What the eval stage samples with (thinker.run.evaluate.stage_eval), greedy, TOKENS new tokens."""
    from thinker.backends import TrainingReport, WeightsRef, instantiate_backend
    from thinker.data.tokenize import render_prompt

    cfg = OmegaConf.merge(cfg, {"evaluation": {"decoding": {"do_sample": False, "max_new_tokens": TOKENS}}})
    report = TrainingReport(backend="local", weights=WeightsRef.local(run_dir / "weights"))
    generate = instantiate_backend(cfg).sampler(report, cfg)
    return lambda prompt: generate([render_prompt(prompt)])[0]


@pytest.fixture
def sampler_calls(monkeypatch):
    """Records what the local sampler is built with and every batch of prompts it is given (and still samples)."""
    from thinker.evaluation import generate as generate_module

    real, seen = generate_module.local_generator, []

    def spy(weights_dir, decoding, device="cpu"):
        inner = real(weights_dir, decoding, device)
        seen.append((str(weights_dir), decoding))
        return lambda prompts: seen.append(list(prompts)) or inner(prompts)

    monkeypatch.setattr(generate_module, "local_generator", spy)
    return seen


@pytest.mark.slow
def test_chat_prompt_prints_what_the_eval_sampler_produces(trained, capsys, sampler_calls):
    from thinker.data.tokenize import render_prompt
    from thinker.evaluation.generate import Decoding

    run_dir, cfg, name = trained
    expected = eval_sampler(run_dir, cfg)(PROMPT)
    assert expected.strip(), "the tiny model generated nothing; the comparison would prove little"
    # the 2-step model may answer alike with or without the rendering, so what the sampler is given is checked too
    sampler_calls.clear()
    capsys.readouterr()
    assert thinker(["chat", str(run_dir), "--prompt", PROMPT, "--max-new-tokens", str(TOKENS)]) == 0
    assert capsys.readouterr().out == expected + "\n"
    assert sampler_calls == [(str((run_dir / "weights").resolve()), Decoding(False, 0.7, 0.9, TOKENS, int(cfg.seed))),
                    [render_prompt(PROMPT)]]
    assert thinker(["chat", name, "--max-new-tokens", str(TOKENS), "--prompt", PROMPT]) == 0  # by registry name
    assert capsys.readouterr().out == expected + "\n"


@pytest.mark.slow
def test_chat_loop_answers_each_line_until_an_empty_one(trained, capsys, monkeypatch):
    run_dir, cfg, _name = trained
    sample = eval_sampler(run_dir, cfg)
    expected = [sample(PROMPT), sample("Claim: vitamin D prevents colds.")]
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{PROMPT}\nClaim: vitamin D prevents colds.\n\nnever read\n"))
    assert thinker(["chat", str(run_dir / "weights"), "--max-new-tokens", str(TOKENS)]) == 0
    assert capsys.readouterr().out == "".join(e + "\n" for e in expected)
    monkeypatch.setattr("sys.stdin", io.StringIO(PROMPT + "\n"))  # EOF ends it too
    assert thinker(["chat", str(run_dir), "--max-new-tokens", str(TOKENS)]) == 0
    assert capsys.readouterr().out == expected[0] + "\n"


@pytest.mark.slow
def test_generate_adds_a_completion_to_every_record(trained, tmp_path, capsys, sampler_calls):
    from thinker.data.tokenize import render_prompt

    _run_dir, _cfg, name = trained
    records = [{"id": i, "question": f"Claim: drug {i} works.", "meta": {"k": [i]}} for i in range(3)]
    source, out = tmp_path / "prompts.jsonl", tmp_path / "sub" / "out.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert thinker(["generate", name, "--input", str(source), "--output", str(out), "--prompt-field", "question",
                    "--batch-size", "2", "--max-new-tokens", str(TOKENS)]) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == len(records)
    for line, record in zip(lines, records, strict=True):
        written = json.loads(line)
        assert {k: v for k, v in written.items() if k != "completion"} == record
        assert isinstance(written["completion"], str) and written["completion"].strip()
    err = capsys.readouterr().err
    assert "generated 2/3" in err and "generated 3/3" in err
    assert not list(out.parent.glob("*.tmp"))
    prompts = [render_prompt(r["question"]) for r in records]
    assert sampler_calls[1:] == [prompts[:2], prompts[2:]]  # batches of --batch-size, rendered as in training
