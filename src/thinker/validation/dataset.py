"""Streaming schema check of a JSONL dataset, and the SHA256 digest recorded for provenance.

The file is read line by line in binary (a JSON record cannot span lines, and binary mode splits on b"\\n"
only, so U+2028 inside a string does not end a line). Each line is hashed as it is read, so the digest
costs no second pass. Every problem becomes a DatasetIssue; nothing here raises for bad input, so the
caller can show the first N problems and exit with the validate stage's code. Besides the schema, a line is
a problem when it is longer than `max_record_chars` (checked on the raw line, so it is never parsed), when an
object in it has a key twice (json would silently keep the last value), or when it nests deeper than the JSON
parser can recurse. A path that is not a regular file (a named pipe would block forever) is never opened.

The schema (FieldSpec, SchemaError) and the checks compiled from it live in
thinker.validation.schema_language, whose docstring describes the keywords; they are re-exported here.

Standard library only: `thinker validate` must not pay for importing torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

from thinker.errors.json_lines import error_text, parse_problem
from thinker.paths import not_a_regular_file
from thinker.validation.schema_language import (
    CHAT_ROLES,
    DatasetIssue,
    FieldSpec,
    SchemaError,
    _check_fields,
    _field_checks,
    _FieldCheck,
    _json_type,
)

__all__ = [
    "CHAT_ROLES",
    "DatasetIssue",
    "DatasetValidationResult",
    "FieldSpec",
    "SchemaError",
    "validate_dataset",
]

_UTF8_BOM = b"\xef\xbb\xbf"
_HASH_CHUNK_BYTES = 1 << 20  # for the bytes left after max_examples: large reads, few calls


def _reject_constant(name: str) -> Any:
    # json.loads accepts NaN and Infinity, but they are not JSON and other readers (pyarrow, jq) refuse them.
    raise ValueError(f"{name} is not valid JSON")


def _decoder(duplicates: list[str]) -> json.JSONDecoder:
    """A JSON decoder that appends every key an object has twice to `duplicates` (json keeps the last value)."""

    # called for every object of every record: builtins bound as defaults, the slow part only for a duplicate
    def object_from_pairs(pairs: list[tuple[str, Any]], dict: Any = dict, len: Any = len) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            seen: set[str] = set()
            duplicates.extend(key for key, _ in pairs if key in seen or seen.add(key))
        return obj

    return json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=object_from_pairs)


# ---------------------------------------------------------------- public types


@dataclass
class DatasetValidationResult:
    path: str
    records: int  # non-blank lines checked
    lines: int  # physical lines read, blank ones included
    errors: list[DatasetIssue]
    sha256: str | None  # of the whole file; None when it could not be read to the end
    size_bytes: int
    stopped_at_max_examples: bool

    @property
    def ok(self) -> bool:
        return not self.errors and self.records > 0

    def summary(self, max_shown: int = 20) -> str:
        """A human report: a count line, then the first `max_shown` problems and how many were left out."""
        lines = [self._count_line()]
        shown = self.errors[: max(max_shown, 0)]
        lines.extend(f"  {issue}" for issue in shown)
        hidden = len(self.errors) - len(shown)
        if hidden:
            lines.append(f"  ... and {hidden} more")
        return "\n".join(lines)

    def _count_line(self) -> str:
        scope = f"{self.records} records, {self.lines} lines"
        if self.stopped_at_max_examples:
            scope += ", stopped at max_examples"
        if self.ok:
            return f"dataset {self.path}: OK ({scope}, sha256 {self.sha256})"
        noun = "problem" if len(self.errors) == 1 else "problems"
        return f"dataset {self.path}: {len(self.errors)} {noun} ({scope})"


# ---------------------------------------------------------------- validation


def validate_dataset(
    path: str | os.PathLike[str],
    fields: Sequence[FieldSpec],
    max_examples: int | None = None,
    max_record_chars: int | None = None,
) -> DatasetValidationResult:
    """Check every record of a JSONL file against `fields`, hashing the whole file on the way.

    `max_examples` stops the checks after that many records; the rest of the file is still hashed so the
    digest always identifies the whole file. `max_record_chars` (data.max_record_chars) bounds a line's length
    in characters, its newline not counted; None: unbounded.
    """
    if max_examples is not None and max_examples < 1:
        raise ValueError(f"max_examples must be at least 1 or None, got {max_examples}")
    result = DatasetValidationResult(
        path=str(path),
        records=0,
        lines=0,
        errors=[],
        sha256=None,
        size_bytes=0,
        stopped_at_max_examples=False,
    )
    kind = not_a_regular_file(path)
    if kind is not None:
        result.errors.append(DatasetIssue(0, None, f"is {kind}, not a JSONL file"))
        return result
    try:
        with open(path, "rb") as f:
            _scan(f, fields, max_examples, max_record_chars, result)
    except FileNotFoundError:
        result.errors.append(DatasetIssue(0, None, "file not found"))
    except OSError as exc:  # permissions, a read error half way: the digest is then meaningless
        result.sha256 = None
        result.errors.append(
            DatasetIssue(result.lines, None, f"cannot read the file ({exc.strerror or exc})")
        )
    return result


def _scan(
    f: IO[bytes],
    fields: Sequence[FieldSpec],
    max_examples: int | None,
    max_record_chars: int | None,
    result: DatasetValidationResult,
) -> None:
    digest = hashlib.sha256()
    lines, has_bom = _lines_without_bom(f, digest)
    _check_lines(lines, _field_checks(fields), max_examples, max_record_chars, has_bom, digest, result)
    if result.stopped_at_max_examples:
        result.stopped_at_max_examples = _hash_rest(f, digest)
    result.size_bytes = f.tell()
    result.sha256 = digest.hexdigest()
    if result.size_bytes == 0:
        result.errors.append(DatasetIssue(0, None, "file is empty (0 bytes)"))
    elif result.records == 0:
        result.errors.append(DatasetIssue(0, None, "no records (the file has only blank lines)"))


def _lines_without_bom(f: IO[bytes], digest: Any) -> tuple[Iterator[bytes], bool]:
    """The file's lines with a leading UTF-8 BOM removed (json.loads rejects it); the BOM is still hashed."""
    first = f.readline()
    has_bom = first.startswith(_UTF8_BOM)
    if has_bom:
        digest.update(_UTF8_BOM)
        first = first[len(_UTF8_BOM) :]
    return _chain_first(first, f), has_bom


