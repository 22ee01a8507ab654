"""PyTorch's ``out=`` keyword (tensor/out_argument.py): the result written into ``out``,
resized, cast, refused where PyTorch refuses it; against numpy and, when installed, torch."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

import dtrain as dt


@pytest.fixture
def torch() -> Any:
    """The ``torch`` module, or a skip when it is not installed."""
    return pytest.importorskip("torch")


def _x(device: str) -> dt.Tensor:
    return dt.tensor(np.arange(6.0).reshape(2, 3), device=device)


# name, call(module, x, out) for both dtrain and torch, numpy reference, out's shape
CASES = [
    ("add", lambda m, x, out: m.add(x, x, alpha=2, out=out), lambda a: a + 2 * a, (2, 3)),
    ("mul", lambda m, x, out: m.mul(x, 3.0, out=out), lambda a: a * 3, (2, 3)),
    ("exp", lambda m, x, out: m.exp(x, out=out), np.exp, (2, 3)),
    ("sum", lambda m, x, out: m.sum(x, 0, out=out), lambda a: a.sum(0), (3,)),
    (
        "sum keepdim",
        lambda m, x, out: m.sum(x, dim=1, keepdim=True, out=out),
        lambda a: a.sum(1, keepdims=True),
        (2, 1),
    ),
    ("mean", lambda m, x, out: m.mean(x, 1, out=out), lambda a: a.mean(1), (2,)),
    ("matmul", lambda m, x, out: m.matmul(x, x.T, out=out), lambda a: a @ a.T, (2, 2)),
    ("mm", lambda m, x, out: m.mm(x.T, x, out=out), lambda a: a.T @ a, (3, 3)),
    (
        "bmm",
        lambda m, x, out: m.bmm(x[None], x.T[None], out=out),
        lambda a: (a @ a.T)[None],
        (1, 2, 2),
    ),
    (
        "cat",
        lambda m, x, out: m.cat([x, x], 1, out=out),
        lambda a: np.concatenate([a, a], 1),
        (2, 6),
    ),
    ("stack", lambda m, x, out: m.stack([x, x], out=out), lambda a: np.stack([a, a]), (2, 2, 3)),
    ("clamp", lambda m, x, out: m.clamp(x, 1, 3, out=out), lambda a: a.clip(1, 3), (2, 3)),
    (
        "where",
        lambda m, x, out: m.where(x > 2, x, -x, out=out),
        lambda a: np.where(a > 2, a, -a),
        (2, 3),
    ),
    ("eq", lambda m, x, out: m.eq(x, 2.0, out=out), lambda a: a == 2, (2, 3)),
]


@pytest.mark.parametrize("name, call, reference, shape", CASES, ids=[c[0] for c in CASES])
def test_out_holds_the_result_and_is_returned(test_device, name, call, reference, shape):
    x = _x(test_device)
    expected = reference(np.arange(6.0).reshape(2, 3))
    out = dt.empty(shape, dtype=dt.bool if expected.dtype == bool else dt.float32)
    out = out.to(test_device)
    returned = call(dt, x, out)
    assert returned is out
    assert out.shape == expected.shape and out.device.type == test_device
    np.testing.assert_allclose(out.cpu().numpy(), expected)


@pytest.mark.parametrize("name, call, reference, shape", CASES, ids=[c[0] for c in CASES])
def test_out_matches_torch(torch, name, call, reference, shape):
    x = _x("cpu")
    ours = dt.empty(shape, dtype=dt.float64)
    theirs = torch.empty(shape, dtype=torch.float64)
    call(dt, x, ours)
    call(torch, torch.from_numpy(x.numpy()), theirs)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy())


def test_several_results_go_to_a_tuple_of_outs():
    x = dt.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 4.0]])
    values, indices = dt.empty(2), dt.empty(2, dtype=dt.int64)
    result = dt.max(x, 1, out=(values, indices))
    assert result.values is values and result.indices is indices
    np.testing.assert_array_equal(values.numpy(), [3.0, 5.0])
    np.testing.assert_array_equal(indices.numpy(), [0, 1])
    sorted_values, order = dt.empty(0), dt.empty(0, dtype=dt.int64)
    dt.sort(x, 1, out=[sorted_values, order])
    np.testing.assert_array_equal(sorted_values.numpy(), np.sort(x.numpy(), 1))
    np.testing.assert_array_equal(order.numpy(), np.argsort(x.numpy(), 1))


def test_a_plain_tensor_for_several_results_is_refused():
    with pytest.raises(TypeError, match=r"max\(\): out must be a tuple of 2 tensors"):
        dt.max(dt.ones(2, 3), 1, out=dt.empty(2))


def test_an_empty_out_is_resized_silently_and_a_full_one_with_a_warning():
    x = dt.ones(2, 3)
    empty = dt.empty(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dt.add(x, x, out=empty)
    assert empty.shape == (2, 3)
    np.testing.assert_array_equal(empty.numpy(), np.full((2, 3), 2.0))
    full = dt.zeros(5)
    with pytest.warns(UserWarning, match=r"resized since it had shape \[5\]"):
        dt.add(x, x, out=full)
    assert full.shape == (2, 3) and full.dtype == dt.float32


def test_a_view_out_is_written_through_to_its_base():
    base = dt.zeros(4, 3)
    dt.add(dt.ones(2, 3), 1, out=base[1:3])
    np.testing.assert_array_equal(base.numpy(), [[0] * 3, [2] * 3, [2] * 3, [0] * 3])


def test_a_view_out_of_another_shape_is_refused():
    base = dt.zeros(4, 3)
    with pytest.raises(RuntimeError, match="view of another tensor"):
        dt.add(dt.ones(2, 3), 1, out=base[:1])


def test_out_may_be_an_input():
    x = dt.tensor([1.0, 2.0])
    dt.mul(x, x, out=x)
    np.testing.assert_array_equal(x.numpy(), [1.0, 4.0])


def test_the_result_is_cast_within_its_kind():
    ints = dt.tensor([1, 2])
    as_float = dt.empty(2, dtype=dt.float64)
    dt.add(ints, ints, out=as_float)
    np.testing.assert_array_equal(as_float.numpy(), [2.0, 4.0])
    as_half = dt.empty(2, dtype=dt.float16)
    dt.add(ints.float(), 0.5, out=as_half)
    assert as_half.dtype == dt.float16
    with pytest.raises(
        RuntimeError, match="float32 can't be cast to the desired output type int64"
    ):
        dt.add(dt.ones(2), 1, out=dt.empty(2, dtype=dt.int64))
    with pytest.raises(RuntimeError, match="can't be cast to the desired output type bool"):
        dt.add(ints, 1, out=dt.empty(2, dtype=dt.bool))


def test_indices_need_an_out_of_their_exact_dtype():
    x = dt.tensor([[1.0, 3.0], [4.0, 2.0]])
    index = dt.empty((), dtype=dt.int64)
    dt.argmax(x, out=index)
    assert index.item() == 2
    with pytest.raises(RuntimeError, match="expected out tensor to have dtype int64"):
        dt.argmax(x, out=dt.empty(()))
    with pytest.raises(RuntimeError, match="expected out tensor to have dtype int64"):
        dt.max(x, 1, out=(dt.empty(2), dt.empty(2, dtype=dt.int32)))


def test_out_is_refused_when_autograd_would_record():
    leaf = dt.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="don't support automatic differentiation"):
        dt.mul(leaf, 2, out=dt.empty(2))
    with pytest.raises(RuntimeError, match="don't support automatic differentiation"):
        dt.mul(dt.ones(2), 2, out=dt.empty(2, requires_grad=True))
    with dt.no_grad():
        out = dt.mul(leaf, 2, out=dt.empty(2))
    assert not out.requires_grad and out.grad_fn is None
    # an op autograd does not differentiate takes out= even from an input that requires grad
    mask = dt.empty(2, dtype=dt.bool)
    dt.gt(leaf, 0.5, out=mask)
    assert mask.numpy().all()


def test_out_bumps_the_version_counter():
    out = dt.empty(2)
    before = out._version[0]
    dt.add(dt.ones(2), 1, out=out)
    assert out._version[0] > before


def test_creation_functions_make_their_values_in_outs_dtype():
    out = dt.empty(0)
    dt.arange(4, out=out)
    assert out.dtype == dt.float32
    np.testing.assert_array_equal(out.numpy(), [0.0, 1.0, 2.0, 3.0])
    ints = dt.empty(3, dtype=dt.int32)
    dt.ones(3, out=ints)
    assert ints.dtype == dt.int32 and ints.tolist() == [1, 1, 1]


def test_creation_matches_torch(torch):
    ours, theirs = dt.empty(0), torch.empty(0)
    dt.arange(1, 4, out=ours)
    torch.arange(1, 4, out=theirs)
    assert ours.dtype == dt.float32 and ours.tolist() == theirs.tolist()
    ours, theirs = dt.empty(2, dtype=dt.int64), torch.empty(2, dtype=torch.int64)
    dt.full((2,), 7, out=ours)
    torch.full((2,), 7, out=theirs)
    assert ours.tolist() == theirs.tolist()


def test_errors_match_torchs_refusals(torch):
    def refuses(call: Any) -> bool:
        try:
            call()
        except RuntimeError:
            return True
        return False

    for module in (dt, torch):
        x = module.ones(2, 3)
        leaf = module.ones(2, 3, requires_grad=True)
        assert refuses(lambda m=module, x=x: m.add(x, x, out=m.empty(2, 3, dtype=m.int64)))
        assert refuses(lambda m=module, x=x: m.argmax(x, out=m.empty(())))
        assert refuses(lambda m=module, leaf=leaf: m.add(leaf, 1, out=m.empty(2, 3)))
        assert not refuses(lambda m=module, x=x: m.add(x, x, out=m.empty(2, 3, dtype=m.float64)))
        assert not refuses(lambda m=module, leaf=leaf: m.gt(leaf, 0, out=m.empty(2, 3)))


def test_functions_without_out_are_unchanged():
    assert dt.add.__name__ == "add" and dt.add.__doc__
    with pytest.raises(TypeError):
        dt.flatten(dt.ones(2, 2), out=dt.empty(4))


def test_randperm_into_out_and_with_a_dtype():
    out = dt.zeros(5, dtype=dt.int64)
    assert dt.randperm(5, out=out) is out
    assert sorted(out.tolist()) == [0, 1, 2, 3, 4]
    floats = dt.randperm(4, dtype=dt.float32)
    assert floats.dtype == dt.float32 and sorted(floats.tolist()) == [0.0, 1.0, 2.0, 3.0]
