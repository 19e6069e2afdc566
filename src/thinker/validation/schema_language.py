"""The dataset schema language: FieldSpec, its checks, and the per-field checks compiled from it.

A dataset schema is a list of fields (`data.schema`, one FieldSpec per entry). A field has a `type` (the JSON types string,
integer, number, boolean, object, array, and `messages` for chat data) and these keywords:

    required      false: the field may be absent or null (default true)
    allow_empty   string / object / array: "", whitespace-only, [] and {} pass (default false)
    pattern       string: a regex that must match somewhere in the value (re.search; anchor it with ^ / \\A
                  yourself, and (?m) makes ^ match at every line start). Compiled once.
    min, max      integer / number: inclusive bounds
    min_length,   string (characters), array (items), messages (messages): inclusive bounds
    max_length
    choices       string / integer / number / boolean: the allowed values
    fields        object: the fields inside it, with the same keywords (issues name them `outer.inner`)
    validator     "module:function" (or "module.function"), called as fn(value, record) for every record
                  whose value passed the checks above; it returns None when the value is fine, or a message
                  saying what is wrong. `record` is the whole JSON object of the line (do not modify it). An
                  exception inside it becomes an issue on that line ("validator ... raised ValueError: ...")
                  and the scan goes on.

A `messages` value is a list of {"role", "content"} objects (extra keys such as "name" are ignored): roles
system / user / assistant, content a non-blank string, at most one system message and only first, then user
and assistant alternating, starting with user and ending with assistant (the format of OpenAI's chat
fine-tuning files and Tinker's conversation files; tool calls are not part of it).

A FieldSpec checks itself when it is built: a keyword that does not apply to the type, a bad regex, a
min above its max, a choice of another type or a validator that does not import is a SchemaError naming the
field. The config check (thinker.config.rules.data_schema_valid) builds the specs, so these stop a run at
config check, before the gate. One issue per field and record: the first check that fails.

The compiled checks (_field_checks) are what thinker.validation.dataset runs on every record of the scan;
each problem they find becomes a DatasetIssue.

Standard library only: `thinker validate` and the config check must not pay for importing torch.
"""

from __future__ import annotations

import enum
import importlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from thinker.config.enums import FieldType
from thinker.errors.wording import with_article

_STRING, _INTEGER, _NUMBER, _BOOLEAN, _OBJECT, _ARRAY, _MESSAGES = (t.value for t in FieldType)

# The Python types json.loads produces for each schema type. Matched with `type(v) in ...`, never
# isinstance, so True (a bool, a subclass of int) is not accepted as an integer or a number.
_ACCEPTED_TYPES: dict[str, frozenset[type]] = {
    _STRING: frozenset({str}),
    _INTEGER: frozenset({int}),
    _NUMBER: frozenset({int, float}),
    _BOOLEAN: frozenset({bool}),
    _OBJECT: frozenset({dict}),
    _ARRAY: frozenset({list}),
    _MESSAGES: frozenset({list}),
}
# Types that can be empty and take allow_empty; numbers and booleans cannot, and a conversation is never empty.
_SIZED_TYPES = (_STRING, _OBJECT, _ARRAY)
# The types each keyword applies to; anywhere else it is a schema error.
_KEYWORD_TYPES: dict[str, tuple[str, ...]] = {
    "pattern": (_STRING,),
    "min": (_INTEGER, _NUMBER),
    "max": (_INTEGER, _NUMBER),
    "min_length": (_STRING, _ARRAY, _MESSAGES),
    "max_length": (_STRING, _ARRAY, _MESSAGES),
    "choices": (_STRING, _INTEGER, _NUMBER, _BOOLEAN),
    "fields": (_OBJECT,),
}
_LENGTH_UNITS = {_STRING: "character", _ARRAY: "item", _MESSAGES: "message"}

CHAT_ROLES = ("system", "user", "assistant")

_JSON_TYPE_NAMES: dict[type, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    dict: "object",
    list: "array",
    type(None): "null",
}

_ABSENT = object()  # a field that is not in the record at all (None would mean JSON null)


# ---------------------------------------------------------------- the schema language


