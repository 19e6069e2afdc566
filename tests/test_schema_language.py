"""The dataset schema language: each keyword both ways, the messages type, custom validators, schema errors
refused at config check, and the shipped data configs against their shipped files.

(type, required and allow_empty on their own are covered in test_dataset_validator.py.)
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
from conftest import ROOT, clean_env, compose, group_options, launch
from hypothesis import given, settings
from hypothesis import strategies as st

from thinker.config import rules
from thinker.config.check import check_config
from thinker.data.scifact import convert_scifact
from thinker.errors import ExitCode, ThinkerError
from thinker.validation.dataset import FieldSpec, SchemaError, validate_dataset

SHIPPED_C1 = r"(?m)^CLAIM\[c1\]: \S"  # conf/data/sample.yaml's completion pattern
_module_numbers = itertools.count()


def jsonl(*records: object) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def check(path: Path, records: list[object], *fields: FieldSpec) -> list[str]:
    """Write `records` to `path` and return the validator's issues as strings."""
    path.write_text(jsonl(*records), encoding="utf-8")
    result = validate_dataset(path, list(fields))
    assert result.records == len(records)
    return [str(issue) for issue in result.errors]


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    return tmp_path / "data.jsonl"


@pytest.fixture(scope="module")
def hypo_file(tmp_path_factory) -> Path:
    # one file rewritten by every Hypothesis example (a function-scoped tmp_path would be shared anyway)
    return tmp_path_factory.mktemp("hypothesis") / "data.jsonl"


VALIDATORS = '''
calls = []

def no_todo(value, record):
    if "TODO" in value:
        return "still contains TODO"
    return None

def mentions_id(value, record):
    if str(record["id"]) not in value:
        return f"does not mention the record's id {record['id']}"
    return None

def explodes(value, record):
    raise KeyError("boom")

def returns_true(value, record):
    return True

def counting(value, record):
    calls.append(value)
    return None

def one_argument(value):
    return None

NOT_A_FUNCTION = 3
'''


@pytest.fixture
def checks_module(tmp_path: Path, monkeypatch) -> str:
    """A module of custom validators on sys.path, under a name no other test uses (sys.modules caches it)."""
    name = f"thinker_test_checks_{next(_module_numbers)}"
    folder = tmp_path / "validators"
    folder.mkdir()
    (folder / f"{name}.py").write_text(VALIDATORS)
    monkeypatch.syspath_prepend(str(folder))
    return name


# ---------------------------------------------------------------- pattern (re.search)


def test_pattern_matches_anywhere_like_re_search(data_file):
    spec = FieldSpec("v", pattern="b+c")
    assert check(data_file, [{"v": "abbbcd"}], spec) == []
    assert check(data_file, [{"v": "bc"}, {"v": "abd"}], spec) == [
        "line 2: field 'v': does not match pattern 'b+c' (got \"abd\")"
    ]


def test_pattern_anchors_are_the_users(data_file):
    anchored = FieldSpec("v", pattern=r"^\d+$")
    assert check(data_file, [{"v": "123"}], anchored) == []
    assert len(check(data_file, [{"v": "x123"}], anchored)) == 1


def test_pattern_is_compiled_once_when_the_spec_is_built():
    spec = FieldSpec("v", pattern="a|b")
    assert spec.regex is not None and spec.regex.pattern == "a|b"
    assert FieldSpec("v").regex is None


def test_long_values_are_cut_in_pattern_messages(data_file):
    issues = check(data_file, [{"v": "x" * 500}], FieldSpec("v", pattern="y"))
    assert len(issues) == 1 and len(issues[0]) < 120 and '..."' in issues[0]


@pytest.mark.parametrize(
    ("completion", "ok"),
    [
        ("CLAIM[c1]: A increases B.", True),
        ("CLAIM[c1]: A.\nCLAIM[c2] (Document 3): B.\nRELATION: c2 supports c1", True),
        ("RELATION: c2 supports c1\nCLAIM[c1]: A.", True),  # contains the line: the gate checks it comes first
        ("CLAIM[c2]: A.", False),
        ("CLAIM[c1]:", False),
        ("CLAIM[c1]: ", False),
        (" CLAIM[c1]: A.", False),
        ("The claim is CLAIM[c1]: A.", False),
        ("claim[c1]: a.", False),
    ],
)
def test_shipped_completion_pattern_needs_a_claim_c1_line(data_file, completion, ok):
    spec = FieldSpec.from_config(compose().data.schema)
    issues = check(data_file, [{"prompt": "p", "completion": completion}], *spec)
    expected = [] if ok else [f"line 1: field 'completion': does not match pattern {SHIPPED_C1!r} (got "
                              f"{json.dumps(completion)})"]
    assert issues == expected


