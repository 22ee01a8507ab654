"""Shape ops, joining and splitting, selection by index, sorting, and x[key] / x[key] = v."""

from __future__ import annotations

import numpy as np
import pytest

import dtrain as dt

# ---- reshape, view, flatten ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "target"),
    [
        ((2, 3, 4), (6, 4)),
        ((2, 3, 4), (-1,)),
        ((2, 3, 4), (4, -1, 2)),
        ((6,), (1, 6, 1)),
        ((), (1,)),
    ],
)
def test_reshape_and_view(check, shape, target):
    x = check.rand(*shape, seed=1)
    check.op(lambda t: t.reshape(*target), lambda a: a.reshape(target), x)
    check.op(lambda t: t.reshape(target), lambda a: a.reshape(target), x, grad=False)
    check.op(lambda t: t.view(target), lambda a: a.reshape(target), x)
    check.op(lambda t: dt.reshape(t, target), lambda a: a.reshape(target), x, grad=False)


def test_view_shares_memory_and_version():
    x = dt.zeros(2, 3)
    v = x.view(6)
    with dt.no_grad():
        x[0, 1] = 7.0
    assert v.tolist()[1] == 7.0
    y = dt.ones(2)
    assert x.view_as(dt.ones(3, 2)).shape == (3, 2)
    assert y.reshape_as(dt.ones(1, 2)).shape == (1, 2)


@pytest.mark.parametrize("target", [(4, 2), (5,), (-1, 4), (0, -1), (-1, -1)])
def test_reshape_to_an_impossible_shape_names_it(target):
    with pytest.raises(RuntimeError) as info:
        dt.ones(2, 3).reshape(*target)
    assert str(list(target)) in str(info.value)
    assert "(2, 3)" in str(info.value)


@pytest.mark.parametrize(("start", "end"), [(0, -1), (1, 2), (0, 1), (-2, -1), (1, 1)])
def test_flatten(check, start, end):
    x = check.rand(2, 3, 2, seed=2)
    shape = x.shape[: start % 3] + (-1,) + x.shape[end % 3 + 1 :]
    check.op(lambda t: t.flatten(start, end), lambda a: a.reshape(shape), x)
    check.op(lambda t: dt.flatten(t, start, end), lambda a: a.reshape(shape), x, grad=False)


def test_flatten_of_a_scalar_and_bad_range():
    assert dt.tensor(3.0).flatten().shape == (1,)
    with pytest.raises(ValueError, match="start_dim"):
        dt.ones(2, 3, 4).flatten(2, 1)
    with pytest.raises(IndexError, match=r"\[-3, 2\]"):
        dt.ones(2, 3, 4).flatten(0, 3)


# ---- transpose, permute, squeeze, unsqueeze, expand, repeat -------------------------------


@pytest.mark.parametrize(("d0", "d1"), [(0, 1), (0, 2), (-1, -2), (1, 1)])
def test_transpose(check, d0, d1):
    check.op(
        lambda t: t.transpose(d0, d1),
        lambda a: np.swapaxes(a, d0, d1),
        check.rand(2, 3, 4, seed=3),
    )


@pytest.mark.parametrize("dims", [(0, 1, 2), (2, 0, 1), (1, 2, 0), (-1, 0, 1)])
def test_permute(check, dims):
    x = check.rand(2, 3, 4, seed=4)
    check.op(lambda t: t.permute(*dims), lambda a: np.transpose(a, dims), x)
    check.op(lambda t: dt.permute(t, dims), lambda a: np.transpose(a, dims), x, grad=False)


def test_t_T_mT(check):  # noqa: N802 - PyTorch's names
    x = check.rand(2, 3, 4, seed=5)
    check.op(lambda t: t.T, lambda a: a.transpose(2, 1, 0), x)
    check.op(lambda t: t.mT, lambda a: a.swapaxes(-1, -2), x)
    check.op(lambda t: t.t(), lambda a: a.T, x[0])
    with pytest.raises(ValueError, match="transpose"):
        dt.tensor(x).t()


def test_transpose_of_a_zero_dim_tensor(check):
    check.op(lambda t: t.transpose(0, -1), lambda a: a, np.array(1.5))
    check.op(lambda t: t.T, lambda a: a, np.array(1.5))


