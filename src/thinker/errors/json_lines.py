"""Why one line of a JSON-lines file could not be parsed, said as the user sees that line.

Every reader of a user's JSONL file (the dataset validator, the SciFact converter, `thinker generate`) parses
a line with its newline, so an error at the end of the line (a missing closing brace) sits after the newline
and json would call it "line 2 column 1": the error is described as on the line without its newline. JSON nested deeper
than the parser can recurse raises RecursionError, which is a problem of that line, not a crash.

Standard library only: the validator imports it.
"""

from __future__ import annotations

import json
import re
import sys

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")


def error_text(error: json.JSONDecodeError, column_offset: int = 0) -> str:
    """json's message and the 1-based column of `error` within its one-line document, e.g. "Expecting ','
    delimiter at column 56". The line is parsed again without its newline, so an unterminated string is
    reported as such, not as a newline ("Invalid control character") inside it."""
    line = error.doc.rstrip("\r\n")
    if len(line) < len(error.doc):
        try:
            json.loads(line)
        except json.JSONDecodeError as on_the_line:
            error = on_the_line
        except (ValueError, RecursionError):
            pass
    column = min(error.pos, len(line)) + 1 + column_offset
    return f"{error.msg.removesuffix(' at')} at column {column}"


def nesting_depth(text: str) -> int:
    """How deep arrays and objects nest in `text` (brackets inside strings do not count); no recursion."""
    depth = deepest = 0
    for bracket in _BRACKET.findall(_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def parse_problem(error: ValueError | RecursionError, text: str) -> str:
    """What is wrong with the line `text` that json.loads refused with `error`, e.g. "invalid JSON (Expecting
    ',' delimiter at column 56)" or "invalid JSON (nested 10000 levels deep, ...)"."""
    if isinstance(error, RecursionError):
        return (f"invalid JSON (nested {nesting_depth(text)} levels deep, deeper than the JSON parser reads: "
                f"about {sys.getrecursionlimit()} levels)")
    if isinstance(error, json.JSONDecodeError):
        return f"invalid JSON ({error_text(error)})"
    return f"invalid JSON ({error})"
