"""Top-level names PyTorch scripts use: bfloat16 (a refused name), dtype, Size,
is_floating_point, set/get_num_threads, set_printoptions, use_deterministic_algorithms,
compile, the legacy tensor types, autograd's anomaly switches and testing.assert_close."""

from __future__ import annotations

import copy
import math
import pickle
import warnings
from typing import Any

import numpy as np
import pytest

import dtrain as dt

REFUSAL = r"bfloat16: numpy and cupy have no bfloat16; use dt\.float16 \(with a GradScaler"


@pytest.fixture
def torch() -> Any:
    """The ``torch`` module, or a skip when it is not installed."""
    return pytest.importorskip("torch")


@pytest.fixture
def restore_print_options():
    yield
    dt.set_printoptions(profile="default")


def test_bfloat16_is_a_name_that_every_dtype_door_refuses():
    table = {"float32": dt.float32, "bfloat16": dt.bfloat16, "float16": dt.float16}  # nanoGPT
    assert str(table["bfloat16"]) == "bfloat16" and repr(dt.bfloat16) == "bfloat16"
    assert dt.bfloat16 == dt.bfloat16 and dt.bfloat16 != "bfloat16"
    for real in (dt.float16, dt.float32, dt.float64, dt.int64, dt.bool):
        assert dt.bfloat16 != real and real != dt.bfloat16
        assert (dt.bfloat16 == real) is False
    assert copy.deepcopy(dt.bfloat16) is dt.bfloat16
    assert pickle.loads(pickle.dumps(dt.bfloat16)) is dt.bfloat16
    attempts = [
        lambda: dt.zeros(2, dtype=dt.bfloat16),
        lambda: dt.tensor([1.0], dtype=dt.bfloat16),
        lambda: dt.randn(2, dtype=dt.bfloat16),
        lambda: dt.ones(2).to(dt.bfloat16),
        lambda: dt.ones(2).to(dtype=dt.bfloat16),
        lambda: dt.ones(2).to("cpu", dt.bfloat16),
        lambda: dt.ones(2).type(dt.bfloat16),
        lambda: dt.ones(2).sum(dtype=dt.bfloat16),
        lambda: dt.finfo(dt.bfloat16),
        lambda: dt.zeros(2, dtype="bfloat16"),
    ]
    for attempt in attempts:
        with pytest.raises(TypeError, match=REFUSAL):
            attempt()
    with pytest.raises(TypeError, match="bfloat16"):
        dt.autocast("cpu", dtype=dt.bfloat16)
    assert dt.cuda.is_bf16_supported() is False


def test_dtype_is_the_type_of_every_dtype():
    for d in (dt.float16, dt.float32, dt.float64, dt.int8, dt.int64, dt.bool, dt.bfloat16):
        assert isinstance(d, dt.dtype)
    assert isinstance(dt.ones(1).dtype, dt.dtype)
    assert not isinstance("float32", dt.dtype) and not isinstance(np.float32, dt.dtype)

    def annotated(x: dt.dtype = dt.float32) -> dt.dtype:  # evaluated at definition
        return x

    assert annotated() == dt.float32


def test_bfloat16_matches_torch_naming(torch):
    assert str(dt.bfloat16) == str(torch.bfloat16).split(".")[-1]
    assert isinstance(torch.bfloat16, torch.dtype) and isinstance(dt.bfloat16, dt.dtype)
    with pytest.raises(TypeError, match=REFUSAL):
        dt.zeros(2, dtype=torch.bfloat16)  # another library's bfloat16, by its name


def test_size():
    size = dt.Size([2, 3])
    assert size == (2, 3) and isinstance(size, tuple) and size.numel() == 6
    assert dt.Size().numel() == 1 and dt.Size(()) == ()
    assert isinstance(size[1:], dt.Size) and size[1:] == (3,) and size[0] == 2
    assert isinstance(size + (4,), dt.Size) and (1,) + size == (1, 2, 3)
    assert repr(size) == "dtrain.Size([2, 3])"
    assert dt.Size(dt.tensor([4, 5])) == (4, 5)  # 0-d integer tensors are indices
    assert pickle.loads(pickle.dumps(size)) == size
    assert dt.zeros(3, 4).shape == dt.Size([3, 4])  # shapes are plain tuples, equal to it
    assert dt.Tensor(dt.Size([2, 3])).shape == (2, 3) and dt.zeros(dt.Size([2])).shape == (2,)
    with pytest.raises(TypeError, match="item 0 is float"):
        dt.Size([2.0])