# ---------------------------------------------------------------- min / max (Hypothesis)

bounds = st.none() | st.integers(-1000, 1000)


@settings(deadline=None)
@given(low=bounds, high=bounds, value=st.integers(-3000, 3000))
def test_integer_range(hypo_file, low, high, value):
    if low is not None and high is not None and low > high:
        low, high = high, low
    issues = check(hypo_file, [{"v": value}], FieldSpec("v", "integer", min=low, max=high))
    if low is not None and value < low:
        assert issues == [f"line 1: field 'v': is {value}, below min {low}"]
    elif high is not None and value > high:
        assert issues == [f"line 1: field 'v': is {value}, above max {high}"]
    else:
        assert issues == []


finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6)


@settings(deadline=None)
@given(low=st.none() | finite, high=st.none() | finite, value=finite | st.integers(-10**6, 10**6))
def test_number_range(hypo_file, low, high, value):
    if low is not None and high is not None and low > high:
        low, high = high, low
    issues = check(hypo_file, [{"v": value}], FieldSpec("v", "number", min=low, max=high))
    inside = (low is None or value >= low) and (high is None or value <= high)
    assert (issues == []) == inside, issues
    if not inside:
        assert issues[0].startswith(f"line 1: field 'v': is {value}, ")
        assert ("below min" if low is not None and value < low else "above max") in issues[0]


def test_range_bound_is_inclusive_and_shown_without_a_trailing_zero(data_file):
    spec = FieldSpec("v", "number", min=0.0, max=2.5)  # OmegaConf hands bounds over as floats
    assert check(data_file, [{"v": 0}, {"v": 2.5}], spec) == []
    assert check(data_file, [{"v": -0.5}, {"v": 3}], spec) == [
        "line 1: field 'v': is -0.5, below min 0",
        "line 2: field 'v': is 3, above max 2.5",
    ]


# ---------------------------------------------------------------- min_length / max_length (Hypothesis)

lengths = st.none() | st.integers(0, 12)


def _length_case(low, high):
    if low is not None and high is not None and low > high:
        low, high = high, low
    return low, high


@settings(deadline=None)
@given(low=lengths, high=lengths, value=st.text(max_size=16))
def test_string_length_counts_characters(hypo_file, low, high, value):
    low, high = _length_case(low, high)
    spec = FieldSpec("v", allow_empty=True, min_length=low, max_length=high)
    issues = check(hypo_file, [{"v": value}], spec)
    n = len(value)
    unit = "character" if n == 1 else "characters"
    if low is not None and n < low:
        assert issues == [f"line 1: field 'v': has {n} {unit}, fewer than min_length {low}"]
    elif high is not None and n > high:
        assert issues == [f"line 1: field 'v': has {n} {unit}, more than max_length {high}"]
    else:
        assert issues == []


@settings(deadline=None)
@given(low=lengths, high=lengths, value=st.lists(st.integers(), max_size=16))
def test_array_length_counts_items(hypo_file, low, high, value):
    low, high = _length_case(low, high)
    issues = check(hypo_file, [{"v": value}], FieldSpec("v", "array", allow_empty=True, min_length=low,
                                                         max_length=high))
    inside = (low is None or len(value) >= low) and (high is None or len(value) <= high)
    assert (issues == []) == inside, issues
    if not inside:
        assert "item" in issues[0] and "_length" in issues[0]


def test_length_counts_code_points_not_bytes(data_file):
    spec = FieldSpec("v", max_length=3)
    assert check(data_file, [{"v": "äöü"}], spec) == []
    assert check(data_file, [{"v": "äöüß"}], spec) == [
        "line 1: field 'v': has 4 characters, more than max_length 3"
    ]


def test_empty_check_comes_before_min_length(data_file):
    # "" is refused as empty (allow_empty is false), not as too short
    assert check(data_file, [{"v": ""}], FieldSpec("v", min_length=2)) == ["line 1: field 'v': is an empty string"]


# ---------------------------------------------------------------- choices


