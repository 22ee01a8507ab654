"""Every kernel wrapper's launches, checked on the CPU against the kernels' CUDA C signatures
(``kernel_signatures.check_launch``): arguments in the declared order and of the declared C
types, for every storage dtype; and how many launches each wrapper makes, since on a small
model each launch is host time. Nothing runs on a GPU here: the kernels themselves are
checked against their numpy references on one (tests marked ``gpu``)."""

from __future__ import annotations

import numpy as np
import pytest
from kernel_signatures import KERNEL_MODULES, FakeCupy, check_launch, fake

from dtrain.runtime import backend
from dtrain.runtime import kernels as K
from dtrain.runtime.kernels import adam, build, softmax

DTYPES = [np.float32, np.float64, np.float16]


@pytest.fixture
def launches(monkeypatch):
    """Record (expression, grid, block) of every launch, after checking its arguments."""
    recorded = []
    monkeypatch.setattr(backend, "_cupy", FakeCupy)
    monkeypatch.setattr(build, "_done_counters", {})  # device state: not kept from fakes
    for module in KERNEL_MODULES:
        monkeypatch.setattr(module, "kernel", lambda source, expression: (source, expression))

        def launch(fn, grid, block, args):
            source, expression = fn
            check_launch(source.code, expression, args)
            assert all(g >= 1 for g in grid) and 1 <= block <= 1024, (expression, grid, block)
            recorded.append(expression)

        monkeypatch.setattr(module, "launch", launch)
    monkeypatch.setattr(build, "kernel", lambda *a: pytest.fail("build.kernel reached"))
    return recorded