def test_size_matches_torch(torch):
    for sizes in ([2, 3], [], [4]):
        assert dt.Size(sizes).numel() == torch.Size(sizes).numel()
        assert dt.Size(sizes)[1:] == tuple(torch.Size(sizes)[1:])


def test_is_floating_point():
    assert dt.is_floating_point(dt.ones(1, dtype=dt.float16))
    assert not dt.is_floating_point(dt.ones(1, dtype=dt.int64))


def test_num_threads():
    before = dt.get_num_threads()
    assert isinstance(before, int) and before >= 1
    try:
        dt.set_num_threads(1)
        assert dt.get_num_threads() == 1
        threadpoolctl = pytest.importorskip("threadpoolctl")
        blas = [p for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
        assert all(pool["num_threads"] == 1 for pool in blas)
    finally:
        dt.set_num_threads(before)
    with pytest.raises(ValueError, match="positive int"):
        dt.set_num_threads(0)


def test_set_printoptions(restore_print_options):
    x = dt.tensor([1.123456, 2.0])
    assert repr(x) == "tensor([1.1235, 2.0000])"
    dt.set_printoptions(precision=2)
    assert repr(x) == "tensor([1.12, 2.00])"
    dt.set_printoptions(sci_mode=True)  # precision stays
    assert repr(x) == "tensor([1.12e+00, 2.00e+00])"
    dt.set_printoptions(profile="default", sci_mode=False)
    assert repr(dt.tensor([1e-9, 2e9])) == "tensor([         0.0000, 2000000000.0000])"
    dt.set_printoptions(threshold=5, edgeitems=2)
    assert repr(dt.arange(10.0)) == "tensor([0., 1.,  ..., 8., 9.])"  # as PyTorch
    dt.set_printoptions(profile="full")
    assert "..." not in repr(dt.arange(2000.0))
    dt.set_printoptions(profile="default", linewidth=20)
    assert repr(dt.arange(6.0)).count("\n") >= 1
    assert dt.get_printoptions()["linewidth"] == 20
    with pytest.raises(ValueError, match="unknown profile"):
        dt.set_printoptions(profile="long")


def test_set_printoptions_matches_torch(torch, restore_print_options):
    cases = [
        ({}, [1.123456, 2.0]),
        ({"precision": 2}, [1.123456, 2.0]),
        ({"sci_mode": True}, [1.123456, 2.0]),
        ({"sci_mode": False}, [1e-9, 2e9]),
        ({}, [1e-9, 2e9]),
        ({}, [1e10, 1.0]),
        ({"precision": 3}, [-1e-5, 1.0, math.inf]),
    ]  # (summarised output differs: PyTorch pads "..." to the column width, numpy does not)
    try:
        for options, values in cases:
            dt.set_printoptions(profile="default", **options)
            torch.set_printoptions(profile="default", **options)
            ours = repr(dt.tensor(values, dtype=dt.float32))
            theirs = repr(torch.tensor(values, dtype=torch.float32))
            assert ours == theirs, (options, ours, theirs)
    finally:
        torch.set_printoptions(profile="default")


def test_deterministic_algorithms(test_device):
    from dtrain._tensor.settings import check_deterministic

    assert dt.are_deterministic_algorithms_enabled() is False
    try:
        dt.use_deterministic_algorithms(True)
        assert dt.are_deterministic_algorithms_enabled()
        x = dt.zeros(4, device=test_device)
        index = dt.tensor([0, 0, 1], device=test_device)
        source = dt.ones(3, device=test_device)
        # PyTorch runs these deterministically under the mode: so does dtrain, on CUDA too
        # (a sorted, segmented sum instead of atomics), with no error and no warning.
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert x.index_add(0, index, source).tolist() == [2.0, 1.0, 0.0, 0.0]
            assert x.scatter_add(0, index, source).tolist() == [2.0, 1.0, 0.0, 0.0]
            table = dt.arange(12.0, device=test_device).reshape(4, 3).requires_grad_()
            rows = dt.tensor([3, 0, 3, 3], device=test_device)
            (table[rows] * dt.arange(12.0, device=test_device).reshape(4, 3)).sum().backward()
            expected = np.zeros((4, 3))
            np.add.at(expected, [3, 0, 3, 3], np.arange(12.0).reshape(4, 3))
            np.testing.assert_array_equal(table.grad.cpu().numpy(), expected)
            picked = table.detach().requires_grad_()
            picked.index_select(0, rows).sum().backward()
            assert picked.grad[:, 0].tolist() == [1.0, 0.0, 0.0, 3.0]
        weights = dt.ones(3, device=test_device)
        if test_device == "cpu":  # every CPU op is deterministic: nothing refuses
            assert dt.bincount(index, weights).tolist() == [2.0, 1.0]
        else:  # PyTorch raises for bincount(weights=) on CUDA; so does dtrain
            with pytest.raises(RuntimeError, match="bincount with weights has no deterministic"):
                dt.bincount(index, weights)
            dt.use_deterministic_algorithms(True, warn_only=True)
            assert dt.is_deterministic_algorithms_warn_only_enabled()
            with pytest.warns(UserWarning, match="embedding backward"):  # no real op: the
                check_deterministic("embedding backward")  # emulator lacks bincount(weights)
    finally:
        dt.use_deterministic_algorithms(False)
    assert not dt.are_deterministic_algorithms_enabled()


def test_sorted_add_at_equals_ufunc_at():
    from dtrain._tensor.ops._util import sorted_add_at

    rng = np.random.default_rng(0)
    for _ in range(20):
        cases = [
            ((5, 4), rng.integers(-5, 5, 30), rng.standard_normal((30, 4))),
            ((6,), rng.integers(0, 6, 100), rng.standard_normal(100)),
            ((3, 5), (rng.integers(0, 3, 7), rng.integers(0, 5, 7)), 1.5),
            ((3, 5), (slice(None), rng.integers(0, 5, 7)), rng.standard_normal((3, 7))),
            ((4,), np.array([True, False, True, True]), 2.0),
        ]
        for shape, key, values in cases:
            expected = rng.standard_normal(shape)
            actual = expected.copy()
            np.add.at(expected, key, values)
            sorted_add_at(actual, key, values, np)
            np.testing.assert_allclose(actual, expected, rtol=1e-13, atol=1e-13)
    base = rng.standard_normal((4, 5))  # a non-contiguous view, as index_add passes
    expected, index, values = base.copy(), rng.integers(0, 5, 9), rng.standard_normal((9, 4))
    np.add.at(np.moveaxis(expected, 1, 0), index, values)
    sorted_add_at(np.moveaxis(base, 1, 0), index, values, np)
    np.testing.assert_allclose(base, expected, rtol=1e-13)


def test_compile_returns_its_argument():
    model = dt.nn.Linear(2, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert dt.compile(model) is model
        assert dt.compile(model, mode="max-autotune", fullgraph=True) is model

        @dt.compile
        def double(x):
            return 2 * x

        @dt.compile(dynamic=True)
        def triple(x):
            return 3 * x

    assert double(1) == 2 and triple(1) == 3


@pytest.mark.parametrize(
    "name, dtype",
    [
        ("FloatTensor", dt.float32), ("DoubleTensor", dt.float64), ("HalfTensor", dt.float16),
        ("LongTensor", dt.int64), ("IntTensor", dt.int32), ("BoolTensor", dt.bool),
        ("ByteTensor", dt.uint8), ("CharTensor", dt.int8), ("ShortTensor", dt.int16),
    ],
)  # fmt: skip
def test_legacy_tensor_types(name, dtype):
    kind = getattr(dt, name)
    made = kind(2, 3)
    assert type(made) is dt.Tensor and made.dtype == dtype and made.shape == (2, 3)
    assert kind([1, 0]).dtype == dtype and kind([1, 0]).tolist() == [1, 0]
    assert kind().shape == (0,) and kind(dt.Size([4])).shape == (4,)
    other = dt.float32 if dtype != dt.float32 else dt.int64
    assert isinstance(made, kind) and not isinstance(dt.zeros(1, dtype=other), kind)
    assert made.type() == "dtrain." + name
    same = dt.zeros(2, dtype=dtype)
    assert kind(same) is same
    with pytest.raises(TypeError, match=name):
        kind(dt.zeros(2, dtype=dt.float64 if dtype != dt.float64 else dt.float32))


def test_legacy_tensor_types_match_torch(torch):
    assert dt.FloatTensor([1, 2]).tolist() == torch.FloatTensor([1, 2]).tolist()
    assert dt.LongTensor(2, 3).shape == tuple(torch.LongTensor(2, 3).shape)
    assert isinstance(dt.zeros(2), dt.FloatTensor) == isinstance(torch.zeros(2), torch.FloatTensor)


def test_anomaly_switches_are_accepted():
    assert not dt.autograd.is_anomaly_enabled()
    with dt.autograd.detect_anomaly():
        assert dt.autograd.is_anomaly_enabled()
        x = dt.ones(2, requires_grad=True)
        (x * 2).sum().backward()
    assert not dt.autograd.is_anomaly_enabled() and x.grad.tolist() == [2.0, 2.0]
    with dt.autograd.set_detect_anomaly(True):
        assert dt.autograd.is_anomaly_enabled()
    assert not dt.autograd.is_anomaly_enabled()
    dt.autograd.set_detect_anomaly(True)
    assert dt.autograd.is_anomaly_enabled()
    dt.autograd.set_detect_anomaly(False)

    @dt.autograd.detect_anomaly()
    def step():
        return dt.autograd.is_anomaly_enabled()

    assert step() is True


# ---- testing.assert_close ------------------------------------------------------------------
def test_assert_close_passes_within_dtype_tolerances():
    dt.testing.assert_close(dt.tensor([1.0, 2.0]), dt.tensor([1.0, 2.0 + 1e-6]))
    dt.testing.assert_close(
        dt.tensor([1.0], dtype=dt.float64), dt.tensor([1.0 + 1e-8], dtype=dt.float64)
    )
    dt.testing.assert_close(1.0, 1.0 + 1e-9)
    dt.testing.assert_close([dt.ones(2), {"a": dt.zeros(1)}], [dt.ones(2), {"a": dt.zeros(1)}])
    dt.testing.assert_close(dt.tensor([math.nan]), dt.tensor([math.nan]), equal_nan=True)
    dt.testing.assert_close(dt.tensor([math.inf]), dt.tensor([math.inf]))
    dt.testing.assert_close(dt.tensor([1.0]), dt.tensor([1.1]), rtol=0.2, atol=0.0)
    dt.testing.assert_close(dt.tensor([1.0]), dt.tensor([1.0], dtype=dt.float64), check_dtype=False)


def test_assert_close_reports_mismatches():
    with pytest.raises(AssertionError, match=r"Mismatched elements: 1 / 3 \(33\.3%\)"):
        dt.testing.assert_close(dt.tensor([1.0, 2.0, 3.0]), dt.tensor([1.0, 2.1, 3.0]))
    with pytest.raises(AssertionError, match=r"at index \(1,\) \(up to 1e-05 allowed\)"):
        dt.testing.assert_close(dt.tensor([1.0, 2.0, 3.0]), dt.tensor([1.0, 2.1, 3.0]))
    with pytest.raises(AssertionError, match="'dtype' do not match: float32 != float64"):
        dt.testing.assert_close(dt.ones(2), dt.ones(2, dtype=dt.float64))
    with pytest.raises(AssertionError, match="'shape' do not match"):
        dt.testing.assert_close(dt.ones(3), dt.ones(2))
    with pytest.raises(AssertionError, match="not equal"):
        dt.testing.assert_close(dt.tensor([1, 2]), dt.tensor([1, 3]))
    with pytest.raises(AssertionError, match="Scalars are not close"):
        dt.testing.assert_close(1.0, 1.1)
    with pytest.raises(AssertionError):
        dt.testing.assert_close(dt.tensor([math.nan]), dt.tensor([math.nan]))
    with pytest.raises(AssertionError, match="custom"):
        dt.testing.assert_close(dt.ones(1), dt.zeros(1), msg="custom")
    with pytest.raises(ValueError, match="no atol"):
        dt.testing.assert_close(dt.ones(1), dt.ones(1), rtol=1e-3)
    with pytest.raises(TypeError, match="cannot compare Tensor with list"):
        dt.testing.assert_close(dt.ones(1), [1.0])


def test_assert_close_messages_match_torch(torch):
    pairs = [
        ([1.0, 2.0, 3.0], [1.0, 2.1, 3.0], "float32"),
        ([1.0, 2.0], [1.0, 5.0], "float64"),
        ([1, 2], [1, 3], "int64"),
    ]
    for actual, expected, dtype in pairs:
        messages = []
        for lib in (dt, torch):
            d = getattr(lib, dtype)
            try:
                lib.testing.assert_close(lib.tensor(actual, dtype=d), lib.tensor(expected, dtype=d))
            except AssertionError as error:
                messages.append(str(error))
        assert len(messages) == 2 and messages[0] == messages[1]