@pytest.mark.parametrize(
    "fn",
    [
        lambda t: t.transpose(0, 2),
        lambda t: t.permute(0, 2),
        lambda t: t.squeeze(2),
        lambda t: dt.cat([t, t], 2),
        lambda t: t.split(1, 2),
        lambda t: t.chunk(2, -3),
        lambda t: t.gather(2, dt.zeros(2, 3, dtype=dt.int64)),
        lambda t: t.index_select(-3, dt.tensor([0])),
        lambda t: t.sort(2),
        lambda t: t.topk(1, 2),
        lambda t: t.flatten(2),
        lambda t: t[0].unsqueeze(2),
    ],
)
def test_dim_out_of_range_names_the_valid_range(fn):
    with pytest.raises(IndexError, match=r"\[-2, 1\]"):
        fn(dt.ones(2, 3))


def test_stack_dim_range_counts_the_new_dim():
    with pytest.raises(IndexError, match=r"\[-3, 2\]"):
        dt.stack([dt.ones(2, 3), dt.ones(2, 3)], 3)


def test_permute_must_name_each_dim_once():
    with pytest.raises(ValueError, match="exactly once"):
        dt.ones(2, 3, 4).permute(0, 0, 1)
    with pytest.raises(ValueError, match="exactly once"):
        dt.ones(2, 3, 4).permute(0, 1)


@pytest.mark.parametrize(
    ("dim", "expected"),
    [(None, (3, 4)), (0, (3, 1, 4)), (2, (1, 3, 4)), (-4, (3, 1, 4)), ((0, 2), (3, 4)), (1, None)],
)
def test_squeeze(check, dim, expected):
    x = check.rand(1, 3, 1, 4, seed=6)
    expected = x.shape if expected is None else expected
    check.op(lambda t: t.squeeze(dim), lambda a: a.reshape(expected), x)


@pytest.mark.parametrize("dim", [0, 1, 2, -1, -3])
def test_unsqueeze(check, dim):
    x = check.rand(2, 3, seed=7)
    check.op(lambda t: t.unsqueeze(dim), lambda a: np.expand_dims(a, dim), x)


def test_unsqueeze_out_of_range_names_the_valid_range():
    with pytest.raises(IndexError, match=r"\[-3, 2\]"):
        dt.ones(2, 3).unsqueeze(3)


@pytest.mark.parametrize(
    ("shape", "sizes"),
    [((3, 1), (3, 4)), ((3, 1), (2, 3, 4)), ((1,), (2, 5)), ((3, 1), (-1, 4)), ((), (2, 2))],
)
def test_expand(check, shape, sizes):
    x = check.rand(*shape, seed=8)
    target = tuple(
        s if s != -1 else x.shape[i - (len(sizes) - x.ndim)] for i, s in enumerate(sizes)
    )
    check.op(lambda t: t.expand(*sizes), lambda a: np.broadcast_to(a, target), x)
    check.op(lambda t: t.expand_as(dt.ones(*target)), lambda a: np.broadcast_to(a, target), x)


def test_expand_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"\(3, 2\)"):
        dt.ones(3, 2).expand(3, 4)
    with pytest.raises(ValueError, match="fewer dims"):
        dt.ones(3, 2).expand(6)
    with pytest.raises(ValueError, match="leading"):
        dt.ones(3).expand(-1, 3)


@pytest.mark.parametrize(
    ("shape", "repeats"), [((2, 3), (2, 1)), ((2, 3), (1, 2, 2)), ((3,), (2,))]
)
def test_repeat(check, shape, repeats):
    x = check.rand(*shape, seed=9)
    check.op(lambda t: t.repeat(*repeats), lambda a: np.tile(a, repeats), x)
    check.op(lambda t: dt.repeat(t, repeats), lambda a: np.tile(a, repeats), x, grad=False)


def test_repeat_needs_an_entry_per_dim():
    with pytest.raises(ValueError, match="fewer entries"):
        dt.ones(2, 3).repeat(2)


# ---- cat, stack, split, chunk --------------------------------------------------------------


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_cat(check, dim):
    shapes = {0: [(1, 3), (2, 3), (3, 3)], 1: [(2, 1), (2, 2), (2, 3)], -1: [(2, 1), (2, 2)]}[dim]
    arrays = [check.rand(*s, seed=i) for i, s in enumerate(shapes)]
    check.op(lambda *ts: dt.cat(ts, dim), lambda *a: np.concatenate(a, axis=dim), *arrays)


def test_cat_with_inputs_that_do_not_need_grad(check):
    fixed = dt.tensor(check.rand(2, 2, seed=10), device=check.device)
    check.grad(lambda t: dt.cat([fixed, t, fixed], dim=1), check.rand(2, 3, seed=11))