def _rand(shape, dtype, seed=0):
    return fake(np.random.default_rng(seed).standard_normal(shape).astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_row_kernels(launches, dtype):
    x, w, b = _rand((5, 7), dtype), _rand(7, dtype, 1), _rand(7, dtype, 2)
    _, stats = K.layer_norm_forward(x, w, b, 1e-5)
    assert launches == [f"layer_norm_forward<{build.type_name(dtype)}>"]
    grads = K.layer_norm_backward(_rand((5, 7), dtype, 3), x, w, stats)
    assert [g.dtype for g in grads] == [dtype] * 3
    assert len(launches) == 2  # backward: rows and column partials, and their sum, in one
    K.layer_norm_forward(x, None, None, 1e-5)

    target = fake(np.array([0, 3, 6, -100, 2]))
    _, lse = K.cross_entropy_forward(x, target, -100)
    K.cross_entropy_backward(x, target, lse, fake(np.ones((), lse.dtype)), -100)
    K.cross_entropy_backward(x, target, lse, fake(np.ones(5, lse.dtype)), -100)
    loss, count = K.cross_entropy_mean(K.cross_entropy_forward(x, target, -100)[0], target, -100)
    assert loss.dtype == dtype and count.dtype == lse.dtype
    K.cross_entropy_backward(x, target, lse, fake(np.ones((), dtype)), -100, count)
    before = len(launches)
    *_, mean, count = K.cross_entropy_forward(x, target, -100, mean=True)  # one launch
    assert launches[before:] == [f"cross_entropy_forward<{build.type_name(dtype)}>"]
    assert mean.dtype == dtype and count.dtype == lse.dtype
    launches[before:] = []

    for approximate in ("none", "tanh"):
        for bias in (None, b):
            K.gelu_forward(x, approximate, bias)
            K.gelu_backward(_rand((5, 7), dtype, 4), x, approximate, bias)

    for causal in (0, 5):
        y = K.scaled_softmax_forward(x, 0.5, causal)
        K.scaled_softmax_backward(_rand((5, 7), dtype, 5), y, 0.5)
    K.relu_backward(_rand((5, 7), dtype, 6), x)
    table = K.embedding_backward(_rand((2, 3, 7), dtype, 7), fake(np.arange(6) % 4), 4)
    K.embedding_backward(_rand((6, 7), dtype, 8), fake(np.arange(6) % 4), 4, 1, addend=table)
    assert launches[-2:] == [f"embedding_backward<{build.type_name(dtype)}>"] * 2
    launches[-2:] = []
    assert len(launches) == 2 + 1 + 3 + 3 + 8 + 4 + 1

    # attention on (batch, heads, length, dim) views of (batch, length, heads, dim) arrays
    q, k, v, g = (_rand((2, n, 3, d), dtype, 7 + i).transpose(0, 2, 1, 3)
                  for i, (n, d) in enumerate(((5, 4), (6, 4), (6, 2), (5, 2))))  # fmt: skip
    for causal in (False, True):
        out, saved = K.attention_forward(q, k, v, 0.5, causal)
        assert out.shape == (2, 3, 5, 2) and out.dtype == dtype
        grads = K.attention_backward(g, q, k, v, saved, 0.5, causal)
        assert [t.shape for t in grads] == [q.shape, k.shape, v.shape]
    assert len(launches) == 2 + 1 + 3 + 3 + 8 + 4 + 1 + 2 * 3


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_multi_tensor_kernels(launches, dtype):
    shapes = [(3, 4), (17,), (2, 2, 2)] * 20  # 60 tensors: two launches of up to 48
    like = lambda seed: [_rand(s, dtype, seed + i) for i, s in enumerate(shapes)]
    params, grads, m, v, v_max = like(0), like(100), like(200), like(300), like(400)
    options = dict(lr=0.1, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.1, maximize=False)
    K.adam_multi_tensor(params, grads, m, v, v_max, step=3, amsgrad=True,
                        decoupled_weight_decay=True, **options)  # fmt: skip
    steps = [fake(np.zeros((), np.float32)) for _ in shapes]
    K.adam_multi_tensor(params, grads, m, v, None, steps=steps, amsgrad=False,
                        decoupled_weight_decay=False, **options)  # fmt: skip
    name = build.type_name(dtype)
    assert (
        launches
        == [f"adam_multi_tensor<{name}>"] * 2
        + ["adam_increment_steps", f"adam_multi_tensor<{name}>"] * 2
    )

    sgd_options = dict(lr=0.1, dampening=0.0, weight_decay=0.0, nesterov=True, maximize=False)
    K.sgd_multi_tensor(params, grads, m, first=True, momentum=0.9, **sgd_options)
    K.sgd_multi_tensor(params, grads, None, first=False, momentum=0.0, **sgd_options)

    total = fake(np.zeros((), np.float64))
    K.sum_squares_(grads, total)
    norm = K.clip_(grads, total, 1.0)
    assert norm.dtype == dtype and norm.shape == ()
    K.unscale_(grads, 1 / 1024, fake(np.zeros((), np.float32)))
    assert len(launches) == 6 + 2 * 2 + 2 * 3

    pieces = [_rand((3, n), dtype, 500 + n) for n in range(1, 61)]  # 60: two launches
    K.tile_(fake(np.empty((3, 1830), dtype)), pieces, list(np.cumsum([0, *range(1, 60)])), 1)
    assert launches[-2:] == [f"tile_multi_tensor<{name}>"] * 2

    K.scale_(params[0], 0.5)
    if dtype != np.float16:
        half = K.scale_cast(params[0], 0.5, np.float16)
        K.scale_cast(half, 2.0, dtype)


def test_a_wrong_argument_type_is_caught(launches):
    # The checker itself: a float32 scale where the kernel takes a double is refused.
    source = softmax.SOURCE
    x = _rand((2, 3), np.float32)
    y = fake(np.empty((2, 3), np.float32))
    good = (x, y, np.int64(2), np.int64(3), np.int64(0), np.float64(0.5))
    check_launch(source.code, "scaled_softmax_forward<float>", good)
    with pytest.raises(AssertionError, match="argument 5"):
        check_launch(source.code, "scaled_softmax_forward<float>", (*good[:5], np.float32(0.5)))
    with pytest.raises(AssertionError, match=r"argument 1 .* float64"):
        bad = (x, y.astype(np.float64).view(type(y)), *good[2:])
        check_launch(source.code, "scaled_softmax_forward<float>", bad)
    with pytest.raises(AssertionError, match="5 arguments for 6 parameters"):
        check_launch(source.code, "scaled_softmax_forward<float>", good[:5])
    with pytest.raises(AssertionError, match="row 1 holds an array of float64"):
        lists = multi_tensor_struct([[x], [x.astype(np.float64).view(type(x))]])
        check_launch(adam.SOURCE.code, "adam_multi_tensor<float>", (lists, np.int32(1)) + (
            np.float64(0),) * 5 + (np.int32(0),) * 4 + (np.float64(1),) * 2)  # fmt: skip


def multi_tensor_struct(rows):
    from dtrain.runtime.kernels.multi_tensor import tensor_lists

    return tensor_lists(rows)[0][0]


def test_many_rows_take_the_mean_as_a_launch_of_its_own(launches, monkeypatch):
    from dtrain.runtime.kernels import cross_entropy

    monkeypatch.setattr(cross_entropy, "_FINISH_ROWS", 4)  # 5 rows: past the last block's
    x, target = _rand((5, 7), np.float32), fake(np.array([0, 3, 6, -100, 2]))
    K.cross_entropy_forward(x, target, -100, mean=True)
    assert launches == ["cross_entropy_forward<float>", "cross_entropy_mean<float>"]


def test_persistent_arrays_are_checked_once_and_gradients_every_time(monkeypatch):
    from dtrain.runtime.kernels import multi_tensor

    asked = []
    real = multi_tensor.fusable
    monkeypatch.setattr(multi_tensor, "fusable", lambda *a: asked.append(len(a)) or real(*a))
    checks = multi_tensor.PersistentChecks()
    param, state = _rand(6, np.float32), _rand(6, np.float32, 1)
    for seed in range(3):  # a fresh gradient every step
        assert checks.fusable("p", (param, state, None), _rand(6, np.float32, 2 + seed))
    assert asked == [3]  # the parameter and its state once; the gradients in place
    # a gradient the kernels cannot take, whatever was remembered
    assert not checks.fusable("p", (param, state, None), _rand(6, np.float64))
    assert not checks.fusable("p", (param, state, None), _rand(7, np.float32))
    assert not checks.fusable("p", (param, state, None), _rand((3, 2), np.float32).T)
    assert not checks.fusable("p", (param, state, None), np.ones(6, np.float32))
    # a replaced state array is checked again, and refused when the kernels cannot take it
    strided = _rand(12, np.float32, 9)[::2]
    assert not checks.fusable("p", (param, strided, None), _rand(6, np.float32))
    assert checks.fusable("p", (param, _rand(6, np.float32, 10), None), _rand(6, np.float32))
    assert len(asked) == 3


def test_persistent_checks_let_go_of_parameters_a_step_did_not_see():
    from dtrain.runtime.kernels import multi_tensor

    checks = multi_tensor.PersistentChecks()
    arrays = {name: (_rand(6, np.float32, i),) for i, name in enumerate("ab")}
    for name, persistent in arrays.items():
        assert checks.fusable(name, persistent, _rand(6, np.float32, 9))
    checks.sweep()
    assert set(checks._known) == {"a", "b"}
    checks.fusable("a", arrays["a"], _rand(6, np.float32, 9))  # "b" has no gradient now
    checks.sweep()
    assert set(checks._known) == {"a"}  # b's arrays are no longer held
    checks.clear()
    assert not checks._known


def test_each_stream_has_its_own_done_counter(launches, monkeypatch):
    # Launches on two streams may overlap: a shared counter would let one launch's blocks
    # count into the other's, and leave it stuck away from 0.
    import types

    streams = iter([7, 7, 8])
    current = staticmethod(lambda: types.SimpleNamespace(ptr=next(streams)))
    monkeypatch.setattr(FakeCupy.cuda, "get_current_stream", current)
    first, again, other = (build.done_counter(FakeCupy, 0) for _ in range(3))
    assert first is again and other is not first
    assert int(first[0]) == int(other[0]) == 0
