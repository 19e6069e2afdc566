"""Reasoning data for pretraining (thinker.data.reasoning, through the tasks): GSM8K and HotpotQA records -> text, prompt
and gold answer, answer checks, the dataset schemas of data=gsm8k / data=hotpotqa, and the shipped synthetic
files with their generator (scripts/make_reasoning_data.py)."""

from __future__ import annotations

import ast
import importlib.util
import json
import operator
import re
import subprocess
import sys
import textwrap

import pytest
from conftest import CONF, ROOT, compose, launch

from thinker.config import rules
from thinker.data.reasoning import (
    check_hotpotqa_context,
    check_hotpotqa_supporting_facts,
    gsm8k_answer_correct,
    gsm8k_example,
    gsm8k_generated_answer,
    hotpotqa_answer_correct,
    hotpotqa_example,
    hotpotqa_generated_answer,
    normalize_answer,
    normalize_number,
    read_examples,
)
from thinker.tasks import task_of
from thinker.validation.dataset import FieldSpec, validate_dataset

DATA = ROOT / "data"
SHIPPED = {"gsm8k": ["train.jsonl", "test.jsonl"], "hotpotqa": ["train.jsonl", "dev.jsonl"]}
GSM8K_RECORD = {
    "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                "How many clips did Natalia sell altogether in April and May?",
    "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
              "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72",
}
HOTPOTQA_RECORD = {
    "_id": "5a8b57f25542995d1e6f1371",
    "question": "Which city was the founder of Velmora Systems born in?",
    "answer": "The Dunmere",
    "supporting_facts": [["Velmora Systems", 1], ["Arin Tesk", 1]],
    "context": [
        ["Arin Tesk", ["Arin Tesk is an engineer.", " He was born in The Dunmere in 1950."]],
        ["Kelso Works", ["Kelso Works is a shipping company.", " It was founded in 1901."]],
        ["Velmora Systems", ["Velmora Systems is a software company.", " It was founded by Arin Tesk in 1987."]],
    ],
    "type": "bridge",
    "level": "medium",
}


# ---------------------------------------------------------------- processors


def test_gsm8k_example_text_prompt_and_answer():
    example = gsm8k_example(GSM8K_RECORD)
    prompt = ("Question: Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in "
              "May. How many clips did Natalia sell altogether in April and May?\nReasoning:")
    assert example.prompt == prompt
    # the calculator annotations are gone; the final answer follows "Answer:"
    assert example.text == (prompt + "\nNatalia sold 48/2 = 24 clips in May.\n"
                            "Natalia sold 48+24 = 72 clips altogether in April and May.\nAnswer: 72")
    assert example.answer == "72"
    assert gsm8k_example({"question": "q", "answer": "Add them.\n#### 1,200.50"}).answer == "1200.5"
    with pytest.raises(ValueError, match="####"):
        gsm8k_example({"question": "q", "answer": "The answer is 72."})


def test_hotpotqa_example_marks_the_supporting_sentences():
    example = hotpotqa_example(HOTPOTQA_RECORD)
    prompt = ("Question: Which city was the founder of Velmora Systems born in?\nContext:\n"
              "Arin Tesk: Arin Tesk is an engineer. He was born in The Dunmere in 1950.\n"
              "Kelso Works: Kelso Works is a shipping company. It was founded in 1901.\n"
              "Velmora Systems: Velmora Systems is a software company. It was founded by Arin Tesk in 1987.\n"
              "Reasoning:")
    assert example.prompt == prompt
    # the reasoning is the supporting sentences in supporting_facts order, each with its title and index
    assert example.text == (prompt + "\n[Velmora Systems, 1] It was founded by Arin Tesk in 1987.\n"
                            "[Arin Tesk, 1] He was born in The Dunmere in 1950.\nAnswer: The Dunmere")
    assert example.answer == "dunmere"  # HotpotQA's normalisation drops the article
    broken = {**HOTPOTQA_RECORD, "supporting_facts": [["Arin Tesk", 2]]}
    with pytest.raises(ValueError, match="not a sentence of the context"):
        hotpotqa_example(broken)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("72", "72"), ("72.0", "72"), ("1,200.50", "1200.5"), ("$18", "18"), ("-3", "-3"), ("-0", "0"),
     ("007", "7"), ("0.250", "0.25"), ("72.", "72"), ("", None), (".", None), ("seventy", None), ("NaN", None),
     ("1/2", None)],
)
def test_normalize_number(text, expected):
    assert normalize_number(text) == expected


