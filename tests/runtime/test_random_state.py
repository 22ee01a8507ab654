"""The default generator's state (``dt.get_rng_state`` / ``set_rng_state``, ``dt.seed``) and
dtype limits (``dt.finfo`` / ``dt.iinfo``)."""

from __future__ import annotations

import numpy as np
import pytest

import dtrain as dt


def test_rng_state_round_trips_through_a_checkpoint(tmp_path):
    dt.manual_seed(7)
    dt.rand(3)
    state = dt.get_rng_state()
    first = dt.rand(4).numpy().copy()
    dt.save({"rng": state}, tmp_path / "rng.pt")
    dt.rand(10)
    dt.set_rng_state(dt.load(tmp_path / "rng.pt")["rng"])
    np.testing.assert_array_equal(dt.rand(4).numpy(), first)


def test_set_rng_state_refuses_what_get_rng_state_did_not_give():
    with pytest.raises(TypeError, match="the dict get_rng_state returned, got list"):
        dt.set_rng_state([1, 2, 3])


def test_seed_reseeds_from_entropy_and_returns_the_seed():
    chosen = dt.seed()
    assert dt.initial_seed() == chosen
    draw = dt.rand(3).numpy().copy()
    dt.manual_seed(chosen)
    np.testing.assert_array_equal(dt.rand(3).numpy(), draw)
    assert dt.seed() != chosen  # 2**-63 odds of a clash


def test_finfo_and_iinfo_give_the_limits_torch_gives():
    assert dt.finfo(dt.float16).max == 65504
    assert dt.finfo(dt.float32).eps == 2**-23 and type(dt.finfo().eps) is float
    assert dt.finfo().bits == 32  # the default float dtype
    assert dt.finfo("float64").tiny == np.finfo(np.float64).tiny
    assert dt.iinfo(dt.int32).min == -(2**31)
    assert dt.iinfo(dt.uint8).max == 255
    with pytest.raises(TypeError, match="use iinfo for int64"):
        dt.finfo(dt.int64)
    with pytest.raises(TypeError, match="use finfo for float32"):
        dt.iinfo(dt.float32)


def test_the_default_dtype_is_float32_and_fixed():
    assert dt.get_default_dtype() == dt.float32 == dt.tensor(1.5).dtype
    dt.set_default_dtype(dt.float32)  # accepted: it is the default already
    with pytest.raises(TypeError, match=r"fixed at float32; pass dtype="):
        dt.set_default_dtype(dt.float64)
    assert dt.tensor(1.5).dtype == dt.float32


def test_limits_are_python_numbers_as_torch_gives():
    # numpy's would stay float16: max * 2 would overflow to inf
    assert dt.finfo(dt.float16).max * 2 == 131008.0
    assert type(dt.iinfo(dt.int64).max) is int