def test_cat_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"\(2, 4\).*\(2, 3\)"):
        dt.cat([dt.ones(2, 3), dt.ones(2, 4)], dim=0)
    with pytest.raises(ValueError, match="non-empty"):
        dt.cat([])
    with pytest.raises(TypeError, match="element 1"):
        dt.cat([dt.ones(2), [1.0]])


@pytest.mark.parametrize("join", [dt.cat, dt.stack])
def test_join_promotes_like_pytorch(join):
    assert join([dt.tensor([1]), dt.tensor([1.0])]).dtype == dt.float32
    assert join([dt.tensor([1], dtype=dt.int32), dt.tensor([1])]).dtype == dt.int64
    assert join([dt.tensor([1.0]), dt.tensor([1.0], dtype=dt.float64)]).dtype == dt.float64


@pytest.mark.parametrize("dim", [0, 1, 2, -1])
def test_stack(check, dim):
    arrays = [check.rand(2, 3, seed=i) for i in range(3)]
    check.op(lambda *ts: dt.stack(ts, dim), lambda *a: np.stack(a, axis=dim), *arrays)


def test_stack_needs_equal_shapes():
    with pytest.raises(ValueError, match=r"\(3, 2\).*\(2, 3\)"):
        dt.stack([dt.ones(2, 3), dt.ones(3, 2)])


@pytest.mark.parametrize(
    ("size", "dim", "expected"),
    [(2, 0, [2, 2, 1]), (3, 0, [3, 2]), ([1, 4], 0, [1, 4]), (1, 1, [1, 1]), ([2, 0], -1, [2, 0])],
)
def test_split(check, size, dim, expected):
    x = check.rand(5, 2, seed=12)
    pieces = dt.tensor(x).split(size, dim)
    assert [p.shape[dim] for p in pieces] == expected
    bounds = np.cumsum(expected)[:-1]
    for piece, ref in zip(pieces, np.split(x, bounds, axis=dim)):
        check.close(piece, ref)
    # Each piece's gradient lands in its own slice; weights tell the pieces apart.
    check.grad(lambda t: sum((i + 1) * p.sum() for i, p in enumerate(t.split(size, dim))), x)


def test_split_sections_must_add_up():
    with pytest.raises(ValueError, match="add up to 4"):
        dt.ones(5).split([1, 3])
    with pytest.raises(ValueError, match="positive"):
        dt.ones(5).split(0)


@pytest.mark.parametrize(
    ("length", "chunks", "expected"),
    [(6, 3, [2, 2, 2]), (5, 2, [3, 2]), (5, 4, [2, 2, 1]), (2, 5, [1, 1])],
)
def test_chunk(check, length, chunks, expected):
    x = check.rand(2, length, seed=13)
    pieces = dt.chunk(dt.tensor(x), chunks, dim=-1)
    assert [p.shape[1] for p in pieces] == expected
    check.close(dt.cat(pieces, dim=1), x)
    check.grad(lambda t: sum((i + 1) * p.sum() for i, p in enumerate(t.chunk(chunks, 1))), x)


# ---- tril, triu ----------------------------------------------------------------------------


@pytest.mark.parametrize("diagonal", [0, 1, -1, 5])
@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 3)])
@pytest.mark.parametrize("name", ["tril", "triu"])
def test_tril_triu(check, name, shape, diagonal):
    reference = getattr(np, name)
    x = check.rand(*shape, seed=14)
    check.op(lambda t: getattr(t, name)(diagonal), lambda a: reference(a, diagonal), x)
    check.op(lambda t: getattr(dt, name)(t, diagonal=diagonal), lambda a: reference(a, diagonal), x)


@pytest.mark.parametrize("name", ["tril", "triu"])
def test_tril_triu_need_a_matrix(name):
    with pytest.raises(ValueError, match="2 dim"):
        getattr(dt.ones(3), name)()


# ---- gather, index_select, sort, topk ------------------------------------------------------


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_gather(check, dim):
    x = check.rand(3, 4, seed=15)
    index = np.array([[0, 2, 2], [1, 0, 0]])  # repeated: gradients must accumulate

    def reference(a):
        # PyTorch's gather reads only the leading part of the other dims; numpy wants equal.
        part = tuple(slice(None) if d == dim % 2 else slice(n) for d, n in enumerate(index.shape))
        return np.take_along_axis(a[part], index, axis=dim)

    on_device = dt.tensor(index, device=check.device)
    check.op(lambda t: t.gather(dim, on_device), reference, x)
    t = check.leaf(x)
    dt.gather(t, 1, on_device).sum().backward()
    assert t.grad.cpu().numpy()[0].tolist() == [1.0, 0.0, 2.0, 0.0]


