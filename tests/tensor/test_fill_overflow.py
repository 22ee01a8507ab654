"""``full`` / ``full_like`` / ``new_full`` / ``fill_`` refuse a finite number the dtype
cannot hold, as PyTorch does (tensor/creation_filled.py ``check_fill_value``)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import dtrain as dt


@pytest.fixture
def torch() -> Any:
    """The ``torch`` module, or a skip when it is not installed."""
    return pytest.importorskip("torch")


FILLS = {
    "full": lambda m, value, dtype: m.full((2,), value, dtype=dtype),
    "full_like": lambda m, value, dtype: m.full_like(m.zeros(2, dtype=dtype), value),
    "new_full": lambda m, value, dtype: m.zeros(1, dtype=dtype).new_full((2,), value),
    "fill_": lambda m, value, dtype: m.zeros(2, dtype=dtype).fill_(value),
}

# (value, dtype name): refused
OVERFLOWS = [
    (1e40, "float16"),
    (70000.0, "float16"),
    (1e300, "float32"),
    (10**40, "float32"),
    (10**400, "float64"),
    (300, "int8"),
    (-129, "int8"),
    (127.9, "int8"),
    (256, "uint8"),
    (-256, "uint8"),
    (-0.5, "uint8"),
    (1e10, "int32"),
    (2**63, "int64"),
    (math.nan, "int32"),
    (math.inf, "int64"),
]
# (value, dtype name, stored value): taken
ACCEPTED = [
    (math.inf, "float16", math.inf),
    (-math.inf, "float32", -math.inf),
    (65504.0, "float16", 65504.0),
    (2.5, "int8", 2),
    (-1.5, "int8", -1),
    (127, "int8", 127),
    (-1, "uint8", 255),
    (-255, "uint8", 1),
    (True, "int8", 1),
    (5, "bool", True),
    (-(2**63), "int64", -(2**63)),
]


@pytest.mark.parametrize("fill", FILLS)
@pytest.mark.parametrize("value, dtype", OVERFLOWS)
def test_a_value_the_dtype_cannot_hold_is_refused(fill, value, dtype):
    with pytest.raises(RuntimeError, match=f"cannot be converted to type {dtype} without overflow"):
        FILLS[fill](dt, value, getattr(dt, dtype))


def test_the_error_names_the_range_and_a_wider_dtype():
    with pytest.raises(RuntimeError, match=r"int8 holds -128 to 127.*wider dtype such as int16"):
        dt.zeros(2, dtype=dt.int8).fill_(300)
    with pytest.raises(RuntimeError, match=r"value 1e\+40 .*such as float32"):
        dt.full((2,), 1e40, dtype=dt.float16)


@pytest.mark.parametrize("fill", FILLS)
@pytest.mark.parametrize("value, dtype, stored", ACCEPTED)
def test_values_in_range_inf_and_nan_are_stored(fill, value, dtype, stored):
    result = FILLS[fill](dt, value, getattr(dt, dtype))
    assert result.dtype == getattr(dt, dtype)
    assert result.tolist() == [stored, stored]


def test_nan_fills_a_float_tensor():
    assert np.isnan(dt.full((2,), math.nan, dtype=dt.float16).numpy()).all()


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")  # numpy's; torch is silent
def test_a_tensor_value_is_cast_not_checked():
    filled = dt.zeros(2, dtype=dt.float16).fill_(dt.tensor(1e40, dtype=dt.float64))
    assert filled.tolist() == [math.inf, math.inf]


# torch refuses ints past int64 and nan/inf for an int dtype with other errors
COMPARABLE = [
    (v, d)
    for v, d in OVERFLOWS
    if (isinstance(v, int) and abs(v) <= 2**63) or (isinstance(v, float) and math.isfinite(v))
] + [(v, d) for v, d, _ in ACCEPTED if d != "bool"]


@pytest.mark.parametrize("fill", FILLS)
@pytest.mark.parametrize("value, dtype", COMPARABLE)
def test_matches_torch(torch, fill, value, dtype):
    def outcome(module: Any) -> Any:
        try:
            return FILLS[fill](module, value, getattr(module, dtype)).tolist()
        except RuntimeError:
            return "refused"

    assert outcome(dt) == outcome(torch)