@pytest.mark.parametrize(
    ("type_", "choices", "good", "bad", "shown"),
    [
        ("string", ("SUPPORT", "CONTRADICT"), "SUPPORT", "support", '"support", not one of "SUPPORT", "CONTRADICT"'),
        ("integer", (1, 2, 3), 2, 4, '4, not one of 1, 2, 3'),
        ("number", (0.5, 1), 1.0, 0.25, '0.25, not one of 0.5, 1'),
        ("boolean", (True,), True, False, 'false, not one of true'),
    ],
)
def test_choices(data_file, type_, choices, good, bad, shown):
    spec = FieldSpec("v", type_, choices=choices)
    assert check(data_file, [{"v": good}], spec) == []
    assert check(data_file, [{"v": good}, {"v": bad}], spec) == [f"line 2: field 'v': is {shown}"]


def test_choices_keep_json_types_apart(data_file):
    # True == 1 in Python, but a boolean is not an integer in JSON: the type check refuses it first
    assert check(data_file, [{"v": True}], FieldSpec("v", "integer", choices=(1,))) == [
        "line 1: field 'v': expected integer, got boolean"
    ]


# ---------------------------------------------------------------- fields (nested objects)

METADATA = FieldSpec(
    "metadata",
    "object",
    required=False,
    fields=(FieldSpec("claim_id", "integer", min=0), FieldSpec("tags", "array", allow_empty=True)),
)


def test_nested_fields_both_ways(data_file):
    good = [{"metadata": {"claim_id": 3, "tags": []}}, {}, {"metadata": None}]
    assert check(data_file, good, METADATA) == []
    bad = [{"metadata": {"claim_id": -1, "tags": []}}, {"metadata": {"claim_id": "7"}}, {"metadata": {}}]
    assert check(data_file, bad, METADATA) == [
        "line 1: field 'metadata.claim_id': is -1, below min 0",
        "line 2: field 'metadata.claim_id': expected integer, got string",
        "line 2: field 'metadata.tags': is missing",
        "line 3: field 'metadata': is an empty object",
    ]


# ---------------------------------------------------------------- custom validators


def test_custom_validator_message_surfaces_with_its_line_number(data_file, checks_module):
    spec = FieldSpec("completion", validator=f"{checks_module}:no_todo")
    records = [{"completion": "done"}, {"completion": "fine"}, {"completion": "TODO: write it"}]
    result_issues = check(data_file, records, spec)
    assert result_issues == ["line 3: field 'completion': still contains TODO"]


def test_custom_validator_sees_the_whole_record(data_file, checks_module):
    spec = FieldSpec("text", validator=f"{checks_module}.mentions_id")  # module.function works too
    records = [{"id": 7, "text": "record 7"}, {"id": 8, "text": "record 7"}]
    assert check(data_file, records, spec) == ["line 2: field 'text': does not mention the record's id 8"]


def test_every_failing_record_is_kept_and_the_summary_shows_the_first_n(data_file, checks_module):
    data_file.write_text(jsonl(*[{"v": f"TODO {i}"} for i in range(12)]))
    result = validate_dataset(data_file, [FieldSpec("v", validator=f"{checks_module}:no_todo")])
    assert [issue.line for issue in result.errors] == list(range(1, 13))
    lines = result.summary(max_shown=3).splitlines()
    assert lines[1:] == [
        "  line 1: field 'v': still contains TODO",
        "  line 2: field 'v': still contains TODO",
        "  line 3: field 'v': still contains TODO",
        "  ... and 9 more",
    ]


def test_an_exception_inside_a_validator_is_reported_on_its_line_and_the_scan_goes_on(data_file, checks_module):
    path = f"{checks_module}:explodes"
    issues = check(data_file, [{"v": "a"}, {"v": 1}, {"v": "b"}], FieldSpec("v", validator=path))
    assert issues == [
        f"line 1: field 'v': validator {path} raised KeyError: 'boom'",
        "line 2: field 'v': expected string, got integer",
        f"line 3: field 'v': validator {path} raised KeyError: 'boom'",
    ]


def test_a_validator_must_return_none_or_a_message(data_file, checks_module):
    path = f"{checks_module}:returns_true"
    assert check(data_file, [{"v": "a"}], FieldSpec("v", validator=path)) == [
        f"line 1: field 'v': validator {path} returned True; it must return None (fine) or a message saying "
        "what is wrong"
    ]


