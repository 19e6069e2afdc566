"""`thinker data preview`: masked prompt, per-line loss weights, truncation and packing stats, on hand-made data."""

from __future__ import annotations

import json
import re

import pytest

from thinker.commands.cli import main

PROMPT = "Extract the claims from the hypothesis and the cited abstracts.\n\nHypothesis: Aspirin lowers fever."
COMPLETION = ("CLAIM[c1]: Aspirin lowers fever.\n"
              "CLAIM[c2] (Document 7): Aspirin reduced body temperature in adults.\n"
              "RELATION: c2 supports c1")
EVIDENCE = "CLAIM[c{}] (Document 7): Aspirin reduced body temperature in adults within two hours.\n"
# example 2: a short prompt and a completion far longer than MAX_LEN: truncated, still trained
LONG_COMPLETION = "CLAIM[c1]: Aspirin lowers fever.\n" + "".join(EVIDENCE.format(i) for i in range(2, 30))
# example 3: a prompt longer than MAX_LEN on its own: no completion token survives, training leaves it out
LONG_PROMPT = "Hypothesis: Aspirin lowers fever.\n\n" + "Document 7: Aspirin reduced body temperature. " * 60
MAX_LEN = 128
WEIGHTS = ["data.claim_c1_weight=5", "data.evidence_weight=2"]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("preview") / "train.jsonl"
    records = [(PROMPT, COMPLETION), ("Hypothesis: Aspirin lowers fever.", LONG_COMPLETION), (LONG_PROMPT, COMPLETION)]
    path.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in records))
    return path


def preview(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["data", "preview", *args])
    out, err = capsys.readouterr()
    return code, out, err


def example_block(out: str, number: int) -> str:
    """The header and text of example `number` (up to the next --- line)."""
    match = re.search(rf"^--- example {number}:.*?(?=^---)", out, re.S | re.M)
    assert match, out
    return match.group(0)


def stats_line(out: str) -> dict[str, str]:
    line = next(line for line in out.splitlines() if line.startswith("stats: "))
    return dict(item.split("=", 1) for item in line.removeprefix("stats: ").split())


@pytest.mark.slow  # builds the builtin model (about 5 s) and loads transformers
@pytest.mark.usefixtures("private_models_dir")
def test_piped_preview_marks_masked_prompt_and_line_weights(capsys, data_file):
    code, out, _ = preview(capsys, "data=jsonl", f"data.path={data_file}", *WEIGHTS, "-n", "1")
    assert code == 0
    block = example_block(out, 1)
    assert "\x1b[" not in out  # piped (capsys is no terminal): no ANSI codes
    lines = block.splitlines()
    assert "not truncated" in lines[1]
    text = "\n".join(lines[2:])
    # the whole prompt is one masked segment, then the completion line by line with its weight
    masked, rest = text.split("{w=5}", 1)
    assert masked.startswith("[masked]Extract the claims") and "Hypothesis: Aspirin lowers fever." in masked
    assert "{w=" not in masked
    assert "\n{w=5}CLAIM[c1]: Aspirin lowers fever.\n" in text
    assert "\n{w=2}CLAIM[c2] (Document 7): Aspirin reduced body temperature in adults.\n" in text
    assert "\n{w=1}RELATION: c2 supports c1" in text
    assert "--- example 2" not in out  # -n 1 after the overrides is honoured


@pytest.mark.slow
@pytest.mark.usefixtures("private_models_dir")
def test_stats_count_rows_truncated_and_left_out_examples(capsys, data_file):
    code, out, _ = preview(capsys, "-n", "3", "data=jsonl", f"data.path={data_file}", *WEIGHTS,
                           f"trainer.max_seq_length={MAX_LEN}", "--no-color")
    assert code == 0
    assert "not truncated" in example_block(out, 1)  # example 1 fits: it needs a row of its own
    second = example_block(out, 2)
    assert f"cut to trainer.max_seq_length={MAX_LEN}" in second and f"--- example 2: {MAX_LEN} tokens" in second
    assert "left out of training" not in second and "{w=2}CLAIM[c2]" in second
    third = example_block(out, 3)
    assert "left out of training" in third and "{w=" not in third
    stats = stats_line(out)
    # example 2 fills a row alone, example 1 cannot join it, example 3 is not packed at all
    assert stats["examples"] == "3" and stats["trained"] == "2"
    assert stats["rows"] == "2"
    assert stats["truncated"] == "1" and stats["left_out"] == "1"
    tokens = int(stats["tokens"])
    assert MAX_LEN < tokens < 2 * MAX_LEN
    assert stats["fill"] == f"{100 * tokens / (2 * MAX_LEN):.1f}%"


@pytest.mark.slow
@pytest.mark.usefixtures("private_models_dir")
def test_limit_and_colour(capsys, data_file):
    code, out, _ = preview(capsys, "data=jsonl", f"data.path={data_file}", *WEIGHTS, "--limit", "1", "-n", "1",
                           "--color")
    assert code == 0
    assert stats_line(out)["examples"] == "1" and stats_line(out)["rows"] == "1"
    assert "[masked]" not in out and "{w=" not in out
    assert "\x1b[2mExtract the claims" in out  # dim: masked prompt
    assert "\x1b[1;35mCLAIM[c1]: Aspirin lowers fever." in out  # the largest weight's colour


@pytest.mark.usefixtures("private_models_dir")
def test_chat_data_shows_the_template_with_masked_turns_and_trained_replies(capsys):
    code, out, _ = preview(capsys, "data=chat", "-n", "1")
    assert code == 0
    block = example_block(out, 1)
    # the rendered ChatML: system and user turns and each role header masked, the reply and its end trained
    assert "[masked]<|im_start|>system\nYou extract claims" in block
    assert "<|im_start|>user\nExtract the claims" in block
    masked_header, trained = block.split("<|im_start|>assistant\n", 1)
    assert masked_header.rfind("[masked]") > masked_header.rfind("{w=")  # the header is in a masked segment
    assert trained.startswith("{w=1}CLAIM[c1]: ") and "<|im_end|>" in trained
    assert "[masked]" not in trained.split("<|im_end|>", 1)[0]
    assert int(stats_line(out)["trained_tokens"]) > 0


def test_pretraining_data_is_refused_in_one_line(capsys):
    code, out, err = preview(capsys, "data=hotpotqa")
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("[thinker] error: data.format=multihop_qa is not trainable")


def test_pretraining_data_is_refused_under_a_backend_that_lists_no_formats(capsys):
    """A backend without a data_formats list trains every fine-tuning task: pretraining-only data is still
    refused in one line, saying why (not a crash on the missing list)."""
    code, out, err = preview(capsys, "data=hotpotqa", "backend.data_formats=null")
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "data.format=multihop_qa is not trainable locally (it is pretraining data" in lines[0]
