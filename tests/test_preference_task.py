"""The preference task (thinker.tasks.preference): the common record shapes become one PreferencePair, the
schema's check_pair refuses a pair that cannot be trained (one line naming the line), a pair tokenizes as
prompt + chosen / prompt + rejected with the loss weights on the completion only, the shipped sample is what
its script writes, and the config check refuses objective / data combinations that cannot train."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT, compose, launch
from omegaconf import OmegaConf

from thinker.config import rules
from thinker.data.tokenize import IGNORE_INDEX, render_prompt
from thinker.errors import ExitCode
from thinker.models.tokenizer import train_tokenizer
from thinker.tasks import task_of
from thinker.tasks.preference import (
    PairProblem,
    PreferencePair,
    check_pair,
    pair_from_record,
    read_pairs,
    tokenize_pair,
)
from thinker.validation.dataset import FieldSpec, validate_dataset

USER = {"role": "user", "content": "Name a prime."}
GOOD = {"role": "assistant", "content": "Seven."}
BAD = {"role": "assistant", "content": "Nine."}
CHAT_PAIR = PreferencePair((USER,), (GOOD,), (BAD,))


# ---------------------------------------------------------------- the shapes


def test_flat_text_records_are_text_pairs():
    pair = pair_from_record({"prompt": "2+2=", "chosen": "4", "rejected": "5"})
    assert pair == PreferencePair("2+2=", "4", "5") and not pair.is_chat


@pytest.mark.parametrize("record", [
    {"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]},  # TRL's conversational, explicit prompt
    {"messages": [USER], "chosen": "Seven.", "rejected": "Nine."},  # chat messages, text completions
    {"chosen": [USER, GOOD], "rejected": [USER, BAD]},  # whole conversations (implicit prompt)
    {"input": {"messages": [USER]}, "preferred_output": [GOOD], "non_preferred_output": [BAD]},  # OpenAI
    {"comparison": {"prompt_conversation": [USER], "completion_A": [BAD], "completion_B": [GOOD]}, "label": "B"},
], ids=["trl-conversational", "messages", "conversations", "openai", "tinker-comparison"])
def test_every_common_shape_becomes_the_same_chat_pair(record):
    assert pair_from_record(record) == CHAT_PAIR


def test_conversations_split_at_the_first_message_they_differ_in():
    turn = [USER, GOOD, {"role": "user", "content": "Another?"}]
    pair = pair_from_record({"chosen": [*turn, {"role": "assistant", "content": "Eleven."}],
                             "rejected": [*turn, {"role": "assistant", "content": "Twelve."}]})
    assert pair.prompt == tuple(turn) and pair.chosen == ({"role": "assistant", "content": "Eleven."},)


@pytest.mark.parametrize(("record", "problem"), [
    ({"prompt": "p", "chosen": "same", "rejected": "same"}, "chosen and rejected are the same"),
    ({"prompt": "p", "chosen": "a"}, "rejected is missing"),
    ({"prompt": "p", "rejected": "a"}, "chosen is missing"),
    ({"prompt": "p", "chosen": "a", "rejected": "  "}, "rejected is blank"),
    ({"chosen": "a", "rejected": "b"}, "prompt is missing"),
    ({"chosen": [USER, GOOD], "rejected": [USER, GOOD]}, "chosen and rejected are the same"),
    ({"input": {"messages": [USER]}, "preferred_output": [GOOD], "non_preferred_output": [GOOD]},
     "preferred_output and non_preferred_output are the same"),
    ({"input": {"messages": [USER]}, "preferred_output": [GOOD]}, "non_preferred_output is missing"),
    ({"comparison": {"prompt_conversation": [USER], "completion_A": [GOOD], "completion_B": [BAD]}, "label": "Tie"},
     "label 'Tie' prefers neither"),
    ({"prompt": [USER], "chosen": [USER], "rejected": [BAD]}, "chosen must end with an assistant message"),
    ({"prompt": [USER], "chosen": [{"role": "assistant", "content": ""}], "rejected": [BAD]}, "has no text content"),
    ({"text": "x"}, "no preference pair"),
])
def test_a_pair_that_cannot_train_is_refused_with_its_problem(record, problem):
    with pytest.raises(PairProblem, match=problem):
        pair_from_record(record)
    assert problem in check_pair(None, record)


# ---------------------------------------------------------------- the validate stage's schema


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_the_shipped_schema_names_each_bad_line(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": "p", "chosen": "a", "rejected": "b"},
        {"prompt": "p", "chosen": "a", "rejected": "a"},
        {"prompt": "p", "chosen": "a"},
        {"prompt": "p", "chosen": " ", "rejected": "b"},
    ])
    result = validate_dataset(path, FieldSpec.from_config(compose(["data=preference"]).data.schema))
    assert [str(issue) for issue in result.errors] == [
        "line 2: field 'rejected': chosen and rejected are the same (a pair must prefer one completion to another)",
        "line 3: field 'rejected': is missing",
        "line 4: field 'chosen': is a whitespace-only string",
        "line 4: field 'rejected': chosen is blank",  # check_pair reads the whole record
    ]


def test_the_shipped_sample_validates_and_reads_as_text_pairs():
    cfg = compose(["data=preference"])
    result = validate_dataset(ROOT / cfg.data.path, FieldSpec.from_config(cfg.data.schema))
    assert result.ok, result.summary()
    pairs = read_pairs(ROOT / cfg.data.path)
    assert len(pairs) == result.records == 120
    assert all(not p.is_chat and p.chosen != p.rejected and p.chosen.startswith("CLAIM[c1]:") for p in pairs)


def test_the_shipped_sample_is_what_its_script_writes(tmp_path):
    out = tmp_path / "pairs.jsonl"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_preference_sample.py"), "--out", str(out)],
                   check=True, capture_output=True)
    assert out.read_bytes() == (ROOT / "data" / "preference" / "claims_pairs.jsonl").read_bytes()
    rules_used = {json.loads(line)["metadata"]["corruption"] for line in out.read_text().splitlines()}
    assert rules_used == {"wrong_claim", "dropped_evidence"}


def test_a_bad_pair_stops_the_validate_stage_with_one_line(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"},
                                                  {"prompt": "p", "chosen": "same", "rejected": "same"}])
    out = launch(["data=preference", f"data.path={path}", "stage=validate", "logger=none"], tmp_path)
    assert out.returncode == ExitCode.VALIDATE, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("[thinker] error:")]
    assert len(errors) == 1 and "line 2: field 'rejected': chosen and rejected are the same" in errors[0]
    assert "Traceback" not in out.stderr


# ---------------------------------------------------------------- tokens


@pytest.fixture(scope="module")
def tokenizer():
    texts = ["Name a prime.", "Seven.", "Nine.", "2+2=", "4", "5"] * 20
    return train_tokenizer(texts, vocab_size=300)


def trained_ids(tok):
    return [t for t, label in zip(tok.input_ids, tok.labels, strict=True) if label != IGNORE_INDEX]


def test_a_text_pair_shares_the_rendered_prompt_and_trains_each_completion(tokenizer):
    chosen, rejected = tokenize_pair(tokenizer, PreferencePair("2+2=", "4", "5"), max_length=100)
    prompt = tokenizer(render_prompt("2+2="), add_special_tokens=False)["input_ids"]
    for tok, completion in ((chosen, "4"), (rejected, "5")):
        assert tok.input_ids[: len(prompt)] == prompt
        expected = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        assert trained_ids(tok) == expected  # the completion and its end of sequence, nothing of the prompt
        assert tok.weights == [0.0] * len(prompt) + [1.0] * len(expected)


def test_a_chat_pair_trains_the_completion_turn_not_the_prompts_assistant_turns(tokenizer):
    history = (USER, GOOD, {"role": "user", "content": "Another?"})
    pair = PreferencePair(history, (BAD,), (GOOD,))
    chosen, rejected = tokenize_pair(tokenizer, pair, max_length=1000)
    assert tokenizer.decode(trained_ids(chosen), skip_special_tokens=False) == "Nine.<|im_end|>\n"
    assert tokenizer.decode(trained_ids(rejected), skip_special_tokens=False) == "Seven.<|im_end|>\n"
    full = tokenizer.apply_chat_template([*history, BAD], tokenize=False)
    assert tokenizer.decode(chosen.input_ids, skip_special_tokens=False) == full


def test_the_task_is_chosen_by_data_format_and_reports_preference_metrics():
    task = task_of(OmegaConf.create({"format": "preference"}))
    assert task.pairs and task.eval_metrics == ("pref_accuracy", "pref_margin")
    assert (task.default_objective, task.default_direction) == ("pref_accuracy", "maximize")
    assert not task_of(OmegaConf.create({"format": "chat"})).pairs


# ---------------------------------------------------------------- config check


@pytest.mark.parametrize(("overrides", "what"), [
    (["objective=dpo"], "objective=dpo trains on preference pairs, and data=sample"),
    (["objective=dpo", "data=chat"], "objective=dpo trains on preference pairs, and data=chat"),
    (["objective=dpo", "data=preference", "objective.beta=0"], "objective.beta=0.0 is not allowed"),
    (["objective=dpo", "data=preference", "objective.beta=-0.1"], "objective.beta=-0.1 is not allowed"),
    (["objective=dpo", "data=preference", "objective.loss=kto"], "objective.loss=kto is not a preference loss"),
    (["objective=dpo", "data=preference", "objective.reference=gpt2"], "objective.reference=gpt2 is not supported"),
])
def test_objective_settings_that_cannot_train_are_refused(overrides, what):
    found = [v.what for v in rules.violations(compose([*overrides, "stage=validate"]), {})]
    assert any(what in v for v in found), found


def test_sft_on_pairs_is_refused_when_training_but_the_file_can_be_validated():
    # the rule itself: the backend's data formats may also refuse the combination first
    assert [v.what for v in rules.objective_fits_data(compose(["data=preference", "stage=run"]), {})] == [
        "data=preference holds preference pairs, which objective=sft cannot train on"]
    assert not list(rules.objective_fits_data(compose(["data=preference", "stage=validate"]), {}))
    assert not list(rules.objective_fits_data(compose(["objective=dpo", "data=preference"]), {}))
    assert not list(rules.dpo_settings_valid(compose(["experiment=claims_dpo"]), {}))


def test_beta_at_zero_stops_the_launch_at_config_check_with_one_line(tmp_path):
    out = launch(["experiment=claims_dpo", "objective.beta=0", "stage=validate", "logger=none"], tmp_path)
    assert out.returncode == ExitCode.CONFIG, out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("[thinker] error: objective.beta=0.0 is not allowed")
    assert "Traceback" not in out.stderr
