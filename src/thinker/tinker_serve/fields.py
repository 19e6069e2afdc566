"""A request's fields, read strictly: the JSON type the SDK sends, finite numbers, values within bounds.

Python's json module reads `NaN` and `Infinity`, and float() reads the string "nan": a learning rate of any
of them used to reach AdamW and poison the model for every later request. Each reader here raises UserError
(answered 400 at once, before anything is queued) naming the field, what it must be and what came.
A missing field or JSON null takes the default; REQUIRED makes it an error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from thinker.tinker_serve.errors import UserError

REQUIRED: Any = object()
# torch.Generator.manual_seed's range
SEED_RANGE = (-(2**63), 2**64 - 1)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _raw(body: Any, key: str, default: Any, where: str) -> tuple[Any, bool]:
    """(value, present): a missing key or null is not present."""
    value = body.get(key) if isinstance(body, Mapping) else None
    if value is None:
        if default is REQUIRED:
            raise UserError(f"{where}{key} is required")
        return default, False
    return value, True


def _check_bounds(value: float, key: str, where: str, low: float | None, high: float | None, *,
                  low_open: bool = False, high_open: bool = False) -> None:
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if not (too_low or too_high):
        return
    if low is not None and high is not None:
        allowed = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        allowed = f"{'>' if low_open else '>='} {low:g}"
    else:
        allowed = f"{'<' if high_open else '<='} {high:g}"
    raise UserError(f"{where}{key} must be {allowed}, got {_show(value)}")


def integer(body: Any, key: str, default: Any = REQUIRED, *, low: int | None = None, high: int | None = None,
            where: str = "") -> Any:
    value, present = _raw(body, key, default, where)
    if not present:
        return value
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 3.0 is an integer in JSON's number type
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{where}{key} must be an integer, got {_show(value)}")
    _check_bounds(value, key, where, low, high)
    return value


def number(body: Any, key: str, default: Any = REQUIRED, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False, where: str = "") -> Any:
    value, present = _raw(body, key, default, where)
    if not present:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{where}{key} must be a number, got {_show(value)}")
    if not math.isfinite(value):
        raise UserError(f"{where}{key} must be a finite number, got {_show(value)}")
    _check_bounds(value, key, where, low, high, low_open=low_open, high_open=high_open)
    return float(value)


def boolean(body: Any, key: str, default: Any = REQUIRED, *, where: str = "") -> Any:
    value, present = _raw(body, key, default, where)
    if present and not isinstance(value, bool):
        raise UserError(f"{where}{key} must be true or false, got {_show(value)}")
    return value


def text(body: Any, key: str, default: Any = REQUIRED, *, where: str = "") -> Any:
    value, present = _raw(body, key, default, where)
    if present and not isinstance(value, str):
        raise UserError(f"{where}{key} must be a string, got {_show(value)}")
    return value


def seed(body: Any, key: str = "seed", *, where: str = "") -> int | None:
    return integer(body, key, None, low=SEED_RANGE[0], high=SEED_RANGE[1], where=where)


def integers(values: Any, where: str) -> list[int]:
    """A JSON list of integers (token ids)."""
    if not isinstance(values, list) or any(isinstance(v, bool) or not isinstance(v, int) for v in values):
        raise UserError(f"{where} must be a list of integers")
    return values