class SchemaError(ValueError):
    """A schema entry that cannot be used: which field, what is wrong, what to do. `where` locates the entry
    in the list it came from (e.g. "[2].fields[0]") when FieldSpec.from_config built it."""

    def __init__(self, field_name: str, problem: str, fix: str):
        self.field = field_name
        self.problem = problem
        self.fix = fix
        self.where = ""
        super().__init__(field_name, problem, fix)

    def __str__(self) -> str:
        return (
            f"schema field {self.field!r}{self.where and f' (at {self.where})'}: {self.problem}; {self.fix}"
        )


@dataclass(frozen=True)
class FieldSpec:
    """One field of the dataset schema (the keywords are described in the module docstring)."""

    name: str
    type: str = _STRING
    required: bool = True
    allow_empty: bool = False
    pattern: str | None = None
    min: float | None = None
    max: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    choices: tuple[Any, ...] | None = None
    validator: str | None = None
    fields: tuple[FieldSpec, ...] | None = None
    # compiled once, here: the regex and the validator function
    regex: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)
    validator_fn: Callable[[Any, Any], Any] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        _check_spec(self)

    @classmethod
    def from_config(cls, items: Iterable[Any] | None) -> list[FieldSpec]:
        """Build specs from `data.schema`: mappings, DictConfig nodes or objects with the same attributes.

        Raises SchemaError (a ValueError) for the first entry that cannot be used, `where` saying which."""
        specs: list[FieldSpec] = []
        for index, item in enumerate(items or ()):
            try:
                specs.append(cls._from_item(item))
            except SchemaError as error:
                error.where = f"[{index}]{error.where}"
                raise
        _check_unique(specs, None)
        return specs

    @classmethod
    def _from_item(cls, item: Any) -> FieldSpec:
        if isinstance(item, Mapping):
            get = item.get
        else:

            def get(key: str, default: Any = None) -> Any:
                return getattr(item, key, default)

        name = str(get("name"))
        nested = get("fields")
        subfields = None
        if nested is not None:
            subfields = []
            for index, sub in enumerate(nested):
                try:
                    subfields.append(cls._from_item(sub))
                except SchemaError as error:
                    error.field = f"{name}.{error.field}"
                    error.where = f".fields[{index}]{error.where}"
                    raise
        choices = get("choices")
        return cls(
            name=name,
            type=_plain_value(get("type", _STRING)),
            required=bool(get("required", True)),
            allow_empty=bool(get("allow_empty", False)),
            pattern=get("pattern"),
            min=get("min"),
            max=get("max"),
            min_length=get("min_length"),
            max_length=get("max_length"),
            choices=None if choices is None else tuple(_plain_value(c, keep=True) for c in choices),
            validator=get("validator"),
            fields=None if subfields is None else tuple(subfields),
        )


def _plain_value(value: Any, keep: bool = False) -> Any:
    # OmegaConf hands back FieldType.string for a structured node; the checks compare plain strings.
    if isinstance(value, enum.Enum):
        return value.value
    return value if keep else str(value)