@pytest.mark.parametrize(
    ("generated", "expected"),
    [(" Natalia sold 24 clips in May.\n#### 72", "72"),                  # GSM8K's own marker wins
     ("So 4 + 5 = 9.\nAnswer: 9\n#### 10", "10"),
     ("She pays 32*3 = 96 dollars.\nAnswer: 96", "96"),                   # this project's text format
     ("Answer: $1,000.00 in total", "1000"),
     ("3 boxes of 4 make 12 eggs", "12"),                                  # neither: the last number
     ("So 72 clips.\nAnswer: 72\nQuestion: Tom has 5 apples.\nReasoning:\nAnswer: 9", "72"),  # ran on
     ("\nQuestion: Tom has 5 apples. Answer: 5", None),                 # a new example before any answer
     ("I do not know.", None)],
)
def test_gsm8k_generated_answer(generated, expected):
    assert gsm8k_generated_answer(generated) == expected


def test_gsm8k_answer_correct():
    assert gsm8k_answer_correct("\nNatalia sold 72 clips.\nAnswer: 72.0", "72")
    assert gsm8k_answer_correct("#### 1,200", "1200")
    assert not gsm8k_answer_correct("Answer: 71", "72")
    assert not gsm8k_answer_correct("no number at all", "72")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("The Dunmere", "dunmere"), ("  A  dog, an apple! ", "dog apple"), ("U.S.A.", "usa"),
     ("Theatre of the Sun", "theatre of sun"), ("yes", "yes")],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_hotpotqa_answer_correct():
    assert hotpotqa_generated_answer("[Arin Tesk, 1] He was born there.\nAnswer: the Dunmere.\nQuestion: next") == (
        "dunmere")
    assert hotpotqa_answer_correct("\n[Arin Tesk, 1] ...\nAnswer: the Dunmere.\nQuestion: next", "Dunmere")
    assert hotpotqa_answer_correct("Answer: Answer: yes", "Yes")  # the last "Answer:" counts
    assert hotpotqa_answer_correct("Answer: Dunmere\nQuestion: Where is Kelso?\nAnswer: Paris", "Dunmere")
    assert not hotpotqa_answer_correct("Answer: no", "yes")
    assert not hotpotqa_answer_correct("Answer: Dunmere city", "Dunmere")  # exact match, not containment
    assert not hotpotqa_answer_correct("Dunmere", "Dunmere")  # no "Answer:": nothing was answered


def pretraining_task(data):
    return task_of(compose([f"data={data}"]).data)


def test_pretraining_processors_by_task():
    """The data's task declares how its records become pretraining examples (nothing else names the format)."""
    assert pretraining_task("hotpotqa").pretraining_example is hotpotqa_example
    assert pretraining_task("hotpotqa").pretraining_answer_correct is hotpotqa_answer_correct
    assert pretraining_task("gsm8k").pretraining_example is gsm8k_example
    assert pretraining_task("gsm8k").pretraining_answer_correct is gsm8k_answer_correct
    with pytest.raises(NotImplementedError):
        pretraining_task("scifact").pretraining_example(GSM8K_RECORD)
    for data, fmt in (("gsm8k", "reasoning"), ("hotpotqa", "multihop_qa")):
        assert str(compose([f"data={data}"]).data.format) == fmt