def test_gather_checks_its_index():
    with pytest.raises(ValueError, match="integer tensor with 2 dims"):
        dt.ones(2, 3).gather(1, dt.tensor([0, 1]))
    with pytest.raises(ValueError, match="exceeds"):
        dt.ones(2, 3).gather(1, dt.zeros(3, 1, dtype=dt.int64))


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_index_select(check, dim):
    x = check.rand(3, 4, seed=16)
    index = np.array([2, 0, 2])
    on_device = dt.tensor(index, device=check.device)
    check.op(lambda t: t.index_select(dim, on_device), lambda a: np.take(a, index, axis=dim), x)
    t = check.leaf(x)
    dt.index_select(t, 0, on_device).sum().backward()
    assert t.grad.cpu().numpy()[:, 0].tolist() == [1.0, 0.0, 2.0]


def test_index_select_needs_a_1d_integer_index():
    with pytest.raises(ValueError, match="1-D int64 or int32"):
        dt.ones(3, 4).index_select(0, dt.tensor([[0]]))


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_sort(check, dim, descending):
    x = check.rand(3, 4, seed=17)
    values, indices = dt.tensor(x).sort(dim, descending=descending)
    order = np.argsort(-x if descending else x, axis=dim)
    check.close(indices, order)
    check.close(values, np.take_along_axis(x, order, axis=dim))
    check.grad(lambda t: dt.sort(t, dim, descending).values, x)


@pytest.mark.parametrize("descending", [False, True])
def test_sort_is_stable(descending):
    x = dt.tensor([2.0, 1.0, 2.0, 1.0, 3.0])
    indices = x.sort(descending=descending, stable=True).indices.tolist()
    assert indices == ([4, 0, 2, 1, 3] if descending else [1, 3, 0, 2, 4])


@pytest.mark.parametrize("dtype", [dt.uint8, dt.int64, dt.bool, dt.float32])
def test_sort_descending_any_dtype(dtype):
    data = np.array([0, 3, 1, 0, 2]).astype(dtype) if dtype != dt.bool else [0, 1, 1, 0, 1]
    x = dt.tensor(np.asarray(data, dtype=dtype))
    values, indices = x.sort(descending=True, stable=True)
    expected = np.argsort(-np.asarray(data, dtype=np.int64), kind="stable")
    assert indices.tolist() == expected.tolist()
    assert values.dtype == dtype


def test_sort_descending_handles_the_most_negative_integer():
    low = np.iinfo(np.int64).min
    x = dt.tensor(np.array([low, 0, 5], dtype=np.int64))
    assert x.sort(descending=True).values.tolist() == [5, 0, low]


@pytest.mark.parametrize("largest", [True, False])
@pytest.mark.parametrize(("k", "dim"), [(2, -1), (1, 0), (4, 1), (0, 1)])
def test_topk(check, k, dim, largest):
    x = check.rand(3, 4, seed=18)
    values, indices = dt.tensor(x).topk(k, dim=dim, largest=largest)
    order = np.take(np.argsort(-x if largest else x, axis=dim), np.arange(k), axis=dim)
    check.close(indices, order)
    check.close(values, np.take_along_axis(x, order, axis=dim))
    if k:
        check.grad(lambda t: dt.topk(t, k, dim, largest).values, x)


def test_topk_k_out_of_range():
    with pytest.raises(ValueError, match="k=5"):
        dt.ones(3, 4).topk(5)


def test_sort_and_topk_of_a_zero_dim_tensor():
    values, indices = dt.tensor(2.0).sort()
    assert values.shape == () and indices.item() == 0
    values, indices = dt.tensor(2.0).topk(1)
    assert values.item() == 2.0 and indices.shape == ()


# ---- indexing -----------------------------------------------------------------------------

