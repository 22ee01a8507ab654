"""``add_at`` (tensor/ops/_util.py) on CUDA for the dtypes cupy's ``add.at`` refuses
(int64, int8, int16, uint8, bool): run under the CUDA emulator, which refuses them as cupy
does, against numpy's ``add.at`` on the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import dtrain as dt
from dtrain._tensor.ops._util import add_at


@pytest.fixture
def emulator(monkeypatch):
    """CUDA arrays emulated on the CPU (tests/runtime/cuda_emulator.py)."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "runtime"))
    from cuda_emulator import install

    return install(monkeypatch)


DTYPES = ["int64", "int32", "int16", "int8", "uint8", "uint64", "bool", "float16", "float64"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_add_at_sums_repeated_indices_in_every_dtype(emulator, dtype):
    rng = np.random.default_rng(0)
    target = rng.integers(0, 3, size=(5, 3)).astype(dtype)
    rows = np.array([0, 4, 0, 2, 0, 4])
    values = rng.integers(0, 3, size=(6, 3)).astype(dtype)
    if dtype == "int64":  # wrapping sums stay exact
        values[0, 0] = np.iinfo(np.int64).max
    expected = target.copy()
    np.add.at(expected, rows, values)
    import cupy  # the emulator's

    on_gpu = cupy.asarray(target)
    add_at(on_gpu, cupy.asarray(rows), cupy.asarray(values), "test")
    np.testing.assert_array_equal(cupy.asnumpy(on_gpu), expected)
    assert cupy.asnumpy(on_gpu).dtype == np.dtype(dtype)


def test_add_at_with_a_tuple_key_and_a_scalar(emulator):
    import cupy  # the emulator's

    target = cupy.asarray(np.zeros((3, 3), np.int64))
    add_at(target, (cupy.asarray([0, 0, 2]), cupy.asarray([1, 1, 2])), 7, "test")
    expected = np.zeros((3, 3), np.int64)
    np.add.at(expected, ([0, 0, 2], [1, 1, 2]), 7)
    np.testing.assert_array_equal(cupy.asnumpy(target), expected)


def test_add_at_on_a_strided_view(emulator):
    import cupy  # the emulator's

    base = cupy.asarray(np.zeros((4, 6), np.int8))
    view = cupy.moveaxis(base[:, ::2], 1, 0)  # what index_add does along dim 1
    add_at(view, cupy.asarray([2, 0, 2]), cupy.asarray(np.ones((3, 4), np.int8)), "test")
    expected = np.zeros((4, 6), np.int8)
    np.add.at(np.moveaxis(expected[:, ::2], 1, 0), [2, 0, 2], np.ones((3, 4), np.int8))
    np.testing.assert_array_equal(cupy.asnumpy(base), expected)


@pytest.mark.parametrize("dtype", ["int64", "int8", "int16", "uint8"])
def test_scatter_add_and_index_add_of_integers_on_cuda(emulator, dtype):
    index = np.array([[0, 1, 0], [1, 0, 0]])
    src = np.arange(6).reshape(2, 3).astype(dtype)
    expected = np.zeros((2, 3), dtype)
    np.add.at(expected, (index, np.arange(3)), src)
    target = dt.zeros(2, 3, dtype=getattr(dt, dtype), device="cuda")
    out = dt.scatter_add(target, 0, dt.tensor(index, device="cuda"), dt.tensor(src, device="cuda"))
    assert out.device.type == "cuda"
    np.testing.assert_array_equal(out.cpu().numpy(), expected)
    rows = dt.tensor([1, 1], device="cuda")
    added = dt.zeros(2, 3, dtype=getattr(dt, dtype), device="cuda")
    added.index_add_(0, rows, dt.tensor(src, device="cuda"))
    np.testing.assert_array_equal(added.cpu().numpy(), [[0, 0, 0], src.sum(0)])