def test_read_examples_names_the_bad_line(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text(json.dumps(GSM8K_RECORD) + "\n\n" + json.dumps({"question": "q", "answer": "no final"}) + "\n")
    with pytest.raises(ValueError, match="line 3"):
        read_examples(path, gsm8k_example)
    assert [e.answer for e in read_examples(path, gsm8k_example, limit=1)] == ["72"]


# ---------------------------------------------------------------- schemas and shipped files


def schema(data):
    cfg = compose([f"data={data}"])
    return FieldSpec.from_config(cfg.data.schema), ROOT / cfg.data.path


@pytest.mark.parametrize(("data", "records"), [("gsm8k", 400), ("hotpotqa", 300)])
def test_configured_file_validates(data, records):
    fields, path = schema(data)
    assert path == DATA / data / "train.jsonl"
    result = validate_dataset(path, fields)
    assert result.ok, result.summary()
    assert result.records == records


@pytest.mark.parametrize(("data", "name"), [(d, n) for d, names in SHIPPED.items() for n in names])
def test_shipped_files_validate_and_build_examples(data, name):
    fields, _ = schema(data)
    path = DATA / data / name
    assert validate_dataset(path, fields).ok
    task = pretraining_task(data)
    examples = read_examples(path, task.pretraining_example)
    assert all(e.text.startswith(e.prompt) and e.prompt.endswith("\nReasoning:") for e in examples)
    correct = task.pretraining_answer_correct
    assert all(correct(e.text[len(e.prompt):], e.answer) for e in examples)  # the text scores as right


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _arithmetic(node):
    if isinstance(node, ast.Constant):
        return node.value
    return _OPS[type(node.op)](_arithmetic(node.left), _arithmetic(node.right))


def test_shipped_gsm8k_chains_are_correct():
    """Every calculator annotation <<expr=value>> evaluates to its value, and the final answer is the last
    step's result."""
    for name in SHIPPED["gsm8k"]:
        for line in (DATA / "gsm8k" / name).read_text().splitlines():
            answer = json.loads(line)["answer"]
            steps = re.findall(r"<<([^=<>]+)=([^<>]+)>>", answer)
            assert len(steps) >= 2, answer
            for expression, value in steps:
                assert _arithmetic(ast.parse(expression, mode="eval").body) == int(value), answer
            assert answer.rsplit("#### ", 1)[1] == steps[-1][1]


def test_shipped_splits_are_disjoint():
    def questions(data, name):
        return {json.loads(line)["question"] for line in (DATA / data / name).read_text().splitlines()}

    assert not questions("gsm8k", "train.jsonl") & questions("gsm8k", "test.jsonl")
    train_titles = {p[0] for line in (DATA / "hotpotqa" / "train.jsonl").read_text().splitlines()
                    for p in json.loads(line)["context"]}
    dev_titles = {p[0] for line in (DATA / "hotpotqa" / "dev.jsonl").read_text().splitlines()
                  for p in json.loads(line)["context"]}
    assert not train_titles & dev_titles  # dev questions are about entities train never mentions


def corrupted(tmp_path, records):
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_corrupted_gsm8k_records_fail_validation(tmp_path):
    fields, _ = schema("gsm8k")
    good = GSM8K_RECORD
    path = corrupted(tmp_path, [
        good,
        {**good, "answer": "Natalia sold 72 clips.\nThe answer is 72"},          # no #### line
        {**good, "answer": "Natalia sold 72 clips.\n#### 72\nThat is all."},     # #### not last
        {**good, "answer": "#### 72"},                                            # no reasoning
        {**good, "answer": "Natalia sold 72 clips.\n#### seventy-two"},         # not a number
        {"question": "", "answer": good["answer"]},
    ])
    result = validate_dataset(path, fields)
    issues = {issue.line: str(issue) for issue in result.errors}
    assert sorted(issues) == [2, 3, 4, 5, 6], result.summary()
    assert "field 'answer': does not match pattern" in issues[2] and "####" in issues[2]
    assert "field 'answer': does not match pattern" in issues[3]
    assert "has no reasoning steps before its '####' line" in issues[4]
    assert "does not match pattern" in issues[5]
    assert "field 'question': is an empty string" in issues[6]


def test_corrupted_hotpotqa_records_fail_validation(tmp_path):
    fields, _ = schema("hotpotqa")
    good = HOTPOTQA_RECORD
    path = corrupted(tmp_path, [
        good,
        {**good, "supporting_facts": [["Velmora Systems", 1], ["Arin Teskk", 1]]},   # missing title
        {**good, "supporting_facts": [["Velmora Systems", 2]]},                        # bad sentence index
        {**good, "supporting_facts": [["Velmora Systems", "1"]]},                      # index not an integer
        {**good, "context": [["Arin Tesk", ["s"]], ["Kelso Works"]]},                  # not a pair
        {**good, "context": [["Arin Tesk", ["s"]], ["Arin Tesk", ["t"]]]},            # a title twice
        {**good, "context": [["Arin Tesk", ["s"]], ["Kelso Works", [3]]]},             # sentence not a string
        {**good, "type": "yes-no"},
        {key: value for key, value in good.items() if key != "supporting_facts"},
    ])
    result = validate_dataset(path, fields)
    issues = {issue.line: str(issue) for issue in result.errors}
    assert sorted(issues) == [2, 3, 4, 5, 6, 7, 8, 9], result.summary()
    assert issues[2] == ("line 2: field 'supporting_facts': fact 1 names title 'Arin Teskk', which is not a "
                         "paragraph of the context")
    assert issues[3] == ("line 3: field 'supporting_facts': fact 0 points at sentence 2 of 'Velmora Systems', "
                         "which has 2 sentences (indices 0-1)")
    assert "fact 0 is [\"Velmora Systems\", \"1\"], not a [title, sentence index] pair" in issues[4]
    assert issues[5] == 'line 5: field \'context\': paragraph 1 is ["Kelso Works"], not a [title, [sentence, ...]] pair'
    assert "title 'Arin Tesk' appears twice" in issues[6]
    assert "sentence 0 is 3, not a string" in issues[7]
    assert "field 'type'" in issues[8]
    assert issues[9] == "line 9: field 'supporting_facts': is missing"
    # a malformed context is reported once, on the context, not again by the supporting-facts check
    assert [i.field for i in result.errors if i.line == 5] == ["context"]


def test_validators_called_directly():
    record = HOTPOTQA_RECORD
    assert check_hotpotqa_context(record["context"], record) is None
    assert check_hotpotqa_supporting_facts(record["supporting_facts"], record) is None
    assert "which has 2 sentences" in check_hotpotqa_supporting_facts([["Arin Tesk", -1]], record)


# ---------------------------------------------------------------- the launcher


@pytest.mark.parametrize("data", ["gsm8k", "hotpotqa"])
def test_validate_stage_passes(tmp_path, data):
    out = launch([f"data={data}", "stage=validate", "validation.pytest.enabled=false", "logger=none"], tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    records = 400 if data == "gsm8k" else 300
    assert f"validation: {records} records ok" in out.stderr + out.stdout


def test_fine_tuning_backends_refuse_multihop_qa(tmp_path):
    out = launch(["data=hotpotqa", "stage=train", "logger=none"], tmp_path)
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert "data.format=multihop_qa: backend=local trains" in out.stderr
    for backend in ("local", "tinker", "provider"):  # no backend fine-tunes it: its task is pretraining data
        cfg = compose(["data=hotpotqa", "stage=train", f"backend={backend}"])
        assert [v.what.split(" (")[0] for v in rules.data_format_trainable_by_backend(cfg, {})] == [
            f"data.format=multihop_qa: backend={backend} trains fine-tuning data, not multihop_qa"]


def test_checking_a_hotpotqa_config_stays_light():
    """The schema's validators are imported at config check: thinker.data.reasoning must not bring torch with it."""
    script = textwrap.dedent(
        f"""
        import json, sys
        import thinker.config.schema
        from hydra import compose, initialize_config_dir
        from thinker.config.check import check_config
        with initialize_config_dir(config_dir={str(CONF)!r}, version_base="1.3"):
            cfg = compose(config_name="config", overrides=["data=hotpotqa", "stage=validate"])
        check_config(cfg, env={{}})
        assert "thinker.data.reasoning" in sys.modules
        print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ("torch", "transformers", "mlflow"))))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


# ---------------------------------------------------------------- the generator


def load_generator():
    spec = importlib.util.spec_from_file_location("make_reasoning_data", ROOT / "scripts" / "make_reasoning_data.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def test_generator_is_deterministic_and_matches_shipped_files(tmp_path):
    generator = load_generator()
    first = generator.generate(tmp_path / "a")
    second = generator.generate(tmp_path / "b")
    other = generator.generate(tmp_path / "c", seed=4)
    assert [p.relative_to(tmp_path / "a") for p in first] == [p.relative_to(tmp_path / "b") for p in second]
    for a, b, c in zip(first, second, other, strict=True):
        relative = a.relative_to(tmp_path / "a")
        assert a.read_bytes() == b.read_bytes(), relative
        assert a.read_bytes() != c.read_bytes(), relative  # the seed matters
        assert a.read_bytes() == (DATA / relative).read_bytes(), f"{relative} is stale: rerun the script"
        assert (DATA / relative).stat().st_size < 300_000, relative
    counts = {str(p.relative_to(tmp_path / "a")): len(p.read_text().splitlines()) for p in first}
    assert counts == {"gsm8k/train.jsonl": 400, "gsm8k/test.jsonl": 60, "hotpotqa/train.jsonl": 300,
                      "hotpotqa/dev.jsonl": 50}