def test_a_validator_runs_only_on_values_that_passed_the_other_checks(data_file, checks_module):
    import importlib

    spec = FieldSpec("v", pattern="^ok", validator=f"{checks_module}:counting", required=False)
    issues = check(data_file, [{"v": "ok 1"}, {"v": "bad"}, {"v": 3}, {"v": ""}, {}, {"v": "ok 2"}], spec)
    assert len(issues) == 3  # the pattern, the type and the empty string
    assert importlib.import_module(checks_module).calls == ["ok 1", "ok 2"]


def test_an_object_validator_runs_only_when_its_fields_passed(data_file, checks_module):
    import importlib

    spec = FieldSpec("m", "object", fields=(FieldSpec("n", "integer"),), validator=f"{checks_module}:counting")
    issues = check(data_file, [{"m": {"n": 1}}, {"m": {"n": "x"}}, {"m": {"n": 2}}], spec)
    assert issues == ["line 2: field 'm.n': expected integer, got string"]
    assert importlib.import_module(checks_module).calls == [{"n": 1}, {"n": 2}]


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("thinker_no_such_module_xyz:check", "cannot be imported (no module named 'thinker_no_such_module_xyz')"),
        ("{m}:missing", "does not exist ({m} has no 'missing')"),
        ("{m}:NOT_A_FUNCTION", "is not callable (it is of type int)"),
        ("{m}:one_argument", "cannot be called as fn(value, record) (it takes (value))"),
        ("no_colon_or_dot", "is not a module:function path"),
    ],
)
def test_a_validator_that_cannot_be_used_is_a_schema_error(checks_module, target, problem):
    target = target.format(m=checks_module)
    with pytest.raises(SchemaError) as info:
        FieldSpec("completion", validator=target)
    assert info.value.field == "completion"
    assert info.value.problem == f"validator {target!r} {problem.format(m=checks_module)}"