def _chain_first(first: bytes, rest: Iterable[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


def _hash_rest(f: IO[bytes], digest: Any) -> bool:
    """Hash what max_examples left unread; True if it holds more than whitespace."""
    more = False
    while chunk := f.read(_HASH_CHUNK_BYTES):
        digest.update(chunk)
        more = more or not chunk.isspace()
    return more


def _check_lines(
    lines: Iterable[bytes],
    checks: tuple[_FieldCheck, ...],
    max_examples: int | None,
    max_record_chars: int | None,
    has_bom: bool,
    digest: Any,
    result: DatasetValidationResult,
) -> None:
    """The hot loop: hash, skip blanks, bound the length, decode, parse, check. Problems go to the slow helpers
    below."""
    errors = result.errors
    hash_line = digest.update
    duplicates: list[str] = []
    loads = _decoder(duplicates).decode
    check_fields = _check_fields
    # a line's bytes are at least its characters, so only a line with more bytes than that is measured
    max_bytes_unmeasured = max_record_chars if max_record_chars is not None else float("inf")
    line_no = 0
    records = 0
    try:
        for raw in lines:
            line_no += 1
            hash_line(raw)
            if raw.isspace():
                continue
            records += 1
            if len(raw) > max_bytes_unmeasured and (issue := _too_long(raw, max_record_chars, line_no)):
                errors.append(issue)
            else:
                try:
                    record = loads(raw.decode("utf-8"))
                except (ValueError, RecursionError) as exc:  # UnicodeDecodeError, JSONDecodeError: ValueErrors
                    duplicates.clear()
                    errors.append(_parse_issue(exc, raw, line_no, has_bom and line_no == 1))
                else:
                    if duplicates:
                        errors.extend(_duplicate_issue(key, line_no) for key in duplicates)
                        duplicates.clear()
                    if type(record) is not dict:
                        errors.append(
                            DatasetIssue(line_no, None, f"expected a JSON object, got {_json_type(record)}")
                        )
                    else:
                        check_fields(record, checks, record, line_no, errors)
            if records == max_examples:
                result.stopped_at_max_examples = True  # provisional: _hash_rest says if anything was left
                break
    finally:  # also when a read fails half way, so the error can name the line
        result.lines = line_no
        result.records = records


def _too_long(raw: bytes, max_record_chars: int, line_no: int) -> DatasetIssue | None:
    """The problem of a line longer than `max_record_chars` characters, else None (multi-byte characters)."""
    chars = len(raw.rstrip(b"\r\n").decode("utf-8", "replace"))
    if chars <= max_record_chars:
        return None
    return DatasetIssue(line_no, None, f"record is {chars:,} characters long, more than data.max_record_chars="
                                       f"{max_record_chars:,} (not parsed; split it or raise the limit)")


def _duplicate_issue(key: str, line_no: int) -> DatasetIssue:
    return DatasetIssue(line_no, None, f"duplicate key {key!r} in one object (JSON readers keep only one value)")


def _parse_issue(exc: ValueError | RecursionError, raw: bytes, line_no: int, after_bom: bool) -> DatasetIssue:
    if isinstance(exc, UnicodeDecodeError):
        byte = exc.start + 1 + (len(_UTF8_BOM) if after_bom else 0)
        bad = exc.object[exc.start : exc.start + 1].hex()
        return DatasetIssue(line_no, None, f"invalid UTF-8 ({exc.reason}: byte 0x{bad} at byte {byte})")
    if isinstance(exc, json.JSONDecodeError):
        column_offset = 1 if after_bom else 0  # the BOM is one character
        return DatasetIssue(line_no, None, f"invalid JSON ({error_text(exc, column_offset)})")
    return DatasetIssue(line_no, None, parse_problem(exc, raw.decode("utf-8")))
