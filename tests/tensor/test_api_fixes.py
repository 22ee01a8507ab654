"""Fixes from review r6: assert_close on infinities and large integers, gradients through
in-place ops' tensor arguments, repr of non-finite tensors, singular matrices in linalg,
erfinv's accuracy and the smaller API points (Size * n, x.new(shape), legacy types)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import dtrain as dt
from dtrain.autograd import gradcheck


@pytest.fixture
def torch() -> Any:
    """The ``torch`` module, or a skip when it is not installed."""
    return pytest.importorskip("torch")


@pytest.fixture
def restore_print_options():
    yield
    dt.set_printoptions(profile="default")


# ---- assert_close ------------------------------------------------------------------------
NOT_CLOSE = [
    (dt.tensor([1.0]), dt.tensor([math.inf])),
    (dt.tensor([-math.inf]), dt.tensor([math.inf])),
    (dt.tensor([math.inf]), dt.tensor([1.0])),
    (1.0, math.inf),
    (dt.tensor([2**24 + 1]), dt.tensor([2**24])),
    (dt.tensor([2**40 + 1]), dt.tensor([2**40])),
    (2**53 + 1, 2**53),
    (2**70 + 1, 2**70),
]


@pytest.mark.parametrize(("actual", "expected"), NOT_CLOSE)
def test_assert_close_fails_on_infinities_and_large_integers(actual, expected):
    with pytest.raises(AssertionError, match=r"not (close|equal)"):
        dt.testing.assert_close(actual, expected)


def test_assert_close_integer_report_and_passes():
    with pytest.raises(AssertionError, match="Greatest absolute difference: 1000000000000 "):
        dt.testing.assert_close(dt.tensor([10**12]), dt.tensor([0]))
    with pytest.raises(AssertionError, match=r"\n\nThe failure occurred for item \[1\]$"):
        dt.testing.assert_close([1, 2], [1, 3])
    dt.testing.assert_close(dt.tensor([2**40, -(2**62)]), dt.tensor([2**40, -(2**62)]))
    dt.testing.assert_close(dt.tensor([math.inf, -math.inf]), dt.tensor([math.inf, -math.inf]))
    dt.testing.assert_close(2**70, 2**70)
    dt.testing.assert_close(None, None)


def test_assert_close_messages_match_torch_on_edges(torch):
    pairs = [
        (lambda lib: lib.tensor([1.0]), lambda lib: lib.tensor([math.inf])),
        (lambda lib: lib.tensor([10**12]), lambda lib: lib.tensor([0])),
        (lambda lib: lib.tensor(1), lambda lib: lib.tensor(2)),
        (lambda lib: [1, 2], lambda lib: [1, 3]),
        (lambda lib: lib.tensor(1.0), lambda lib: lib.tensor(math.inf)),
    ]
    for actual, expected in pairs:
        messages = []
        for lib in (dt, torch):
            with pytest.raises(AssertionError) as caught:
                lib.testing.assert_close(actual(lib), expected(lib))
            messages.append(str(caught.value))
        assert messages[0] == messages[1]


# ---- in-place ops with tensor arguments ----------------------------------------------------
def test_pow_inplace_gives_the_exponent_its_gradient():
    exponent = dt.tensor(2.0, requires_grad=True)
    base = dt.tensor([1.0, 2.0])
    y = base.clone()
    y.pow_(exponent)
    assert y.requires_grad
    y.sum().backward()
    assert exponent.grad.item() == pytest.approx(4 * math.log(2))


def test_index_fill_value_tensor_gets_its_gradient(torch):
    grads = []
    for lib in (dt, torch):
        value = lib.tensor(3.0, requires_grad=True)
        x = lib.zeros(3, requires_grad=True)
        y = x.index_fill(0, lib.tensor([0, 2]), value)
        (y * lib.tensor([1.0, 2.0, 3.0])).sum().backward()
        grads.append((x.grad.tolist(), value.grad.item()))
    assert grads[0] == grads[1]


def test_index_fill_gradients_by_finite_differences(test_device):
    x = dt.tensor(np.arange(6.0).reshape(2, 3), dtype=dt.float64, requires_grad=True)
    value = dt.tensor(0.5, dtype=dt.float64, requires_grad=True)
    index = dt.tensor([0, 2])
    x, value, index = x.to(test_device), value.to(test_device), index.to(test_device)
    x, value = x.detach().requires_grad_(), value.detach().requires_grad_()
    assert gradcheck(lambda a, v: a.index_fill(1, index, v) ** 2, [x, value])
    filled = dt.zeros(3, device=test_device)
    filled.index_fill_(0, index, value)
    filled.sum().backward()
    assert value.grad.item() == 2.0


def test_index_fill_checks_bounds(test_device):
    with pytest.raises(IndexError, match="index 3 is out of range for dim 0 of size 3"):
        dt.zeros(3, device=test_device).index_fill(0, dt.tensor([3], device=test_device), 1.0)
    filled = dt.zeros(3, device=test_device).index_fill(0, dt.tensor([-1], device=test_device), 1)
    assert filled.tolist() == [0.0, 0.0, 1.0]


def test_inplace_on_an_expanded_view_names_the_fix():
    with pytest.raises(RuntimeError, match=r"expanded view .* call \.clone\(\)"):
        dt.ones(1, 3).expand(2, 3).sqrt_()


# ---- repr --------------------------------------------------------------------------------
REPR_CASES = [
    [math.nan],
    [math.inf, -math.inf],
    [0.0, 0.0],
    [0.0, math.nan],
    [math.nan, 1.0, math.inf],
    [1.0, 2000.0],
    [1e9, math.nan],
    [-1e-5, 3e10],
    [1.5, 2.0],
]


@pytest.mark.parametrize("sci_mode", [None, True, False])
def test_repr_of_non_finite_values(sci_mode, restore_print_options):
    dt.set_printoptions(sci_mode=sci_mode)
    assert repr(dt.tensor([math.nan])) == "tensor([nan])"
    assert repr(dt.tensor([math.inf, -math.inf])) == "tensor([inf, -inf])"
    assert repr(dt.tensor([0.0, 0.0])) == "tensor([0., 0.])"


def test_repr_of_half_tensors_does_not_warn():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert repr(dt.tensor([1.0, 2.0], dtype=dt.float16)) == (
            "tensor([1., 2.], dtype=dtrain.float16)"
        )


@pytest.mark.parametrize("sci_mode", [None, True, False])
def test_repr_matches_torch(torch, sci_mode, restore_print_options):
    dt.set_printoptions(sci_mode=sci_mode)
    torch.set_printoptions(sci_mode=sci_mode)
    try:
        for values in REPR_CASES:
            for dtype in ("float32", "float64"):
                mine = repr(dt.tensor(values, dtype=getattr(dt, dtype)))
                theirs = repr(torch.tensor(values, dtype=getattr(torch, dtype)))
                assert mine.replace("dtrain.", "torch.") == theirs
    finally:
        torch.set_printoptions(profile="default")


# ---- linalg --------------------------------------------------------------------------------
def _adjugate_t(a: np.ndarray) -> np.ndarray:
    """adj(a)^T by cofactors (a numpy reference)."""
    n = a.shape[-1]
    out = np.empty_like(a)
    for i in range(n):
        for j in range(n):
            minor = np.delete(np.delete(a, i, axis=0), j, axis=1)
            out[i, j] = (-1) ** (i + j) * (np.linalg.det(minor) if n > 1 else 1.0)
    return out


SINGULAR = [
    np.array([[1.0, 2.0], [2.0, 4.0]]),
    np.diag([1.0, 2.0, 0.0]),
    np.diag([1.0, 0.0, 0.0]),
    np.zeros((2, 2)),
    np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]),
]


@pytest.mark.parametrize("matrix", SINGULAR)
def test_det_gradient_of_singular_matrices_is_the_adjugate(matrix, test_device):
    a = dt.tensor(matrix, dtype=dt.float64, device=test_device, requires_grad=True)
    dt.linalg.det(a).backward()
    np.testing.assert_allclose(a.grad.cpu().numpy(), _adjugate_t(matrix), atol=1e-12)


def test_det_gradient_mixed_batch(check):
    rng = np.random.default_rng(0)
    batch = np.stack([rng.standard_normal((3, 3)), np.diag([1.0, 2.0, 0.0])])
    a = check.leaf(batch)
    weights = np.array([0.5, -2.0])
    (dt.linalg.det(a) * dt.tensor(weights, device=check.device)).sum().backward()
    expected = np.stack([w * _adjugate_t(m) for w, m in zip(weights, batch)])
    np.testing.assert_allclose(a.grad.cpu().numpy(), expected, atol=1e-12)
    check.grad(dt.linalg.det, rng.standard_normal((2, 3, 3)))  # invertible: finite differences


def test_det_gradient_matches_torch_create_graph(torch):
    """PyTorch's twice-differentiable backward gives the adjugate (its plain backward gives
    0 at an exactly singular matrix); dtrain always gives the adjugate."""
    for matrix in SINGULAR:
        a = torch.tensor(matrix, requires_grad=True)
        (theirs,) = torch.autograd.grad(torch.linalg.det(a), a, create_graph=True)
        mine = dt.tensor(matrix, dtype=dt.float64, requires_grad=True)
        dt.linalg.det(mine).backward()
        np.testing.assert_allclose(mine.grad.numpy(), theirs.detach().numpy(), atol=1e-12)


def test_singular_inv_and_solve_raise_on_every_device(test_device):
    singular = dt.tensor([[1.0, 2.0], [2.0, 4.0]], device=test_device)
    with pytest.raises(np.linalg.LinAlgError, match="Singular matrix"):
        dt.linalg.inv(singular)
    with pytest.raises(np.linalg.LinAlgError, match="Singular matrix"):
        dt.linalg.solve(singular, dt.ones(2, device=test_device))


def test_singular_check_on_cuda_arrays(monkeypatch):
    """The CUDA check itself (cupy returns inf/nan for a singular matrix), on numpy arrays."""
    from dtrain._tensor.ops import matrix

    monkeypatch.setattr(matrix, "is_cuda_array", lambda array: True)
    with pytest.raises(np.linalg.LinAlgError, match=r"linalg\.inv: Singular matrix"):
        matrix._check_singular(np.eye(2), np.array([[np.inf, 0.0], [0.0, 1.0]]), "linalg.inv")
    matrix._check_singular(np.eye(2), np.eye(2), "linalg.inv")  # finite: no error
    nan_input = np.array([[np.nan, 0.0], [0.0, 1.0]])
    matrix._check_singular(nan_input, nan_input, "linalg.inv")  # NaN in, NaN out: as numpy


# ---- erf / erfinv --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_erf_of_a_0d_tensor_is_a_0d_tensor(dtype):
    # float16/32 take the in-place Abramowitz-Stegun form, where a 0-d numpy result is a
    # scalar that out= cannot write (Normal(0., 1.).cdf and KL(Normal || Laplace) hit it)
    value = dt.erf(dt.tensor(0.5, dtype=dtype))
    assert value.shape == () and value.dtype == np.dtype(dtype)
    assert abs(float(value) - math.erf(0.5)) < (1e-3 if dtype == "float16" else 1e-6)


def test_erfinv_float64_is_accurate_into_the_far_tail(check):
    from dtrain.runtime.special import erf

    tiny = 1 - np.logspace(-16, -1, 60)
    x = np.concatenate([np.linspace(-0.999, 0.999, 201), tiny, -tiny, [1 - 2**-53, 0.0]])
    y = dt.erfinv(dt.tensor(x, dtype=dt.float64, device=check.device)).cpu().numpy()
    # erf(y) recovers x where erf's slope is large; in the tail, 1 - erf(y) recovers 1 - |x|
    central = np.abs(x) < 0.9
    np.testing.assert_allclose(erf(y[central]), x[central], rtol=4e-16, atol=1e-16)
    tail = ~central
    erfc = np.array([math.erfc(abs(v)) for v in y[tail]])
    np.testing.assert_allclose(erfc, 1 - np.abs(x[tail]), rtol=3e-14)


def test_erfinv_matches_mpmath():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 30
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-1, 1, 300), 1 - 10 ** rng.uniform(-16, -1, 200)])
    y = dt.erfinv(dt.tensor(x, dtype=dt.float64)).numpy()
    reference = np.array([float(mpmath.erfinv(mpmath.mpf(float(v)))) for v in x])
    np.testing.assert_allclose(y, reference, rtol=1e-14)


def test_erfinv_matches_torch(torch):
    rng = np.random.default_rng(1)
    for dtype in ("float32", "float64"):
        x = rng.uniform(-1, 1, 2000).astype(dtype)
        x[:4] = [1.0, -1.0, 0.0, 0.5]
        mine = dt.erfinv(dt.tensor(x)).numpy()
        theirs = torch.erfinv(torch.tensor(x)).numpy()
        np.testing.assert_allclose(mine, theirs, rtol=2e-7 if dtype == "float32" else 1e-14)


# ---- Size, new, legacy types, dtypes -------------------------------------------------------
def test_size_times_n_is_a_size():
    assert isinstance(dt.Size([2, 3]) * 2, dt.Size)
    assert dt.Size([2, 3]) * 2 == (2, 3, 2, 3)
    assert isinstance(2 * dt.Size([1]), dt.Size)
    assert dt.Size([2, -1]) == (2, -1)


def test_new_and_legacy_types_refuse_an_ambiguous_tuple():
    x = dt.zeros(2, 3)
    with pytest.raises(TypeError, match=r"ambiguous.*new_zeros"):
        x.new(x.shape)
    with pytest.raises(TypeError, match=r"ambiguous.*FloatTensor\(\*x.shape\)"):
        dt.FloatTensor(x.size())
    assert x.new(dt.Size([2, 3])).shape == (2, 3)
    assert dt.FloatTensor(dt.Size([2, 3])).shape == (2, 3)
    assert x.new([2, 3]).tolist() == [2.0, 3.0]


def test_legacy_types_convert_arrays_and_ranges():
    converted = dt.FloatTensor(np.zeros(2, dtype=np.float64))
    assert converted.dtype == dt.float32 and converted.tolist() == [0.0, 0.0]
    assert dt.LongTensor(range(3)).tolist() == [0, 1, 2]
    with pytest.raises(TypeError, match="PyTorch refuses too"):
        dt.FloatTensor(dt.zeros(2, dtype=dt.float64))


def test_to_dtype_fast_path_still_refuses():
    from dtrain.runtime.dtypes import to_dtype

    assert to_dtype(np.dtype(np.float32)) is dt.float32 or to_dtype(dt.float32) == np.float32
    with pytest.raises(TypeError, match="unsupported dtype"):
        to_dtype(np.dtype(np.complex64))
    with pytest.raises(TypeError, match="bfloat16"):
        to_dtype("bfloat16")


@pytest.mark.parametrize("mode", [None, "use_mm_for_euclid_dist", "donot_use_mm_for_euclid_dist"])
def test_cdist_compute_modes_agree(check, mode):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 4, 3)), rng.standard_normal((1, 5, 3))
    reference = np.sqrt(((a[:, :, None, :] - b[:, None, :, :]) ** 2).sum(-1))
    check.op(lambda x, y: dt.cdist(x, y, compute_mode=mode), lambda x, y: reference, a, b)
    with pytest.raises(ValueError, match="unknown compute_mode"):
        dt.cdist(dt.ones(2, 3), dt.ones(2, 3), compute_mode="fast")


def test_a_range_indexes_as_a_list_of_indices():
    # mnist_forward_forward writes x_[range(n), y] = ...; torch takes a range as a list.
    x = dt.zeros(3, 4)
    labels = dt.tensor([1, 0, 3])
    x[range(3), labels] = 5.0
    assert x.tolist() == [[0, 5, 0, 0], [5, 0, 0, 0], [0, 0, 0, 5]]
    w = dt.arange(12.0).reshape(3, 4).requires_grad_()
    w[range(1, 3)].sum().backward()
    assert w.grad.tolist() == [[0] * 4, [1] * 4, [1] * 4]