def test_a_validator_module_that_fails_on_import_is_a_schema_error(tmp_path, monkeypatch):
    (tmp_path / "thinker_broken_checks.py").write_text("raise RuntimeError('half written')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SchemaError, match="thinker_broken_checks raised RuntimeError: half written"):
        FieldSpec("v", validator="thinker_broken_checks:f")


# ---------------------------------------------------------------- the messages type

SYSTEM = {"role": "system", "content": "Be brief."}
USER = {"role": "user", "content": "Hi"}
ASSISTANT = {"role": "assistant", "content": "Hello"}


@pytest.mark.parametrize(
    "messages",
    [
        [USER, ASSISTANT],
        [SYSTEM, USER, ASSISTANT],
        [SYSTEM, USER, ASSISTANT, USER, ASSISTANT],
        [USER, {**ASSISTANT, "weight": 1, "name": "bot"}],  # extra keys are left to the trainer
    ],
)
def test_good_conversations(data_file, messages):
    assert check(data_file, [{"messages": messages}], FieldSpec("messages", "messages")) == []


@pytest.mark.parametrize(
    ("messages", "problem"),
    [
        ([], "has no messages (a conversation needs a user and an assistant message)"),
        ([USER], "ends with a user message; the last message must be the assistant's"),
        ([SYSTEM], "ends with a system message; the last message must be the assistant's"),
        ([ASSISTANT], "message 1: expected a user message, got assistant (after an optional system message, "
                      "user and assistant alternate, starting with user)"),
        ([USER, USER, ASSISTANT], "message 2: expected an assistant message, got user (after an optional system "
                                  "message, user and assistant alternate, starting with user)"),
        ([USER, ASSISTANT, ASSISTANT], "message 3: expected a user message, got assistant (after an optional "
                                       "system message, user and assistant alternate, starting with user)"),
        ([USER, SYSTEM, ASSISTANT], "message 2: a system message may only come first"),
        ([SYSTEM, SYSTEM, USER, ASSISTANT], "message 2: a system message may only come first"),
        ([USER, {"role": "bot", "content": "x"}], 'message 2: role "bot" is not one of system, user, assistant'),
        ([USER, {"role": "Assistant", "content": "x"}],
         'message 2: role "Assistant" is not one of system, user, assistant'),
        ([USER, {"role": "tool", "content": "x"}], 'message 2: role "tool" is not one of system, user, assistant'),
        ([USER, {"role": 1, "content": "x"}], "message 2: role 1 is not one of system, user, assistant"),
        ([USER, {"content": "x"}], "message 2: role is missing"),
        ([USER, {"role": "assistant"}], "message 2 (assistant): content is missing"),
        ([USER, {"role": "assistant", "content": ""}], "message 2 (assistant): content is an empty string"),
        ([USER, {"role": "assistant", "content": " \n"}],
         "message 2 (assistant): content is a whitespace-only string"),
        ([USER, {"role": "assistant", "content": None}], "message 2 (assistant): expected string content, got null"),
        ([USER, {"role": "assistant", "content": [{"type": "text"}]}],
         "message 2 (assistant): expected string content, got array"),
        (["Hi", ASSISTANT], "message 1: expected an object with role and content, got string"),
    ],
)
def test_bad_conversations(data_file, messages, problem):
    records = [{"messages": [USER, ASSISTANT]}, {"messages": messages}]
    assert check(data_file, records, FieldSpec("messages", "messages")) == [f"line 2: field 'messages': {problem}"]


def test_messages_must_be_an_array(data_file):
    assert check(data_file, [{"messages": "Hi"}], FieldSpec("messages", "messages")) == [
        "line 1: field 'messages': expected messages (an array of {role, content} objects), got string"
    ]


def test_messages_length_counts_messages(data_file):
    spec = FieldSpec("messages", "messages", max_length=3)
    assert check(data_file, [{"messages": [SYSTEM, USER, ASSISTANT]}], spec) == []
    assert check(data_file, [{"messages": [USER, ASSISTANT, USER, ASSISTANT]}], spec) == [
        "line 1: field 'messages': has 4 messages, more than max_length 3"
    ]


# ---------------------------------------------------------------- schema errors


APPLIES_TO = {
    "pattern": ("string",),
    "min": ("integer", "number"),
    "max": ("integer", "number"),
    "min_length": ("string", "array", "messages"),
    "max_length": ("string", "array", "messages"),
    "choices": ("string", "integer", "number", "boolean"),
    "fields": ("object",),
}
TYPES = ("string", "integer", "number", "boolean", "object", "array", "messages")
SAMPLE_VALUES = {"pattern": "x", "min": 1, "max": 1, "min_length": 1, "max_length": 1, "fields": ()}
CHOICES = {"string": ("a",), "integer": (1,), "number": (1.5,), "boolean": (True,)}
MISPLACED = [(k, t) for k in APPLIES_TO for t in TYPES if t not in APPLIES_TO[k]]


@pytest.mark.parametrize(("keyword", "type_"), MISPLACED, ids=[f"{k}-on-{t}" for k, t in MISPLACED])
def test_a_keyword_on_a_type_it_does_not_fit_is_a_schema_error(keyword, type_):
    value = ("a",) if keyword == "choices" else SAMPLE_VALUES[keyword]
    with pytest.raises(SchemaError) as info:
        FieldSpec("f", type_, **{keyword: value})
    assert info.value.field == "f" and info.value.problem == f"{keyword} does not apply to type {type_}"


@pytest.mark.parametrize(("keyword", "type_"), [(k, t) for k in APPLIES_TO for t in APPLIES_TO[k]])
def test_a_keyword_on_a_type_it_fits_is_accepted(keyword, type_):
    value = CHOICES[type_] if keyword == "choices" else SAMPLE_VALUES[keyword]
    assert getattr(FieldSpec("f", type_, **{keyword: value}), keyword) is not None


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"pattern": "("}, "pattern '(' is not a valid regular expression (missing ), unterminated subpattern "
                           "at position 0)"),
        ({"pattern": "[a-"}, "pattern '[a-' is not a valid regular expression"),
        ({"type": "integer", "min": 5, "max": 1}, "min 5 is above max 1"),
        ({"type": "number", "min": math.nan}, "min is nan, not a finite number"),
        ({"type": "number", "max": "10"}, "max is '10', not a finite number"),
        ({"min_length": 3, "max_length": 2}, "min_length 3 is above max_length 2"),
        ({"min_length": -1}, "min_length is -1, not a count"),
        ({"choices": []}, "choices is empty, so no value could pass"),
        ({"choices": ["a", 1]}, "choice 1 is integer, not string"),
        ({"type": "integer", "choices": [1, True]}, "choice True is boolean, not integer"),
        ({"type": "integer", "allow_empty": True}, "allow_empty does not apply to type integer"),
        ({"type": "messages", "allow_empty": True}, "allow_empty does not apply to type messages (a conversation "
                                                    "always needs its messages)"),
        ({"type": "text"}, "has type 'text'"),
    ],
)
def test_schema_errors_name_the_field(spec, problem):
    with pytest.raises(SchemaError) as info:
        FieldSpec.from_config([{"name": "ok"}, {"name": "bad", **spec}])
    assert info.value.field == "bad" and info.value.where == "[1]"
    assert info.value.problem.startswith(problem)