def _check_spec(spec: FieldSpec) -> None:
    """Refuse a spec that cannot be used; compile its regex and import its validator."""
    name, type_ = spec.name, spec.type

    def fail(problem: str, fix: str) -> NoReturn:
        raise SchemaError(name, problem, fix)

    if type_ not in _ACCEPTED_TYPES:
        fail(f"has type {type_!r}", f"choose one of {', '.join(_ACCEPTED_TYPES)}")
    for keyword, types in _KEYWORD_TYPES.items():
        if getattr(spec, keyword) is not None and type_ not in types:
            fail(
                f"{keyword} does not apply to type {type_}",
                f"remove {keyword} (it applies to type {' / '.join(types)})",
            )
    if spec.allow_empty and type_ not in _SIZED_TYPES:
        fail(
            f"allow_empty does not apply to type {type_}"
            + (" (a conversation always needs its messages)" if type_ == _MESSAGES else ""),
            f"remove allow_empty (it applies to type {' / '.join(_SIZED_TYPES)})",
        )
    for keyword in ("min", "max"):
        value = getattr(spec, keyword)
        if value is not None and (type(value) not in (int, float) or not math.isfinite(value)):
            fail(f"{keyword} is {value!r}, not a finite number", f"set {keyword} to a number, or remove it")
    if spec.min is not None and spec.max is not None and spec.min > spec.max:
        fail(f"min {_num(spec.min)} is above max {_num(spec.max)}", "make min <= max")
    for keyword in ("min_length", "max_length"):
        value = getattr(spec, keyword)
        if value is not None and (type(value) is not int or value < 0):
            fail(
                f"{keyword} is {value!r}, not a count", f"set {keyword} to a whole number >= 0, or remove it"
            )
    if spec.min_length is not None and spec.max_length is not None and spec.min_length > spec.max_length:
        fail(
            f"min_length {spec.min_length} is above max_length {spec.max_length}",
            "make min_length <= max_length",
        )
    if spec.choices is not None:
        object.__setattr__(spec, "choices", tuple(spec.choices))
        if not spec.choices:
            fail("choices is empty, so no value could pass", "list the allowed values, or remove choices")
        for choice in spec.choices:
            if type(choice) not in _ACCEPTED_TYPES[type_]:
                fail(
                    f"choice {choice!r} is {_json_type(choice)}, not {type_}",
                    f"list only {type_} values in choices (or change the field's type)",
                )
    if spec.pattern is not None:
        if not isinstance(spec.pattern, str):
            fail(f"pattern is {_json_type(spec.pattern)}, not a string", "write the regex as a string")
        try:
            object.__setattr__(spec, "regex", re.compile(spec.pattern))
        except re.error as error:
            fail(
                f"pattern {spec.pattern!r} is not a valid regular expression ({error})",
                "fix the regex (Python re syntax, matched anywhere in the value as re.search does)",
            )
    if spec.fields is not None:
        object.__setattr__(spec, "fields", tuple(spec.fields))
        _check_unique(spec.fields, name)
    if spec.validator is not None:
        object.__setattr__(spec, "validator_fn", _resolve_validator(name, spec.validator))


def _check_unique(specs: Sequence[FieldSpec], owner: str | None) -> None:
    """Refuse a name given twice, in the schema (owner None) or among the fields of the object `owner`."""
    seen: set[str] = set()
    for index, spec in enumerate(specs):
        if spec.name in seen:
            error = SchemaError(
                f"{owner}.{spec.name}" if owner else spec.name,
                f"appears twice in {f'the fields of {owner!r}' if owner else 'the schema'}",
                "merge the two entries into one",
            )
            error.where = f".fields[{index}]" if owner else f"[{index}]"
            raise error
        seen.add(spec.name)


def _resolve_validator(name: str, path: Any) -> Callable[[Any, Any], Any]:
    """Import `module:function` (or `module.function`, split at the last dot) and check it can be called."""
    shape = "write it as module:function (the module importable, e.g. on PYTHONPATH)"
    if not isinstance(path, str):
        raise SchemaError(name, f"validator is {_json_type(path)}, not a module:function string", shape)
    module_name, colon, attribute = path.partition(":")
    if not colon:
        module_name, _, attribute = path.rpartition(".")
    if not module_name or not attribute:
        raise SchemaError(name, f"validator {path!r} is not a module:function path", shape)
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and (module_name == error.name or module_name.startswith(error.name + ".")):
            problem = f"validator {path!r} cannot be imported (no module named {error.name!r})"
        else:  # the module exists but something it imports does not
            problem = f"validator {path!r} cannot be imported (importing {module_name} failed: {error})"
        raise SchemaError(
            name, problem, "install the module or put it on PYTHONPATH, or fix the path"
        ) from None
    except Exception as error:  # a syntax error or an exception while the module runs
        raise SchemaError(
            name,
            f"validator {path!r} cannot be imported ({module_name} raised {type(error).__name__}: {error})",
            f"fix {module_name}",
        ) from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise SchemaError(
                name,
                f"validator {path!r} does not exist ({module_name} has no {attribute!r})",
                f"check the function's name in {module_name}",
            ) from None
    if not callable(target):
        raise SchemaError(
            name,
            f"validator {path!r} is not callable (it is of type {type(target).__name__})",
            "point validator at a function called as fn(value, record)",
        )
    _check_signature(name, path, target)
    return target