INDEX_KEYS = {
    "int": 1,
    "negative int": -1,
    "two ints": (1, -2),
    "slice": slice(0, 2),
    "step slice": (slice(None), slice(None, None, 2)),
    "negative step": (slice(None, None, -1), 0),
    "None": (None, 0),
    "Ellipsis": (Ellipsis, 1),
    "Ellipsis None": (0, Ellipsis, None),
    "mixed": (slice(1, 3), None, -1, Ellipsis),
    "bool mask full": "mask_full",
    "bool mask rows": "mask_rows",
    "int list": [0, 2],
    "int list repeated": [2, 0, 2, 2],
    "int array 2-D": "array_2d",
    "int tensor": "tensor_index",
    "two int arrays": ([0, 2, 2], [1, 1, 3]),
    "int array and slice": (slice(None), [3, 0, 3]),
    "int array after None": (None, [1, 1]),
    "mask and int array": ("mask_rows", [0, 0]),
    "0-d int tensor": "scalar_tensor",
    "numpy int": "numpy_int",
}

_X = np.random.default_rng(19).uniform(-2, 2, size=(3, 4))


def _key(name):
    special = {
        "mask_full": _X > 0,
        "mask_rows": np.array([True, False, True]),
        "array_2d": np.array([[0, 1], [1, 1]]),
        "tensor_index": dt.tensor([1, 1, 0]),
        "scalar_tensor": dt.tensor(2),
        "numpy_int": np.int64(2),
    }
    key = INDEX_KEYS[name]
    parts = key if isinstance(key, tuple) else (key,)
    converted = []
    for part in parts:
        if isinstance(part, str):
            part = special[part]
            if isinstance(part, np.ndarray) and part.dtype == bool:
                part = dt.tensor(part)  # masks as bool tensors, the common form
        converted.append(part)
    return tuple(converted) if isinstance(key, tuple) else converted[0]


def _numpy_key(key):
    if isinstance(key, tuple):
        return tuple(_numpy_key(k) for k in key)
    return key.numpy() if isinstance(key, dt.Tensor) else key


@pytest.mark.parametrize("name", sorted(INDEX_KEYS))
def test_getitem(check, name):
    key = _key(name)
    check.op(lambda t: t[key], lambda a: a[_numpy_key(key)], _X)


def test_repeated_indices_accumulate_gradient():
    x = dt.tensor([1.0, 2.0, 3.0], requires_grad=True)
    x[[0, 0, 2, 0]].sum().backward()
    assert x.grad.tolist() == [3.0, 0.0, 1.0]
    y = dt.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    y[dt.tensor([1, 1]), dt.tensor([0, 0])].sum().backward()
    assert y.grad.tolist() == [[0.0, 0.0], [2.0, 0.0]]


def test_basic_indexing_is_a_view():
    x = dt.zeros(3, 4)
    row = x[1]
    with dt.no_grad():
        x[1, 2] = 5.0
    assert row.tolist() == [0.0, 0.0, 5.0, 0.0]


def test_index_out_of_range_names_the_shape():
    with pytest.raises(IndexError, match=r"\(3, 4\)"):
        dt.ones(3, 4)[3]
    with pytest.raises(IndexError, match=r"\(3, 4\)"):
        dt.ones(3, 4)[:, [0, 4]]
    with pytest.raises(IndexError, match="float"):
        dt.ones(3)[1.5]


def test_iteration_and_len(check):
    x = check.rand(3, 2, seed=20)
    assert len(dt.tensor(x)) == 3
    check.grad(lambda t: dt.stack(list(t))[[2, 0]], x)


# ---- x[key] = value ------------------------------------------------------------------------


def test_setitem_without_autograd():
    x = dt.zeros(3, 4)
    version = x._version[0]
    x[0] = 5.0
    x[1, ::2] = dt.tensor([1.0, 2.0])
    x[x > 4] = -1.0
    x[..., 3] = dt.tensor([7.0, 8.0, 9.0])
    x[[2, 2], [0, 1]] = 3.0
    expected = np.zeros((3, 4))
    expected[0] = 5.0
    expected[1, ::2] = [1.0, 2.0]
    expected[expected > 4] = -1.0
    expected[..., 3] = [7.0, 8.0, 9.0]
    expected[[2, 2], [0, 1]] = 3.0
    np.testing.assert_array_equal(x.numpy(), expected)
    assert x._version[0] > version


def test_setitem_on_a_non_leaf_records_it():
    x = dt.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)
    y = x * 1
    y[0] = 5.0
    assert y.tolist() == [[5.0, 5.0, 5.0], [4.0, 5.0, 6.0]]
    y.sum().backward()
    assert x.grad.tolist() == [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]