def test_nested_schema_errors_name_the_path():
    with pytest.raises(SchemaError) as info:
        FieldSpec.from_config([{"name": "meta", "type": "object", "fields": [{"name": "a"}, {"name": "b", "min": 1}]}])
    assert (info.value.field, info.value.where) == ("meta.b", "[0].fields[1]")
    assert "schema field 'meta.b' (at [0].fields[1]): min does not apply to type string" in str(info.value)


def test_a_field_named_twice_is_a_schema_error():
    with pytest.raises(SchemaError) as top:
        FieldSpec.from_config([{"name": "prompt"}, {"name": "c"}, {"name": "prompt", "pattern": "x"}])
    assert (top.value.field, top.value.where, top.value.problem) == ("prompt", "[2]", "appears twice in the schema")
    nested = [{"name": "p"}, {"name": "m", "type": "object", "fields": [{"name": "a"}, {"name": "a"}]}]
    with pytest.raises(SchemaError) as inner:
        FieldSpec.from_config(nested)
    assert (inner.value.field, inner.value.where) == ("m.a", "[1].fields[1]")
    assert inner.value.problem == "appears twice in the fields of 'm'"


# ---------------------------------------------------------------- refused at config check


def config_error(overrides: list[str]) -> ThinkerError:
    cfg = compose(overrides)
    with pytest.raises(ThinkerError) as info:
        check_config(cfg, env={})
    return info.value


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ("[{name: prompt, type: string, pattern: '('}]",
         "[thinker] error: data.schema field 'prompt': pattern '(' is not a valid regular expression"),
        ("[{name: prompt}, {name: completion, min: 1}]",
         "[thinker] error: data.schema field 'completion': min does not apply to type string, data.schema[1], "
         "remove min"),
        ("[{name: prompt, validator: 'thinker_no_such_module_xyz:check'}]",
         "[thinker] error: data.schema field 'prompt': validator 'thinker_no_such_module_xyz:check' cannot be "
         "imported (no module named 'thinker_no_such_module_xyz'), data.schema[0], "),
        ("[{name: prompt, validator: 'json:decoder'}]",
         "[thinker] error: data.schema field 'prompt': validator 'json:decoder' is not callable (it is of type "
         "module)"),
        ("[{name: label, choices: [a, 1]}]", "[thinker] error: data.schema field 'label': choice 1 is integer"),
        ("[{name: meta, type: object, fields: [{name: n, type: integer, min: 3, max: 1}]}]",
         "[thinker] error: data.schema field 'meta.n': min 3 is above max 1, data.schema[0].fields[0]"),
    ],
)
def test_a_bad_schema_stops_at_config_check(schema, message):
    error = config_error(["stage=validate", f"data.schema={schema}"])
    assert error.stage == "config" and error.exit_code == ExitCode.CONFIG
    assert error.line().startswith(message), error.line()
    assert "\n" not in error.line()


def test_a_good_schema_with_every_keyword_passes_config_check(checks_module):
    schema = (
        "[{name: prompt, pattern: '^Q', min_length: 1, max_length: 100, validator: '" + checks_module + ":no_todo'},"
        " {name: score, type: number, min: 0, max: 1, required: false},"
        " {name: label, choices: [yes_, no_]},"
        " {name: meta, type: object, fields: [{name: n, type: integer, min: 0}]},"
        " {name: chat, type: messages, max_length: 8, required: false}]"
    )
    cfg = compose(["stage=validate", f"data.schema={schema}"])
    check_config(cfg, env={})  # raises on any problem
    specs = FieldSpec.from_config(cfg.data.schema)
    assert [s.choices for s in specs if s.name == "label"] == [("yes_", "no_")]
    assert specs[0].validator_fn is not None and specs[0].regex is not None