def _check_signature(name: str, path: str, function: Callable[..., Any]) -> None:
    import inspect  # only when a schema has a validator

    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # some builtins have none: they get their chance per record
        return
    try:
        signature.bind(None, None)
    except TypeError:
        raise SchemaError(
            name,
            f"validator {path!r} cannot be called as fn(value, record) (it takes {signature})",
            "give it two positional parameters, (value, record)",
        ) from None


# ---------------------------------------------------------------- issues

# Made by the compiled checks below and by the line scan of thinker.validation.dataset (which re-exports it).


@dataclass(frozen=True)
class DatasetIssue:
    """One problem, at a 1-based physical line of the file (line 0: the file as a whole)."""

    line: int
    field: str | None
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}: field {self.field!r}" if self.field is not None else f"line {self.line}"
        return f"{where}: {self.message}"


# ---------------------------------------------------------------- checks compiled from the specs

# Appends at most one issue for a value of the right type: (value, record, line_no, errors) -> None.
_ValueCheck = Callable[[Any, dict[str, Any], int, list[DatasetIssue]], None]
# (key in the object, label in issues, accepted Python types, refuse empty values, further checks, spec)
_FieldCheck = tuple[str, str, frozenset[type], bool, _ValueCheck | None, FieldSpec]


def _field_checks(fields: Sequence[FieldSpec], prefix: str = "") -> tuple[_FieldCheck, ...]:
    # Precomputed once so the per-record loop does one dict lookup and one set lookup per field, and calls
    # a further check only for fields that have keywords beyond type / required / allow_empty.
    return tuple(
        (
            spec.name,
            prefix + spec.name,
            _ACCEPTED_TYPES[spec.type],
            not spec.allow_empty and spec.type in _SIZED_TYPES,
            _value_check(spec, prefix + spec.name),
            spec,
        )
        for spec in fields
    )


def _check_fields(
    obj: dict[str, Any],
    checks: tuple[_FieldCheck, ...],
    record: dict[str, Any],
    line_no: int,
    errors: list[DatasetIssue],
) -> None:
    for key, label, accepted, reject_empty, further, spec in checks:
        value = obj.get(key, _ABSENT)
        if type(value) in accepted:
            if reject_empty and (not value or (type(value) is str and value.isspace())):
                errors.append(DatasetIssue(line_no, label, _empty_message(value)))
            elif further is not None:
                further(value, record, line_no, errors)
        else:
            message = _mismatch_message(value, spec)
            if message is not None:
                errors.append(DatasetIssue(line_no, label, message))


def _value_check(spec: FieldSpec, label: str) -> _ValueCheck | None:
    """One function running the spec's keyword checks in order, stopping at the first problem; None if none."""
    steps: list[Callable[[Any], str | None]] = []
    if spec.type == _MESSAGES:
        steps.append(_conversation_problem)
    if spec.min_length is not None or spec.max_length is not None:
        steps.append(_length_step(spec))
    if spec.min is not None or spec.max is not None:
        steps.append(_range_step(spec))
    if spec.choices is not None:
        steps.append(_choices_step(spec))
    if spec.regex is not None:
        steps.append(_pattern_step(spec.regex))
    nested = _field_checks(spec.fields, label + ".") if spec.fields else None
    validator, path = spec.validator_fn, spec.validator
    if not steps and nested is None and validator is None:
        return None
    if len(steps) == 1 and nested is None and validator is None:
        (step,) = steps

        def check_one(value: Any, record: dict[str, Any], line_no: int, errors: list[DatasetIssue]) -> None:
            message = step(value)
            if message is not None:
                errors.append(DatasetIssue(line_no, label, message))

        return check_one

    def check(value: Any, record: dict[str, Any], line_no: int, errors: list[DatasetIssue]) -> None:
        for step in steps:
            message = step(value)
            if message is not None:
                errors.append(DatasetIssue(line_no, label, message))
                return
        if nested is not None:
            before = len(errors)
            _check_fields(value, nested, record, line_no, errors)
            if len(errors) != before:
                return
        if validator is not None:
            message = _run_validator(validator, path, value, record)
            if message is not None:
                errors.append(DatasetIssue(line_no, label, message))

    return check