def test_setitem_gradient_reaches_the_value(check):
    def fn(x, v):
        y = x * 2
        y[:, 1:3] = v * 3
        y[dt.tensor([True, False]), 0] = v[0, 0]
        return y

    def reference(x, v):
        y = x * 2
        y[:, 1:3] = v * 3
        y[np.array([True, False]), 0] = v[0, 0]
        return y

    check.op(fn, reference, check.rand(2, 4, seed=21), check.rand(1, 2, seed=22))


def test_setitem_value_with_extra_leading_dims(check):
    # numpy lets a (1, 3) value fill a (3,) slot; the value's gradient keeps its shape.
    def fn(x, v):
        y = x + 0
        y[1] = v
        return y

    def reference(x, v):
        y = x.copy()
        y[1] = v
        return y

    check.op(fn, reference, check.rand(2, 3, seed=23), check.rand(1, 3, seed=24))


def test_setitem_into_a_plain_tensor_from_a_tensor_that_requires_grad():
    v = dt.tensor([2.0, 3.0], requires_grad=True)
    y = dt.zeros(3, 2)
    y[1] = v
    assert y.requires_grad
    (y * dt.tensor([[1.0], [2.0], [4.0]])).sum().backward()
    assert v.grad.tolist() == [2.0, 2.0]


def test_setitem_dtype_cast_keeps_the_gradient():
    v = dt.tensor([2.0, 3.0], dtype=dt.float64, requires_grad=True)
    y = dt.zeros(2)
    y[:] = v
    assert y.dtype == dt.float32
    y.sum().backward()
    assert v.grad.tolist() == [1.0, 1.0] and v.grad.dtype == dt.float64


def test_setitem_on_a_leaf_that_requires_grad():
    x = dt.ones(2, 3, requires_grad=True)
    with pytest.raises(RuntimeError, match="no_grad"):
        x[0] = 0.0
    with dt.no_grad():
        x[0] = 0.0
    assert x.tolist() == [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]
    assert x.is_leaf and x.requires_grad


def test_setitem_after_use_is_caught_by_backward():
    x = dt.tensor([1.0, 2.0], requires_grad=True)
    y = x * 1
    z = y * y  # saves y
    y[0] = 3.0
    with pytest.raises(RuntimeError, match="in-place"):
        z.sum().backward()


def test_setitem_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(3,\).*\(2, 4\)"):
        dt.zeros(2, 4)[0] = dt.ones(3)


# ---- in place through views -----------------------------------------------------------------


def test_integer_index_is_a_view_for_in_place_ops():
    # numpy returns a scalar copy for x[i] of a 1-D array; the tensor must stay a view.
    x = dt.zeros(3)
    x[0].add_(1.0)
    x[1].fill_(5.0)
    m = dt.zeros(2, 2)
    m[0, 1].mul_(0.0).add_(2.0)
    m[1][0].copy_(dt.tensor(3.0))
    assert x.tolist() == [1.0, 5.0, 0.0]
    assert m.tolist() == [[0.0, 2.0], [3.0, 0.0]]


def test_in_place_on_an_expanded_view_says_to_clone():
    with pytest.raises(RuntimeError, match="clone"):
        dt.ones(3).expand(2, 3).add_(1.0)


def test_copy_from_an_array_while_recording():
    x = dt.ones(3, requires_grad=True)
    y = x * 1
    y.copy_(np.array([1.0, 2.0, 3.0]))
    assert y.tolist() == [1.0, 2.0, 3.0]
    z = x * 1
    z.copy_(dt.tensor([2.0, 2.0, 2.0], requires_grad=True) * x)
    z.sum().backward()
    assert x.grad.tolist() == [2.0, 2.0, 2.0]


def test_a_python_bool_index_is_a_one_dim_mask_with_a_gradient():
    x = dt.tensor([1.0, 2.0, 3.0], requires_grad=True)
    picked = x[True]
    assert picked.shape == (1, 3) and x[False].shape == (0, 3)
    (picked * 2).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 2.0, 2.0])
    x = dt.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    part = x[None, True, 0, 1:]
    assert part.shape == (1, 1, 2)
    (part * 2).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0.0, 2.0, 2.0]])


def test_setitem_into_an_integer_tensor_leaves_the_graph():
    t = dt.zeros(3, dtype=dt.int64)
    t[0:1] = dt.tensor([2.7], requires_grad=True)
    assert t.tolist() == [2, 0, 0] and not t.requires_grad and t.is_leaf
