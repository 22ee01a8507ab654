"""The tensor functions and methods added for PyTorch parity: einsum, norm, mm/bmm/outer,
scatter/index_add, flip/roll/diag/..., rounding, the in-place math, new_*, type(), search
and counting ops, creation keywords and the ``axis=`` alias. Values against numpy,
gradients against finite differences; PyTorch comparisons skip without torch."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import dtrain as dt


@pytest.fixture
def torch() -> Any:
    """The ``torch`` module, or a skip when it is not installed."""
    return pytest.importorskip("torch")


# ---- products and norms ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("equation", "shapes"),
    [
        ("bhqd,bhkd->bhqk", [(2, 2, 3, 4), (2, 2, 5, 4)]),
        ("ij,jk", [(2, 3), (3, 4)]),
        ("i,i", [(3,), (3,)]),
        ("ij->", [(2, 3)]),
        ("ij->ji", [(2, 3)]),
        ("bij,bjk->bik", [(1, 2, 3), (4, 3, 2)]),
        ("...ij,...jk", [(1, 2, 3), (4, 3, 2)]),
        ("i,j,k->ijk", [(2,), (3,), (2,)]),
        ("ij,j->i", [(2, 3), (3,)]),
    ],
)
def test_einsum_values_and_gradients(check, equation, shapes):
    arrays = [check.rand(*s, seed=i) for i, s in enumerate(shapes)]
    check.op(lambda *ts: dt.einsum(equation, *ts), lambda *xs: np.einsum(equation, *xs), *arrays)


def test_einsum_list_form_and_errors():
    x = dt.ones(2, 2)
    assert dt.einsum("ij->", [x]).item() == 4.0
    with pytest.raises(NotImplementedError, match="diagonal"):
        dt.einsum("ii->i", x)
    with pytest.raises(ValueError, match="operands"):
        dt.einsum("ij,jk", x)


def test_einsum_matches_torch(torch):
    q, k = np.random.default_rng(0).standard_normal((2, 2, 2, 3, 4))
    ours = dt.einsum("bhqd,bhkd->bhqk", dt.tensor(q), dt.tensor(k))
    theirs = torch.einsum("bhqd,bhkd->bhqk", torch.tensor(q), torch.tensor(k))
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-12)


@pytest.mark.parametrize("p", [2, 1, float("inf"), -float("inf"), 3, 0.5, "fro"])
@pytest.mark.parametrize("dim", [None, 1, (0, 1)])
def test_norm_values_and_gradients(check, p, dim):
    x = check.away(3, 4)
    pnum = 2 if p == "fro" else p

    def reference(a):
        magnitude = np.abs(a)
        if pnum == float("inf"):
            return magnitude.max(axis=dim)
        if pnum == -float("inf"):
            return magnitude.min(axis=dim)
        return (magnitude**pnum).sum(axis=dim) ** (1 / pnum)

    check.op(lambda t: t.norm(p, dim), reference, x)
    check.op(lambda t: dt.norm(t, p, dim, keepdim=True).sum(), lambda a: reference(a).sum(), x)


def test_norm_of_zeros_has_zero_gradient_and_rejects_integers():
    x = dt.zeros(3, requires_grad=True)
    x.norm().backward()
    assert x.grad.tolist() == [0.0, 0.0, 0.0]
    assert dt.tensor([3.0, -4.0]).norm(p=0).item() == 2.0
    with pytest.raises(TypeError, match="floating-point"):
        dt.tensor([3, 4]).norm()
    with pytest.raises(NotImplementedError, match="nuc"):
        dt.ones(2, 2).norm(p="nuc")


def test_norm_matches_torch(torch):
    a = np.random.default_rng(0).standard_normal((3, 4))
    for p in (2, 1, float("inf"), 3):
        for dim in (None, 0, (0, 1)):
            ours = dt.tensor(a, requires_grad=True)
            theirs = torch.tensor(a, requires_grad=True)
            ours.norm(p, dim).sum().backward()
            theirs.norm(p, dim).sum().backward()
            np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-10)


def test_mm_bmm_outer(check):
    a, b = check.rand(2, 3), check.rand(3, 4, seed=1)
    check.op(dt.mm, np.matmul, a, b)
    check.op(lambda x, y: x.bmm(y), np.matmul, check.rand(2, 2, 3), check.rand(2, 3, 2, seed=1))
    check.op(dt.outer, np.outer, check.rand(3), check.rand(2, seed=1))
    with pytest.raises(ValueError, match="2-D"):
        dt.mm(dt.ones(2, 2, 2), dt.ones(2, 2))
    with pytest.raises(ValueError, match="batch"):
        dt.bmm(dt.ones(2, 2, 2), dt.ones(3, 2, 2))
    assert dt.outer(dt.tensor([1, 2]), dt.tensor([1.0, 2.0])).dtype == dt.float32


# ---- scatter and index_add ------------------------------------------------------------------
def test_scatter_values_and_gradients(check):
    index = dt.tensor([[0, 2], [1, 0], [2, 1]])
    x, src = check.rand(3, 3), check.rand(3, 3, seed=1)

    def reference(a, s, add):
        out = a.copy()
        for i in range(3):
            for j in range(2):
                if add:
                    out[i, index[i, j].item()] += s[i, j]
                else:
                    out[i, index[i, j].item()] = s[i, j]
        return out

    check.op(lambda a, s: a.scatter(1, index, s), lambda a, s: reference(a, s, False), x, src)
    check.op(
        lambda a, s: dt.scatter_add(a, 1, index, s), lambda a, s: reference(a, s, True), x, src
    )
    out = dt.zeros(2, 3).scatter(1, dt.tensor([[0], [2]]), 5.0)
    assert out.tolist() == [[5.0, 0.0, 0.0], [0.0, 0.0, 5.0]]


def test_index_add_values_and_gradients(check):
    index = dt.tensor([0, 0, 2])

    def reference(a, s):
        out = a.copy()
        np.add.at(out, (slice(None), [0, 0, 2]), 2 * s)
        return out

    check.op(
        lambda a, s: a.index_add(1, index, s, alpha=2),
        reference,
        check.rand(2, 4),
        check.rand(2, 3, seed=1),
    )


def test_scatter_in_place_forms():
    x = dt.zeros(2, 3)
    same = x.scatter_add_(1, dt.tensor([[0, 0], [2, 2]]), dt.tensor([[1.0, 2.0], [3.0, 4.0]]))
    assert same is x and x.tolist() == [[3.0, 0.0, 0.0], [0.0, 0.0, 7.0]]
    x.scatter_(1, dt.tensor([[1], [1]]), 9.0)
    assert x[:, 1].tolist() == [9.0, 9.0]
    y = dt.zeros(3)
    y.index_add_(0, dt.tensor([0, 0, 2]), dt.tensor([1.0, 2.0, 3.0]))
    assert y.tolist() == [3.0, 0.0, 3.0]


def test_scatter_matches_torch(torch):
    src = np.arange(6.0).reshape(2, 3)
    ours = dt.zeros(2, 4).scatter_add(1, dt.tensor([[0, 3, 0], [1, 1, 2]]), dt.tensor(src))
    theirs = torch.zeros(2, 4, dtype=torch.float64).scatter_add(
        1, torch.tensor([[0, 3, 0], [1, 1, 2]]), torch.tensor(src)
    )
    np.testing.assert_allclose(ours.numpy(), theirs.numpy())


# ---- moving and repeating -----------------------------------------------------------------
def test_reordering_ops_values_and_gradients(check):
    x = check.rand(3, 4)
    check.op(lambda t: t.flip(0, 1), lambda a: a[::-1, ::-1], x)
    check.op(lambda t: t.roll(1), lambda a: np.roll(a, 1), x)
    check.op(lambda t: dt.roll(t, (1, -2), (0, 1)), lambda a: np.roll(a, (1, -2), (0, 1)), x)
    check.op(lambda t: t.narrow(1, -3, 2), lambda a: a[:, 1:3], x)
    check.op(lambda t: t.select(1, -1), lambda a: a[:, -1], x)
    check.op(lambda t: dt.stack(t.unbind(1), 0), lambda a: a.T, x)
    check.op(lambda t: t.diag(1), lambda a: np.diag(a, 1), x)
    check.op(lambda t: t[0].diag(-1), lambda a: np.diag(a[0], -1), x)
    check.op(lambda t: t.repeat_interleave(2, dim=1), lambda a: np.repeat(a, 2, 1), x)
    check.op(
        lambda t: t.repeat_interleave(dt.tensor([1, 0, 2]), dim=0),
        lambda a: np.repeat(a, [1, 0, 2], 0),
        x,
    )
    check.op(lambda t: t.tile((2,)), lambda a: np.tile(a, 2), x)
    check.op(lambda t: dt.broadcast_to(t[0], (2, 4)), lambda a: np.broadcast_to(a[0], (2, 4)), x)
    mask = dt.tensor([True, False, True, True])
    check.op(lambda t: t.masked_select(mask), lambda a: a[:, mask.numpy()].reshape(-1), x)
    assert dt.repeat_interleave(dt.tensor([1, 2])).tolist() == [0, 1, 1]


def test_meshgrid():
    a, b = dt.arange(2), dt.arange(3)
    ij = dt.meshgrid(a, b, indexing="ij")
    xy = dt.meshgrid(a, b, indexing="xy")
    ref_ij, ref_xy = (
        np.meshgrid(np.arange(2), np.arange(3), indexing="ij"),
        np.meshgrid(np.arange(2), np.arange(3), indexing="xy"),
    )
    for ours, ref in zip(ij + xy, ref_ij + ref_xy):
        np.testing.assert_array_equal(ours.numpy(), ref)
    with pytest.warns(UserWarning, match="indexing"):
        dt.meshgrid(a, b)


def test_reordering_matches_torch(torch):
    a = np.arange(12).reshape(3, 4)
    ours, theirs = dt.tensor(a), torch.tensor(a)
    pairs = [
        (ours.flip(0), theirs.flip(0)),
        (ours.roll(2), theirs.roll(2)),
        (ours.roll((1, 1), (0, 1)), theirs.roll((1, 1), (0, 1))),
        (ours.diag(), theirs.diag()),
        (ours.repeat_interleave(2), theirs.repeat_interleave(2)),
        (ours.tile((2,)), theirs.tile((2,))),
        (ours.narrow(0, 1, 2), theirs.narrow(0, 1, 2)),
        (
            dt.meshgrid(ours[0], ours[1], indexing="xy")[1],
            torch.meshgrid(theirs[0], theirs[1], indexing="xy")[1],
        ),
    ]
    for x, y in pairs:
        np.testing.assert_array_equal(x.numpy(), y.numpy())


# ---- rounding, in-place math -----------------------------------------------------------------
def test_rounding_has_zero_gradients(check):
    x = check.away(3, 4) * 3
    for name in ("round", "floor", "ceil", "trunc", "sign"):
        check.op(getattr(dt, name), getattr(np, name), x)
    np.testing.assert_array_equal(dt.round(dt.tensor([0.5, 1.5, 2.5])).numpy(), [0.0, 2.0, 2.0])
    assert dt.round(dt.tensor([1.2345]), decimals=2).item() == pytest.approx(1.23)
    assert dt.floor(dt.tensor([1, 2])).dtype == dt.int64
    check.op(lambda t: t.square(), np.square, x)
    check.op(lambda t: t.clamp_min(0.5).clamp_max(1.5), lambda a: np.clip(a, 0.5, 1.5), x)


def test_lerp_addcmul_addcdiv(check):
    a, b, c = check.rand(3), check.rand(3, seed=1), check.away(3, seed=2)
    check.op(lambda x, y: x.lerp(y, 0.3), lambda x, y: x + 0.3 * (y - x), a, b)
    check.op(lambda x, y, z: x.addcmul(y, z, value=2), lambda x, y, z: x + 2 * y * z, a, b, c)
    check.op(
        lambda x, y, z: dt.addcdiv(x, y, z, value=0.5), lambda x, y, z: x + 0.5 * y / z, a, b, c
    )


def test_in_place_math():
    x = dt.tensor([1.0, 2.0])
    assert x.lerp_(dt.tensor([3.0, 3.0]), 0.5) is x and x.tolist() == [2.0, 2.5]
    x.addcmul_(dt.tensor([1.0, 2.0]), dt.tensor([1.0, 2.0]), value=2)
    assert x.tolist() == [4.0, 10.5]
    x.addcdiv_(dt.tensor([2.0, 1.0]), dt.tensor([2.0, 2.0]))
    assert x.tolist() == [5.0, 11.0]
    x.masked_fill_(dt.tensor([True, False]), float("-inf"))
    assert x.tolist() == [float("-inf"), 11.0]
    y = dt.tensor([0.0, -1.0])
    assert y.exp_().tolist() == pytest.approx([1.0, np.exp(-1.0)])
    assert dt.tensor([0.0]).sigmoid_().item() == 0.5
    assert dt.tensor([-1.0, 2.0]).relu_().tolist() == [0.0, 2.0]
    with pytest.raises(RuntimeError, match="can't be cast"):
        dt.tensor([1, 2]).exp_()


def test_in_place_math_is_recorded_on_graph_tensors():
    w = dt.tensor([1.0, 2.0], requires_grad=True)
    y = w * 1
    y.masked_fill_(dt.tensor([True, False]), 0.0)
    y.exp_()
    y.sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), [0.0, np.exp(2.0)], rtol=1e-6)
    with pytest.raises(RuntimeError, match="leaf"):
        w.exp_()
    with dt.no_grad():
        w.lerp_(dt.tensor([3.0, 3.0]), 0.5)  # an EMA update, as optimizers do it
    assert w.tolist() == [2.0, 2.5]


# ---- new tensors and dtype conversions --------------------------------------------------------
def test_new_factories_take_this_tensors_dtype():
    f, i = dt.tensor([1.0, 2.0]), dt.tensor([1, 2])
    assert f.new_tensor([1, 2]).dtype == dt.float32
    assert i.new_tensor([1.5, 2]).dtype == dt.int64
    assert f.new_zeros(2, 3).shape == (2, 3) and f.new_zeros((2, 3)).dtype == dt.float32
    assert f.new_ones(2, dtype=dt.float64).dtype == dt.float64
    assert f.new_empty(3).shape == (3,)
    assert i.new_full((2,), 3.5).tolist() == [3, 3]


def test_type_and_casts():
    x = dt.ones(2)
    assert x.type() == "dtrain.FloatTensor" and x.long().type() == "dtrain.LongTensor"
    assert x.type(dt.int32).dtype == dt.int32
    assert x.type("torch.DoubleTensor").dtype == dt.float64
    assert ((x > 0).type(dt.float) == 1).all()
    assert dt.tensor([1.5]).byte().dtype == dt.uint8
    assert x.char().dtype == dt.int8 and x.short().dtype == dt.int16
    assert x.nelement() == 2 and x.pin_memory() is x


def test_type_names_match_torch(torch):
    for name in (
        "float16",
        "float32",
        "float64",
        "uint8",
        "int8",
        "int16",
        "int32",
        "int64",
        "bool",
    ):
        ours = dt.ones(1, dtype=name).type()
        theirs = torch.ones(1, dtype=getattr(torch, name)).type()
        assert ours.replace("dtrain.", "torch.") == theirs


# ---- search and counting ------------------------------------------------------------------------
def test_search_and_counting():
    x = dt.tensor([[0, 1], [1, 1]])
    np.testing.assert_array_equal(x.nonzero().numpy(), np.argwhere(x.numpy()))
    assert [t.tolist() for t in x.nonzero(as_tuple=True)] == [[0, 1, 1], [1, 0, 1]]
    assert dt.tensor(5).nonzero().shape == (1, 0)
    values, inverse, counts = dt.unique(
        dt.tensor([3, 1, 2, 1]), return_inverse=True, return_counts=True
    )
    assert values.tolist() == [1, 2, 3] and inverse.tolist() == [2, 0, 1, 0]
    assert counts.tolist() == [2, 1, 1]
    assert dt.bincount(dt.tensor([0, 1, 1]), minlength=4).tolist() == [1, 2, 0, 0]
    weighted = dt.tensor([0, 1, 1]).bincount(dt.tensor([1.0, 2.0, 3.0]))
    assert weighted.tolist() == [1.0, 5.0] and weighted.dtype == dt.float32
    assert dt.argsort(dt.tensor([3, 1, 2]), descending=True).tolist() == [0, 2, 1]
    assert dt.isclose(dt.tensor([1.0, 2.0]), dt.tensor([1.0, 2.1])).tolist() == [True, False]
    assert dt.any(dt.tensor([[1, 0], [0, 0]]), dim=1).tolist() == [True, False]
    assert not dt.all(dt.tensor([[1, 0], [0, 0]]), dim=(0, 1)).item()
    assert dt.tensor([1.0, float("inf")]).isinf().tolist() == [False, True]
    assert dt.tensor([1.0, float("nan")]).isfinite().tolist() == [True, False]


def test_search_matches_torch(torch):
    a = np.array([3, 1, 2, 1, 3, 3])
    for ours, theirs in zip(
        dt.unique(dt.tensor(a), return_inverse=True, return_counts=True),
        torch.unique(torch.tensor(a), return_inverse=True, return_counts=True),
    ):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    np.testing.assert_array_equal(
        dt.tensor(a).bincount().numpy(), torch.tensor(a).bincount().numpy()
    )
    np.testing.assert_array_equal(dt.tensor(a).nonzero().numpy(), torch.tensor(a).nonzero().numpy())


# ---- creation keywords and the axis alias ------------------------------------------------
def test_creation_keywords_and_aliases():
    assert dt.zeros(size=(2, 3)).shape == (2, 3)
    assert dt.ones(size=[2]).shape == (2,)
    assert dt.empty(size=(2,)).shape == (2,)
    assert dt.rand(size=(2,)).shape == (2,) and dt.randn(size=(1, 2)).shape == (1, 2)
    with pytest.raises(TypeError, match="not both"):
        dt.zeros(2, size=(2,))
    r = dt.randint_like(dt.zeros(50), 3, 5)
    assert r.dtype == dt.float32 and set(r.tolist()) <= {3.0, 4.0}
    assert dt.concat is dt.cat
    x = dt.arange(6.0).reshape(2, 3)
    assert x.sum(axis=1).tolist() == [3.0, 12.0]
    assert dt.mean(x, axis=0).tolist() == [1.5, 2.5, 3.5]
    assert x.max(axis=1).values.tolist() == [2.0, 5.0]
    assert dt.min(x, axis=0).indices.tolist() == [0, 0, 0]
    assert x.argmax(axis=1).tolist() == [2, 2]
    with pytest.raises(TypeError, match="not both"):
        x.sum(0, axis=1)


def test_review_fixes_index_norm_einsum_remainder_bincount():
    # index_select refuses a uint8 index (it would read as a mask), as PyTorch does
    with pytest.raises(ValueError, match="int64 or int32"):
        dt.index_select(dt.arange(3), 0, dt.tensor([2, 0, 1], dtype=dt.uint8))
    # a zero element's gradient is 0 for every p (|x| ** (p - 2) is inf there)
    for p in (1.5, 0.5, -1.0):
        x = dt.tensor([3.0, 0.0, 4.0], dtype=dt.float64, requires_grad=True)
        dt.norm(x, p=p).backward()
        assert np.isfinite(x.grad.numpy()).all() and x.grad.numpy()[1] == 0
    # float16 squares summed in float32
    assert dt.norm(dt.tensor([300.0, 400.0], dtype=dt.float16)).item() == 500
    # a 0-d operand's gradient stays 0-d
    s = dt.tensor(2.0, requires_grad=True)
    dt.einsum(",i->i", s, dt.tensor([1.0, 2.0])).sum().backward()
    assert s.grad.shape == () and s.grad.item() == 3.0
    # the divisor's gradient of a % b uses a // b (9 for 1.0 // 0.1, not floor(10.000...))
    b = dt.tensor(0.1, dtype=dt.float64, requires_grad=True)
    (dt.tensor(1.0, dtype=dt.float64) % b).backward()
    assert b.grad.item() == -9.0
    # float32 weights give float32 counts
    weights = dt.ones(3)
    assert dt.bincount(dt.tensor([0, 1, 1]), weights=weights).dtype == dt.float32
    assert dt.bincount(dt.tensor([0, 1, 1]), weights=weights.double()).dtype == dt.float64


def test_einsum_of_large_operands_takes_the_planned_path_with_the_same_results():
    rng = np.random.default_rng(4)
    q_host, k_host = (rng.standard_normal((2, 4, 32, 64)) for _ in range(2))  # > 4096 each
    q = dt.tensor(q_host, requires_grad=True)
    k = dt.tensor(k_host, requires_grad=True)
    scores = dt.einsum("bhqd,bhkd->bhqk", q, k)
    np.testing.assert_allclose(scores.detach().numpy(), q_host @ np.swapaxes(k_host, -1, -2))
    scores.sum().backward()
    ones = np.ones((2, 4, 32, 32))
    np.testing.assert_allclose(q.grad.numpy(), ones @ k_host)
    np.testing.assert_allclose(k.grad.numpy(), np.swapaxes(ones, -1, -2) @ q_host)