def _pattern_step(regex: re.Pattern[str]) -> Callable[[Any], str | None]:
    search = regex.search

    def pattern_problem(value: str) -> str | None:
        if search(value) is None:
            return f"does not match pattern {regex.pattern!r} (got {_excerpt(value)})"
        return None

    return pattern_problem


def _length_step(spec: FieldSpec) -> Callable[[Any], str | None]:
    low, high, unit = spec.min_length, spec.max_length, _LENGTH_UNITS[spec.type]

    def length_problem(value: Any) -> str | None:
        n = len(value)
        if low is not None and n < low:
            return f"has {_count(n, unit)}, fewer than min_length {low}"
        if high is not None and n > high:
            return f"has {_count(n, unit)}, more than max_length {high}"
        return None

    return length_problem


def _range_step(spec: FieldSpec) -> Callable[[Any], str | None]:
    low, high = spec.min, spec.max

    def range_problem(value: Any) -> str | None:
        if low is not None and value < low:
            return f"is {value}, below min {_num(low)}"
        if high is not None and value > high:
            return f"is {value}, above max {_num(high)}"
        return None

    return range_problem


def _choices_step(spec: FieldSpec) -> Callable[[Any], str | None]:
    allowed = frozenset(spec.choices or ())
    shown = ", ".join(json.dumps(c) for c in spec.choices or ())

    def choices_problem(value: Any) -> str | None:
        if value not in allowed:
            return f"is {_excerpt(value)}, not one of {shown}"
        return None

    return choices_problem


def _run_validator(
    validator: Callable[[Any, Any], Any], path: str | None, value: Any, record: Any
) -> str | None:
    try:
        outcome = validator(value, record)
    except Exception as error:  # a bug in the user's check is reported on its line; the scan goes on
        return f"validator {path} raised {type(error).__name__}: {error}"
    if outcome is None:
        return None
    if isinstance(outcome, str) and outcome.strip():
        return outcome
    return (
        f"validator {path} returned {outcome!r}; it must return None (fine) or a message saying what is wrong"
    )


def _conversation_problem(messages: list[Any]) -> str | None:
    """What is wrong with a chat conversation, or None: roles, contents and their order."""
    if not messages:
        return "has no messages (a conversation needs a user and an assistant message)"
    expected = "user"
    for number, message in enumerate(messages, start=1):
        if type(message) is not dict:
            return f"message {number}: expected an object with role and content, got {_json_type(message)}"
        role = message.get("role", _ABSENT)
        if role is _ABSENT:
            return f"message {number}: role is missing"
        if role not in CHAT_ROLES or type(role) is not str:
            return f"message {number}: role {_excerpt(role)} is not one of {', '.join(CHAT_ROLES)}"
        content = message.get("content", _ABSENT)
        if content is _ABSENT:
            return f"message {number} ({role}): content is missing"
        if type(content) is not str:
            return f"message {number} ({role}): expected string content, got {_json_type(content)}"
        if not content or content.isspace():
            return f"message {number} ({role}): content {_empty_message(content)}"
        if role == "system":
            if number != 1:
                return f"message {number}: a system message may only come first"
        elif role != expected:
            return (
                f"message {number}: expected {with_article(expected)} message, got {role} (after an optional system "
                "message, user and assistant alternate, starting with user)"
            )
        else:
            expected = "assistant" if role == "user" else "user"
    last = messages[-1]["role"]
    if last != "assistant":
        return f"ends with {with_article(last)} message; the last message must be the assistant's"
    return None


def _num(value: float) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _count(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


def _excerpt(value: Any, limit: int = 40) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 4] + '..."'


def _mismatch_message(value: Any, spec: FieldSpec) -> str | None:
    """Why a value of the wrong type is wrong, or None if it is an optional field left out or null."""
    if value is _ABSENT:
        return "is missing" if spec.required else None
    if value is None:
        return "is null" if spec.required else None
    if spec.type == _MESSAGES:
        return f"expected messages (an array of {{role, content}} objects), got {_json_type(value)}"
    return f"expected {spec.type}, got {_json_type(value)}"


def _empty_message(value: Any) -> str:
    if isinstance(value, str):
        return "is an empty string" if not value else "is a whitespace-only string"
    return f"is an empty {_json_type(value)}"


def _json_type(value: Any) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)