def test_data_schema_rule_both_ways():
    assert list(rules.data_schema_valid(compose(["data.schema=[{name: p, pattern: '*'}]"]), {}))
    assert not list(rules.data_schema_valid(compose(["data.schema=[{name: p, pattern: 'a*'}]"]), {}))


def test_an_unimportable_validator_is_one_error_line_from_the_launcher(tmp_path):
    out = launch(["stage=validate", "data.schema=[{name: prompt, validator: 'thinker_no_such_module_xyz:f'}]"],
                 cwd=tmp_path, env=clean_env(THINKER_MODELS_DIR=str(tmp_path / "models")), timeout=120)
    assert out.returncode == 2, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("[thinker] error: data.schema field 'prompt': validator"), out.stderr


# ---------------------------------------------------------------- which backend trains which data


@pytest.mark.parametrize("backend", ["local", "tinker", "provider"])
@pytest.mark.parametrize("stage", ["train", "run"])
def test_chat_data_trains_on_every_backend(backend, stage):
    assert not list(rules.data_format_trainable_by_backend(
        compose(["data=chat", f"stage={stage}", f"backend={backend}"]), {}))


def test_a_backend_refuses_a_format_it_does_not_list():
    cfg = compose(["data=chat", "stage=train"])
    cfg.backend.data_formats = ["prompt_completion"]
    found = list(rules.data_format_trainable_by_backend(cfg, {}))
    assert len(found) == 1 and "data.format=chat: backend=local trains prompt_completion" in found[0].what


def test_an_unknown_data_format_is_one_config_error():
    error = config_error(["data=jsonl", "data.path=data/sample/claims.jsonl", "data.format=tabular"])
    assert error.exit_code == ExitCode.CONFIG and "data.format=tabular is not a data format" in error.what


@pytest.mark.parametrize("overrides", [["data=chat", "stage=validate"], ["data=chat", "stage=eval"],
                                       ["data=sample", "stage=run"]])
def test_format_rule_lets_the_rest_through(overrides):
    assert not list(rules.data_format_trainable_by_backend(compose(overrides), {}))


# ---------------------------------------------------------------- the shipped configs and files


@pytest.mark.parametrize("option", group_options("data"))
def test_every_shipped_data_schema_passes_config_check(option):
    cfg = compose([f"data={option}", "stage=validate"])
    assert not list(rules.data_schema_valid(cfg, {})), option
    assert FieldSpec.from_config(cfg.data.schema)


@pytest.mark.parametrize(
    ("option", "path", "records"),
    [("sample", "data/sample/claims.jsonl", 320), ("sample", "data/sample/dev.jsonl", 60),
     ("chat", "data/sample/chat.jsonl", 20)],
)
def test_shipped_configs_validate_their_shipped_files(option, path, records):
    cfg = compose([f"data={option}"])
    result = validate_dataset(ROOT / path, FieldSpec.from_config(cfg.data.schema))
    assert result.ok, result.summary()
    assert result.records == records


def test_the_sample_schema_checks_what_it_claims():
    names = {s.name: s for s in FieldSpec.from_config(compose().data.schema)}
    assert names["completion"].pattern == SHIPPED_C1
    assert [f.name for f in names["metadata"].fields or ()] == ["claim_id", "doc_ids", "labels"]


def test_scifact_schema_validates_a_converted_release(tmp_path):
    out = tmp_path / "scifact.jsonl"
    count = convert_scifact(ROOT / "data/sample/claims_train.jsonl", ROOT / "data/sample/corpus.jsonl", out)
    result = validate_dataset(out, FieldSpec.from_config(compose(["data=scifact"]).data.schema))
    assert result.ok, result.summary()
    assert result.records == count == 320


def test_the_shipped_chat_schema_refuses_a_broken_conversation(data_file):
    specs = FieldSpec.from_config(compose(["data=chat"]).data.schema)
    lines = (ROOT / "data/sample/chat.jsonl").read_text().splitlines()
    broken = json.loads(lines[0])
    broken["messages"] = broken["messages"][:-1]  # drop the assistant's answer
    data_file.write_text("\n".join([lines[1], json.dumps(broken)]) + "\n")
    result = validate_dataset(data_file, specs)
    assert [str(e) for e in result.errors] == [
        "line 2: field 'messages': ends with a user message; the last message must be the assistant's"
    ]
