"""The default pytest gate: content rules of the dataset that a JSON schema cannot express.

`python launch.py` runs this folder in-process before training, with the dataset in environment variables:

    THINKER_DATA_PATH         the JSONL file (unset: every test here skips, so a plain `pytest` passes)
    THINKER_DATA_FORMAT       claim_extraction | prompt_completion | reasoning | multihop_qa | chat | preference
    THINKER_PROMPT_FIELD      default "prompt" (not read for chat)
    THINKER_COMPLETION_FIELD  default "completion" (not read for chat)

Chat data (`{"messages": [...]}` per line) is checked for duplicate conversations here; roles, contents and
their order are the schema validator's `messages` type, so the gate does not repeat them. Preference pairs
(any of thinker.tasks.preference's shapes) are checked for repeated records; their sides are the schema's
check_pair validator's.

Only the first MAX_RECORDS records are read, streaming. The variables are read inside the fixture, never at
import, because pytest keeps this module imported between gates of one process (a Hydra multirun).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

MAX_RECORDS = 2000
MAX_LINES_SHOWN = 10
KNOWN_FORMATS = ("claim_extraction", "prompt_completion", "reasoning", "multihop_qa", "chat", "preference")
MESSAGES_FIELD = "messages"  # the conversation of a chat record, as OpenAI's and Tinker's chat files name it


@dataclass(frozen=True)
class Example:
    line: int  # 1-based physical line in the file
    prompt: str  # chat: every message but the last, as canonical JSON
    completion: str  # chat: the last message's content


@dataclass(frozen=True)
class Dataset:
    path: str
    format: str
    prompt_field: str
    completion_field: str
    examples: list[Example]


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    path = os.environ.get("THINKER_DATA_PATH")
    if not path:
        pytest.skip("THINKER_DATA_PATH is not set (the launcher sets it when it runs the gate)")
    data_format = os.environ.get("THINKER_DATA_FORMAT") or "prompt_completion"
    prompt_field = os.environ.get("THINKER_PROMPT_FIELD") or "prompt"
    completion_field = os.environ.get("THINKER_COMPLETION_FIELD") or "completion"
    return Dataset(
        path=path,
        format=data_format,
        prompt_field=prompt_field,
        completion_field=completion_field,
        examples=list(_read_examples(path, data_format, prompt_field, completion_field, MAX_RECORDS)),
    )


def _read_examples(
    path: str, data_format: str, prompt_field: str, completion_field: str, limit: int
) -> Iterator[Example]:
    """Yield the first `limit` records; a record the schema check should have refused fails the gate."""
    records = 0
    with open(path, "rb") as f:  # binary, so line numbers count b"\n" exactly as the schema check does
        for line_no, raw in enumerate(f, start=1):
            if raw.isspace():
                continue
            line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
            if data_format == "chat":
                yield _conversation(line, line_no)
            elif data_format == "preference":
                yield _preference(line, line_no)
            else:
                yield _example(line, line_no, prompt_field, completion_field)
            records += 1
            if records == limit:
                return


def _record(line: str, line_no: int) -> dict:
    try:
        record = json.loads(line)
    except ValueError as exc:
        pytest.fail(f"line {line_no}: invalid JSON ({exc})", pytrace=False)
    if not isinstance(record, dict):
        pytest.fail(f"line {line_no}: expected a JSON object", pytrace=False)
    return record


def _conversation(line: str, line_no: int) -> Example:
    messages = _record(line, line_no).get(MESSAGES_FIELD)
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        pytest.fail(f"line {line_no}: {MESSAGES_FIELD!r} must be a non-empty list of messages", pytrace=False)
    earlier = json.dumps(messages[:-1], sort_keys=True, ensure_ascii=False)
    return Example(line_no, earlier, str(messages[-1].get("content")))


def _preference(line: str, line_no: int) -> Example:
    # a pair's identity is the whole record but its metadata, whichever shape it has
    record = {key: value for key, value in _record(line, line_no).items() if key != "metadata"}
    return Example(line_no, json.dumps(record, sort_keys=True, ensure_ascii=False), "")


def _example(line: str, line_no: int, prompt_field: str, completion_field: str) -> Example:
    record = _record(line, line_no)
    prompt, completion = record.get(prompt_field), record.get(completion_field)
    if not isinstance(prompt, str) or not isinstance(completion, str):
        pytest.fail(
            f"line {line_no}: {prompt_field!r} and {completion_field!r} must both be strings", pytrace=False
        )
    return Example(line_no, prompt, completion)


def _fail_on(bad: list[str], what: str) -> None:
    if bad:
        shown = "\n  ".join(bad[:MAX_LINES_SHOWN])
        more = f"\n  ... and {len(bad) - MAX_LINES_SHOWN} more" if len(bad) > MAX_LINES_SHOWN else ""
        pytest.fail(f"{len(bad)} record(s) {what}:\n  {shown}{more}", pytrace=False)


def _non_empty_lines(text: str) -> list[str]:
    return [line.rstrip("\r") for line in text.split("\n") if line.strip()]


def test_format_is_known(dataset: Dataset) -> None:
    assert dataset.format in KNOWN_FORMATS, (
        f"THINKER_DATA_FORMAT={dataset.format!r}; the gate knows {', '.join(KNOWN_FORMATS)}"
    )


def test_has_records(dataset: Dataset) -> None:
    assert dataset.examples, f"{dataset.path} has no records"


def test_records_are_unique(dataset: Dataset) -> None:
    first_seen: dict[tuple[str, str], int] = {}
    duplicates = []
    for example in dataset.examples:
        key = (example.prompt, example.completion)
        if key in first_seen:
            duplicates.append(f"line {example.line} repeats line {first_seen[key]}")
        else:
            first_seen[key] = example.line
    if dataset.format == "chat":
        _fail_on(duplicates, "repeat an earlier conversation")
    elif dataset.format == "preference":
        _fail_on(duplicates, "repeat an earlier preference record")
    else:
        _fail_on(duplicates, f"repeat an earlier ({dataset.prompt_field}, {dataset.completion_field}) pair")


def _claim_extraction_problem(completion: str) -> str | None:
    first, _, rest = completion.partition("\n")
    if not first.startswith("CLAIM[c1]:"):
        return f"first line does not start with 'CLAIM[c1]:' ({first[:40]!r})"
    for line in _non_empty_lines(rest):
        if not line.startswith(("CLAIM[", "RELATION:")):
            return f"line does not start with 'CLAIM[' or 'RELATION:' ({line[:40]!r})"
    return None


def _reasoning_problem(completion: str) -> str | None:
    lines = _non_empty_lines(completion)
    final = lines[-1].strip() if lines else ""
    if not final.startswith("####") or not final[4:].strip():
        return f"no final '#### <answer>' line (ends with {final[-40:]!r})"
    return None


def _check_completions(dataset: Dataset, problem_of: Callable[[str], str | None]) -> None:
    bad = []
    for example in dataset.examples:
        problem = problem_of(example.completion)
        if problem is not None:
            bad.append(f"line {example.line}: {problem}")
    _fail_on(bad, f"have a malformed {dataset.completion_field!r}")


def test_claim_extraction_completions(dataset: Dataset) -> None:
    if dataset.format != "claim_extraction":
        pytest.skip(f"format is {dataset.format}")
    _check_completions(dataset, _claim_extraction_problem)


def test_reasoning_answers_end_with_final_answer(dataset: Dataset) -> None:
    if dataset.format != "reasoning":
        pytest.skip(f"format is {dataset.format}")
    _check_completions(dataset, _reasoning_problem)
