"""The dataset schema validator and the in-process pytest gate (thinker.validation)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import tracemalloc
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from thinker.config.enums import FieldType
from thinker.config.schema import SchemaField
from thinker.validation.dataset import DatasetIssue, FieldSpec, validate_dataset
from thinker.validation.pytest_gate import run_pytest_gate

PROMPT_COMPLETION = [FieldSpec("prompt"), FieldSpec("completion")]
GOOD = {"prompt": "What is 2+2?", "completion": "4"}


def jsonl(*records: object) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def write(tmp_path: Path, content: str | bytes, name: str = "data.jsonl") -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def issues(result) -> list[str]:
    return [str(e) for e in result.errors]


# ---------------------------------------------------------------- FieldSpec


def test_field_spec_from_dicts_dictconfig_and_objects_give_plain_type_strings():
    structured = OmegaConf.structured(
        SchemaField(
            name="meta",
            type=FieldType.object,
            required=False,
            fields=[
                SchemaField(name="kind", choices=["a", "b"]),
                SchemaField(name="k", type=FieldType.integer, min=0),
            ],
        )
    )
    specs = FieldSpec.from_config(
        [
            {"name": "prompt", "type": "string", "pattern": "^Q"},
            OmegaConf.create({"name": "n", "type": "integer", "max": 9}),
            structured,
            SchemaField(name="tags", type=FieldType.array, allow_empty=True, max_length=3),
            {"name": "chat", "type": FieldType.messages, "required": False},
        ]
    )
    assert specs == [
        FieldSpec("prompt", "string", True, False, pattern="^Q"),
        FieldSpec("n", "integer", True, False, max=9),
        FieldSpec(
            "meta",
            "object",
            False,
            False,
            fields=(FieldSpec("kind", choices=("a", "b")), FieldSpec("k", "integer", min=0.0)),
        ),
        FieldSpec("tags", "array", True, True, max_length=3),
        FieldSpec("chat", "messages", False, False),
    ]
    assert all(type(s.type) is str for s in specs)
    assert all(type(s.type) is str for s in specs[2].fields or ())


def test_field_spec_rejects_an_unknown_type():
    with pytest.raises(ValueError, match="text"):
        FieldSpec("prompt", "text")


# ---------------------------------------------------------------- good files and accepted variations


def test_good_file_is_ok_and_hashed(tmp_path):
    path = write(tmp_path, jsonl(GOOD, {"prompt": "a", "completion": "b"}))
    result = validate_dataset(path, PROMPT_COMPLETION)
    assert result.ok, result.summary()
    assert (result.records, result.lines) == (2, 2)
    assert result.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert result.size_bytes == path.stat().st_size
    assert not result.stopped_at_max_examples
    assert "OK" in result.summary()


@pytest.mark.parametrize(
    ("type_", "value"),
    [
        ("string", "x"),
        ("integer", 3),
        ("number", 3),
        ("number", 2.5),
        ("boolean", False),
        ("object", {"a": 1}),
        ("array", [1]),
    ],
)
def test_matching_json_types_pass(tmp_path, type_, value):
    path = write(tmp_path, jsonl({"v": value}))
    assert validate_dataset(path, [FieldSpec("v", type_)]).ok


def test_bom_is_accepted_and_hashed(tmp_path):
    path = write(tmp_path, b"\xef\xbb\xbf" + jsonl(GOOD).encode())
    result = validate_dataset(path, PROMPT_COMPLETION)
    assert result.ok, result.summary()
    assert result.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_bom_does_not_shift_the_column_of_a_first_line_error(tmp_path):
    plain = validate_dataset(write(tmp_path, '{"prompt" "x"}\n', "a.jsonl"), PROMPT_COMPLETION)
    with_bom = validate_dataset(
        write(tmp_path, b'\xef\xbb\xbf{"prompt" "x"}\n', "b.jsonl"), PROMPT_COMPLETION
    )
    assert issues(plain) == ["line 1: invalid JSON (Expecting ':' delimiter at column 11)"]
    assert issues(with_bom) == ["line 1: invalid JSON (Expecting ':' delimiter at column 12)"]


def test_blank_lines_are_skipped_and_later_line_numbers_stay_physical(tmp_path):
    content = "\n" + jsonl(GOOD) + "   \n\t\n" + jsonl(GOOD) + "\n" + json.dumps({"prompt": "p"}) + "\n"
    result = validate_dataset(write(tmp_path, content), PROMPT_COMPLETION)
    assert result.records == 3
    assert result.lines == 7
    assert issues(result) == ["line 7: field 'completion': is missing"]


def test_crlf_line_endings(tmp_path):
    content = jsonl(GOOD, GOOD).replace("\n", "\r\n") + '{"prompt": ""}\r\n'
    result = validate_dataset(write(tmp_path, content), PROMPT_COMPLETION)
    assert result.records == 3
    assert issues(result) == [
        "line 3: field 'prompt': is an empty string",
        "line 3: field 'completion': is missing",
    ]


def test_missing_final_newline(tmp_path):
    path = write(tmp_path, jsonl(GOOD) + json.dumps(GOOD))
    result = validate_dataset(path, PROMPT_COMPLETION)
    assert result.ok, result.summary()
    assert result.records == 2


# ---------------------------------------------------------------- record problems


def test_missing_required_field(tmp_path):
    result = validate_dataset(write(tmp_path, jsonl(GOOD, {"prompt": "only"})), PROMPT_COMPLETION)
    assert not result.ok
    assert issues(result) == ["line 2: field 'completion': is missing"]


@pytest.mark.parametrize(
    ("type_", "value", "got"),
    [
        ("integer", True, "boolean"),  # bool is a subclass of int in Python, not an integer in JSON
        ("integer", 1.5, "number"),
        ("number", False, "boolean"),
        ("number", "1", "string"),
        ("string", 1, "integer"),
        ("boolean", 0, "integer"),
        ("object", [], "array"),
        ("array", {}, "object"),
    ],
)
def test_wrong_type(tmp_path, type_, value, got):
    result = validate_dataset(write(tmp_path, jsonl({"v": value})), [FieldSpec("v", type_)])
    assert issues(result) == [f"line 1: field 'v': expected {type_}, got {got}"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "is an empty string"),
        ("  \t\n ", "is a whitespace-only string"),
        ([], "is an empty array"),
        ({}, "is an empty object"),
    ],
)
def test_empty_values_are_refused_unless_allowed(tmp_path, value, message):
    type_ = {str: "string", list: "array", dict: "object"}[type(value)]
    path = write(tmp_path, jsonl({"v": value}))
    assert issues(validate_dataset(path, [FieldSpec("v", type_)])) == [f"line 1: field 'v': {message}"]
    assert validate_dataset(path, [FieldSpec("v", type_, allow_empty=True)]).ok


def test_zero_and_false_are_not_empty(tmp_path):
    path = write(tmp_path, jsonl({"n": 0, "x": 0.0, "b": False}))
    fields = [FieldSpec("n", "integer"), FieldSpec("x", "number"), FieldSpec("b", "boolean")]
    assert validate_dataset(path, fields).ok


def test_null_in_a_required_field(tmp_path):
    result = validate_dataset(write(tmp_path, jsonl({"prompt": None, "completion": "c"})), PROMPT_COMPLETION)
    assert issues(result) == ["line 1: field 'prompt': is null"]


def test_optional_field_may_be_null_or_absent_but_not_of_another_type(tmp_path):
    fields = [*PROMPT_COMPLETION, FieldSpec("metadata", "object", required=False)]
    path = write(tmp_path, jsonl({**GOOD, "metadata": None}, GOOD, {**GOOD, "metadata": "x"}))
    assert issues(validate_dataset(path, fields)) == ["line 3: field 'metadata': expected object, got string"]


def test_bad_json_line_reports_its_line_and_column(tmp_path):
    content = jsonl(GOOD, GOOD) + '{"prompt": "a" "completion": "b"}\n' + jsonl(GOOD)
    result = validate_dataset(write(tmp_path, content), PROMPT_COMPLETION)
    assert issues(result) == ["line 3: invalid JSON (Expecting ',' delimiter at column 16)"]
    assert result.records == 4


def test_a_line_cut_short_is_reported_at_its_real_column_not_after_its_newline(tmp_path):
    cut = '{"prompt": "What is 2+2?", "completion": "four or more"'  # the closing brace is missing
    assert len(cut) == 55
    result = validate_dataset(write(tmp_path, jsonl(GOOD) + cut + "\n" + jsonl(GOOD)), PROMPT_COMPLETION)
    assert issues(result) == ["line 2: invalid JSON (Expecting ',' delimiter at column 56)"]
    unterminated = write(tmp_path, '{"prompt": "What is\r\n', "cut.jsonl")  # not "Invalid control character"
    assert issues(validate_dataset(unterminated, PROMPT_COMPLETION)) == [
        "line 1: invalid JSON (Unterminated string starting at column 12)"]


def test_json_nested_too_deep_is_a_problem_of_its_line_not_a_traceback(tmp_path):
    deep = '{"prompt": "p", "completion": "c", "extra": ' + "[" * 10_000 + "]" * 10_000 + "}"
    result = validate_dataset(write(tmp_path, jsonl(GOOD) + deep + "\n" + jsonl(GOOD, {**GOOD, "prompt": 1})),
                              PROMPT_COMPLETION)
    assert [e.line for e in result.errors] == [2, 4]  # the scan goes on after it
    assert result.errors[0].message.startswith("invalid JSON (nested 10001 levels deep, deeper than the JSON parser")


def test_a_key_given_twice_is_reported_with_its_line_and_key(tmp_path):
    twice = '{"prompt": "a", "completion": "b", "prompt": "c"}'
    nested = '{"prompt": "a", "completion": "b", "metadata": {"id": 1, "id": 2}}'
    result = validate_dataset(write(tmp_path, jsonl(GOOD) + twice + "\n" + nested + "\n"), PROMPT_COMPLETION)
    assert issues(result) == [
        "line 2: duplicate key 'prompt' in one object (JSON readers keep only one value)",
        "line 3: duplicate key 'id' in one object (JSON readers keep only one value)",
    ]
    assert result.records == 3


def test_a_line_longer_than_max_record_chars_is_reported_without_being_parsed(tmp_path):
    long_line = '{"prompt": "' + "é" * 40 + '", "completion": "c"}'
    assert len(long_line) == 73 and len(long_line.encode()) == 113
    path = write(tmp_path, jsonl(GOOD) + long_line + "\r\n" + jsonl(GOOD))
    assert validate_dataset(path, PROMPT_COMPLETION, max_record_chars=73).ok  # characters, not bytes or newline

    cut_short = long_line[:-1]  # invalid JSON as well: were it parsed, that would be reported too
    path = write(tmp_path, jsonl(GOOD) + cut_short + "\n" + jsonl(GOOD), "long.jsonl")
    result = validate_dataset(path, PROMPT_COMPLETION, max_record_chars=50)
    assert issues(result) == ["line 2: record is 72 characters long, more than data.max_record_chars=50 "
                              "(not parsed; split it or raise the limit)"]
    assert result.records == 3 and result.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_nan_is_not_json(tmp_path):
    result = validate_dataset(write(tmp_path, '{"v": NaN}\n'), [FieldSpec("v", "number")])
    assert issues(result) == ["line 1: invalid JSON (NaN is not valid JSON)"]


@pytest.mark.parametrize(("line", "got"), [("[1, 2]", "array"), ("42", "integer"), ('"text"', "string")])
def test_valid_json_that_is_not_an_object(tmp_path, line, got):
    result = validate_dataset(write(tmp_path, jsonl(GOOD) + line + "\n"), PROMPT_COMPLETION)
    assert issues(result) == [f"line 2: expected a JSON object, got {got}"]


def test_invalid_utf8_reports_its_line(tmp_path):
    content = jsonl(GOOD).encode() + b'{"prompt": "caf\xff", "completion": "c"}\n'
    result = validate_dataset(write(tmp_path, content), PROMPT_COMPLETION)
    assert len(result.errors) == 1
    assert result.errors[0].line == 2
    assert str(result.errors[0]).startswith(
        "line 2: invalid UTF-8 (invalid start byte: byte 0xff at byte 16)"
    )


# ---------------------------------------------------------------- file problems


def test_empty_file(tmp_path):
    result = validate_dataset(write(tmp_path, b""), PROMPT_COMPLETION)
    assert not result.ok
    assert issues(result) == ["line 0: file is empty (0 bytes)"]
    assert result.sha256 == hashlib.sha256(b"").hexdigest()


def test_only_blank_lines(tmp_path):
    result = validate_dataset(write(tmp_path, "\n \n\r\n"), PROMPT_COMPLETION)
    assert not result.ok
    assert result.records == 0
    assert [e.message for e in result.errors] == ["no records (the file has only blank lines)"]


def test_missing_file(tmp_path):
    result = validate_dataset(tmp_path / "nope.jsonl", PROMPT_COMPLETION)
    assert not result.ok
    assert issues(result) == ["line 0: file not found"]
    assert result.sha256 is None


def test_directory(tmp_path):
    result = validate_dataset(tmp_path, PROMPT_COMPLETION)
    assert issues(result) == ["line 0: is a directory, not a JSONL file"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_named_pipe_is_refused_without_being_opened(tmp_path):
    fifo = tmp_path / "data.jsonl"
    os.mkfifo(fifo)
    done = threading.Event()

    def unblock_a_reader() -> None:
        # were the pipe opened for reading, this writer lets it see end-of-file, so the test fails, not hangs
        while not done.wait(0.05):
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # ENXIO while nobody reads
            except OSError:
                continue

    writer = threading.Thread(target=unblock_a_reader, daemon=True)
    writer.start()
    try:
        result = validate_dataset(fifo, PROMPT_COMPLETION)
    finally:
        done.set()
        writer.join()
    assert issues(result) == ["line 0: is a named pipe (FIFO), not a JSONL file"]


def test_unreadable_file(tmp_path, monkeypatch):
    # Simulated, because chmod 0 does not stop root (CI containers often run as root).
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("thinker.validation.dataset.open", refuse, raising=False)
    result = validate_dataset(write(tmp_path, jsonl(GOOD)), PROMPT_COMPLETION)
    assert issues(result) == ["line 0: cannot read the file (Permission denied)"]
    assert result.sha256 is None


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions, not as root")
def test_file_without_read_permission(tmp_path):
    path = write(tmp_path, jsonl(GOOD))
    path.chmod(0)
    try:
        result = validate_dataset(path, PROMPT_COMPLETION)
    finally:
        path.chmod(0o644)
    assert [e.message for e in result.errors] == ["cannot read the file (Permission denied)"]
    assert result.sha256 is None


# ---------------------------------------------------------------- max_examples, error lists, streaming


def test_max_examples_stops_checks_but_hashes_the_whole_file(tmp_path):
    bad_tail = jsonl(*[{"prompt": ""}] * 3000)  # would be 6000 problems if it were checked
    path = write(tmp_path, jsonl(GOOD, GOOD, GOOD) + bad_tail)
    result = validate_dataset(path, PROMPT_COMPLETION, max_examples=3)
    assert result.ok, result.summary()
    assert (result.records, result.lines) == (3, 3)
    assert result.stopped_at_max_examples
    assert result.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert result.size_bytes == path.stat().st_size


def test_max_examples_equal_to_the_record_count_did_not_stop_anything(tmp_path):
    path = write(tmp_path, jsonl(GOOD, GOOD) + "\n\n")
    result = validate_dataset(path, PROMPT_COMPLETION, max_examples=2)
    assert result.ok
    assert not result.stopped_at_max_examples


def test_hash_of_the_rest_spans_several_chunks(tmp_path):
    path = write(tmp_path, jsonl(GOOD) + jsonl({"prompt": "x" * 3_000_000, "completion": "y"}))
    result = validate_dataset(path, PROMPT_COMPLETION, max_examples=1)
    assert result.stopped_at_max_examples
    assert result.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_all_errors_are_kept_and_the_summary_shows_the_first_n(tmp_path):
    path = write(tmp_path, jsonl(*[{"prompt": "", "completion": "c"}] * 25))
    result = validate_dataset(path, PROMPT_COMPLETION)
    assert len(result.errors) == 25
    assert [e.line for e in result.errors] == list(range(1, 26))
    summary = result.summary(max_shown=5)
    lines = summary.splitlines()
    assert "25 problems" in lines[0]
    assert lines[1:6] == [f"  line {n}: field 'prompt': is an empty string" for n in range(1, 6)]
    assert lines[6] == "  ... and 20 more"
    assert len(lines) == 7
    assert "... and" not in result.summary(max_shown=25)


def test_issue_str_without_a_field():
    assert str(DatasetIssue(3, None, "invalid JSON (x)")) == "line 3: invalid JSON (x)"
    assert (
        str(DatasetIssue(12, "prompt", "is an empty string")) == "line 12: field 'prompt': is an empty string"
    )


def test_a_100k_line_file_is_streamed_in_little_memory(tmp_path):
    path = tmp_path / "big.jsonl"
    line = (json.dumps({"prompt": "p" * 200, "completion": "c" * 200}) + "\n").encode()
    path.write_bytes(line * 100_000)  # ~41 MB: reading it whole would show up in the trace
    tracemalloc.start()
    try:
        result = validate_dataset(path, PROMPT_COMPLETION)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.ok and result.records == 100_000
    assert peak < 3_000_000, f"peak traced memory {peak / 1e6:.1f} MB: the file is not streamed"


# ---------------------------------------------------------------- pytest gate


def gate_file(tmp_path: Path, name: str, body: str) -> str:
    # Every gate test file gets its own module name: pytest.main in-process keeps modules in sys.modules.
    path = tmp_path / name
    path.write_text(body)
    return str(path)


def test_gate_passes(tmp_path):
    path = gate_file(tmp_path, "test_gate_ok_a1.py", "def test_ok():\n    assert True\n")
    result = run_pytest_gate([path], "not slow", ["-q", "-p", "no:cacheprovider"], {})
    assert (result.status, result.exit_code) == ("passed", 0)
    assert result.ok
    assert result.outcomes == {"passed": 1}


def test_gate_fails(tmp_path):
    body = "def test_ok():\n    pass\n\ndef test_bad():\n    assert 1 == 2\n"
    path = gate_file(tmp_path, "test_gate_bad_b2.py", body)
    result = run_pytest_gate([path], "", ["-q", "-p", "no:cacheprovider"], {})
    assert (result.status, result.exit_code) == ("failed", 1)
    assert not result.ok
    assert result.outcomes == {"passed": 1, "failed": 1}


def test_gate_with_no_tests_collected(tmp_path):
    body = "import pytest\n\n@pytest.mark.slow\ndef test_slow():\n    pass\n"
    path = gate_file(tmp_path, "test_gate_none_c3.py", body)
    result = run_pytest_gate([path], "not slow", ["-q", "-p", "no:cacheprovider"], {})
    assert (result.status, result.exit_code) == ("no_tests", 5)
    assert not result.ok


def test_gate_env_is_visible_inside_and_restored_after(tmp_path, monkeypatch):
    monkeypatch.setenv("THINKER_GATE_EXISTING", "before")
    monkeypatch.delenv("THINKER_GATE_NEW", raising=False)
    body = (
        "import os\n\ndef test_env():\n"
        "    assert os.environ['THINKER_GATE_NEW'] == 'new'\n"
        "    assert os.environ['THINKER_GATE_EXISTING'] == 'during'\n"
    )
    path = gate_file(tmp_path, "test_gate_env_d4.py", body)
    env = {"THINKER_GATE_NEW": "new", "THINKER_GATE_EXISTING": "during"}
    result = run_pytest_gate([path], "", ["-q", "-p", "no:cacheprovider"], env)
    assert result.status == "passed", result.message
    assert "THINKER_GATE_NEW" not in os.environ
    assert os.environ["THINKER_GATE_EXISTING"] == "before"


def test_gate_with_a_missing_path_fails_without_running(tmp_path):
    missing = str(tmp_path / "no_such_tests")
    result = run_pytest_gate([missing], "", [], {})
    assert result.status == "failed"
    assert missing in result.message


def test_gate_with_no_paths_is_skipped():
    result = run_pytest_gate([], "not slow", [], {})
    assert result.status == "skipped"
    assert result.ok


# ---------------------------------------------------------------- the default gate (tests/gate)


CONTRACT_TESTS = str(Path(__file__).parent / "gate" / "test_dataset_contract.py")


def run_contract(path: Path, data_format: str, **fields: str) -> object:
    env = {"THINKER_DATA_PATH": str(path), "THINKER_DATA_FORMAT": data_format}
    env.update({f"THINKER_{k.upper()}_FIELD": v for k, v in fields.items()})
    return run_pytest_gate([CONTRACT_TESTS], "not slow", ["-q", "-p", "no:cacheprovider"], env)


def test_contract_gate_passes_a_good_claim_extraction_file(tmp_path):
    completion = "CLAIM[c1]: A increases B.\nCLAIM[c2]: B reduces C.\n\nRELATION: c1 supports c2"
    path = write(
        tmp_path,
        jsonl({"prompt": "p1", "completion": completion}, {"prompt": "p2", "completion": completion}),
    )
    result = run_contract(path, "claim_extraction")
    assert result.status == "passed", result.message


@pytest.mark.parametrize(
    "completion",
    ["CLAIM[c2]: starts at c2", "CLAIM[c1]: fine\nNOTE: not a claim", " CLAIM[c1]: leading space"],
)
def test_contract_gate_refuses_malformed_claims(tmp_path, completion):
    path = write(tmp_path, jsonl({"prompt": "p", "completion": completion}))
    assert run_contract(path, "claim_extraction").status == "failed"


def test_contract_gate_refuses_duplicates(tmp_path):
    path = write(tmp_path, jsonl(GOOD, {"prompt": "other", "completion": "4"}, GOOD))
    result = run_contract(path, "prompt_completion")
    assert result.status == "failed"
    assert result.outcomes.get("failed") == 1


def test_contract_gate_reasoning_needs_a_final_answer_line(tmp_path):
    good = {"question": "2+2?", "answer": "2 and 2 make 4.\n#### 4"}
    bad = {"question": "3+3?", "answer": "3 and 3 make 6."}
    fields = {"prompt": "question", "completion": "answer"}
    assert run_contract(write(tmp_path, jsonl(good), "good.jsonl"), "reasoning", **fields).status == "passed"
    assert (
        run_contract(write(tmp_path, jsonl(good, bad), "bad.jsonl"), "reasoning", **fields).status == "failed"
    )


def conversation(question: str, answer: str, system: bool = True) -> dict:
    messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    if system:
        messages.insert(0, {"role": "system", "content": "Be brief."})
    return {"messages": messages}


def test_contract_gate_passes_chat_data(tmp_path):
    records = [conversation("2+2?", "4"), conversation("2+2?", "4", system=False), conversation("3+3?", "6")]
    result = run_contract(write(tmp_path, jsonl(*records)), "chat")
    assert result.status == "passed", result.message
    assert result.outcomes == {
        "passed": 3,
        "skipped": 2,
    }  # known format, has records, unique; no completion rules


def test_contract_gate_refuses_a_repeated_conversation(tmp_path):
    records = [conversation("2+2?", "4"), conversation("3+3?", "6"), conversation("2+2?", "4")]
    result = run_contract(write(tmp_path, jsonl(*records)), "chat")
    assert result.status == "failed"
    assert result.outcomes.get("failed") == 1


def test_contract_gate_refuses_chat_records_without_messages(tmp_path):
    result = run_contract(write(tmp_path, jsonl(GOOD)), "chat")
    assert result.status == "failed"
