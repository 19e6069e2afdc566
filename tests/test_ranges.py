"""Property tests over the seed-004 ranges: inside passes, outside fails naming the key and the range."""

from __future__ import annotations

import math

import pytest
from conftest import compose
from hypothesis import given, settings
from hypothesis import strategies as st

from thinker.config.check import check_config, range_errors
from thinker.config.ranges import PARAMETER_RANGES, RangeError, check_range
from thinker.errors import ThinkerError

KEYS = sorted(PARAMETER_RANGES)


def inside(rng):
    if rng.integer:
        return st.integers(int(math.ceil(rng.min)) + (1 if rng.min_exclusive else 0), int(rng.max))
    return st.floats(rng.min, rng.max, exclude_min=rng.min_exclusive, allow_nan=False)


def outside(rng):
    below = st.floats(max_value=rng.min, exclude_max=not rng.min_exclusive, allow_nan=False, allow_infinity=False)
    above = st.floats(min_value=rng.max, exclude_min=True, allow_nan=False, allow_infinity=False)
    return below | above


@pytest.mark.parametrize("key", KEYS)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_values_inside_pass(key, data):
    value = data.draw(inside(PARAMETER_RANGES[key]))
    check_range(key, value)


@pytest.mark.parametrize("key", KEYS)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_values_outside_fail_naming_key_and_range(key, data):
    rng = PARAMETER_RANGES[key]
    value = data.draw(outside(rng))
    with pytest.raises(RangeError) as info:
        check_range(key, value)
    assert key in str(info.value) and rng.describe() in str(info.value)


@pytest.mark.parametrize("key", [k for k in KEYS if PARAMETER_RANGES[k].integer])
def test_integer_ranges_reject_fractions(key):
    rng = PARAMETER_RANGES[key]
    with pytest.raises(RangeError):
        check_range(key, rng.min + 0.5)


def test_nan_and_bool_rejected():
    with pytest.raises(RangeError):
        check_range("optimizer.lr", float("nan"))
    with pytest.raises(RangeError):
        check_range("trainer.batch_size", True)


def test_every_range_key_exists_in_the_default_config_or_a_method():
    cfg = compose(["method=lora"])
    from omegaconf import OmegaConf

    for key in KEYS:
        assert OmegaConf.select(cfg, key, default="MISSING!") != "MISSING!", key


def test_composed_config_out_of_range_fails_the_check():
    cfg = compose(["optimizer.lr=2.0"])
    assert [e.key for e in range_errors(cfg)] == ["optimizer.lr"]
    with pytest.raises(ThinkerError) as info:
        check_config(cfg, env={})
    assert "optimizer.lr" in str(info.value) and "(0, 1]" in str(info.value)


def test_local_sequence_floor_is_wider_than_seed_but_providers_can_raise_it():
    # seed 004 says 512; the local backend widens the floor for tiny CPU models (see ranges.py)
    check_range("trainer.max_seq_length", 64)
    with pytest.raises(RangeError):
        check_range("trainer.max_seq_length", 8)


def test_seed_is_checked_against_numpys_bounds_at_config_check(tmp_path):
    # numpy seeds with an unsigned 32-bit integer: seed=-5 used to pass the check and crash in training
    check_range("seed", 0)
    check_range("seed", 2**32 - 1)
    for seed in (-5, 2**32):
        with pytest.raises(ThinkerError) as info:
            check_config(compose([f"seed={seed}"]), env={})
        assert f"seed={seed} is outside the allowed range integer [0, 4294967295]" in str(info.value)
    from conftest import launch

    out = launch(["stage=validate", "seed=-5", "logger=none"], tmp_path, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1] == (
        "[thinker] error: seed=-5 is outside the allowed range integer [0, 4294967295], config key seed, "
        "choose a value in integer [0, 4294967295]")


def test_max_record_chars_is_a_positive_integer():
    for value in (0, -1, 1.5, 10**9):
        with pytest.raises(RangeError):
            check_range("data.max_record_chars", value)
    assert compose([]).data.max_record_chars == 1_000_000
