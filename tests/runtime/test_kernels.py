"""The fused CUDA kernels of ``dtrain.runtime.kernels``.

On the CPU (CI): every registered kernel source compiles with nvcc for sm_90, each template
instantiation forced (so an error in a template body is not missed), and every numpy
reference equals dtrain's existing CPU op or optimizer, forward and gradient, so the
references the GPU tests trust are themselves checked.

On a GPU (``gpu`` marker): each kernel against its reference on fresh random inputs, odd
shapes and rows longer than a block, with every output poisoned with NaN beforehand (so an
element a kernel forgets to write fails); the wired ops and optimizers on cuda tensors
against the same on the CPU; capturable Adam replayed from a captured CUDA graph.

Without a GPU the per-kernel tests (those taking the ``cp`` fixture) run anyway: each launch
runs the kernel's own CUDA C, compiled with g++ for the CPU (``host_cuda.py``), so the
kernels' code is checked against the references in CI; only their speed and what needs a
real device (graph capture, the wired ops on cuda tensors) wait for the GPU.
"""

from __future__ import annotations

import math
import sys

import cuda_emulator
import host_cuda
import numpy as np
import pytest

import dtrain as dt
import dtrain.nn.functional as F
import dtrain.optim as optim
from dtrain.runtime import kernels
from dtrain.runtime.kernels import build, multi_tensor

IGNORE = -100


# ---- helpers ------------------------------------------------------------------------------
def _leaf(array: np.ndarray, device: str = "cpu") -> dt.Tensor:
    return dt.tensor(array, device=device, requires_grad=True)


def _np(value) -> np.ndarray:
    if isinstance(value, dt.Tensor):
        value = value.detach().cpu()
        return np.asarray(value.numpy())
    if type(value).__module__.startswith("cupy"):
        return value.get()
    return np.asarray(value)


def _targets(rng: np.random.Generator, rows: int, classes: int) -> np.ndarray:
    target = rng.integers(0, classes, size=rows)
    target[rng.random(rows) < 0.25] = IGNORE  # some ignored rows
    return target


# ---- CPU: every source compiles with nvcc -------------------------------------------------
def _nvcc_compile():
    cupy = pytest.importorskip("cupy", reason="cupy is not installed: install the 'test' extra")
    from cupy.cuda import compiler

    if cupy.cuda.get_nvcc_path() is None:
        pytest.skip("nvcc is not on this machine (set CUDA_PATH or put nvcc on PATH)")
    return compiler.compile_using_nvcc


def test_registry_lists_every_kernel_module():
    names = {source.name for source in build.sources()}
    assert names == {
        "adam",
        "attention",
        "bucket",
        "cast",
        "cross_entropy",
        "embedding",
        "gelu",
        "grad_norm",
        "layer_norm",
        "relu",
        "sgd",
        "softmax",
        "tile",
        "unscale",
    }
    for source in build.sources():
        assert source.name_expressions, source.name
        assert "#include" not in source.code  # NVRTC on the GPU machine may lack headers


@pytest.mark.parametrize("source", build.sources(), ids=lambda s: s.name)
def test_source_compiles_with_nvcc_for_sm90(source):
    compile_using_nvcc = _nvcc_compile()
    # Taking each instantiation's address makes nvcc instantiate it, as NVRTC does for
    # name_expressions; without it template bodies would never be compiled.
    forced = ", ".join(f"(void*)&{expr}" for expr in source.name_expressions)
    code = f"{source.code}\nstatic void* const dtrain_instances[] = {{{forced}}};\n"
    cubin = compile_using_nvcc(code, options=build.OPTIONS, arch="90")
    assert len(cubin) > 1000


def test_launch_shapes():
    for cols in (1, 31, 32, 33, 100, 512, 513, 100000):
        block = build.row_block(cols)
        assert block % 32 == 0 and 32 <= block <= 512
        assert block >= min(cols, 512)
    assert build.elementwise_grid(0) == (1,)
    assert build.elementwise_grid(257) == (2,)
    assert build.elementwise_grid(10**12) == (65536,)
    assert build.type_name(np.float16) == "half_t" and build.type_name(np.int32) is None


class _FakeArray:
    """Just what ``tensor_lists`` reads of a cupy array: ``size`` and ``data.ptr``."""

    def __init__(self, size: int, ptr: int) -> None:
        self.size = size
        self.data = type("Data", (), {"ptr": ptr})()


def test_tensor_lists_pack_pointers_and_sizes_by_value():
    n = 2 * multi_tensor.MAX_TENSORS + 4  # three launches: 48, 48, 4
    params = [_FakeArray(size=t * 1000, ptr=0x1000 + t) for t in range(n)]
    grads = [_FakeArray(size=t * 1000, ptr=0x900000 + t) for t in range(n)]
    packed = multi_tensor.tensor_lists([params, grads, None])
    assert [count for _, count, _ in packed] == [48, 48, 4]
    assert multi_tensor.LIST_DTYPE.itemsize == 7 * 48 * 8  # the CUDA side static_asserts it
    for k, (struct, count, grid) in enumerate(packed):
        ts = range(k * 48, k * 48 + count)
        assert list(struct["size"][0, :count]) == [t * 1000 for t in ts]
        assert list(struct["ptr"][0, 0, :count]) == [0x1000 + t for t in ts]
        assert list(struct["ptr"][0, 1, :count]) == [0x900000 + t for t in ts]
        assert not struct["ptr"][0, 2:].any() and not struct["size"][0, count:].any()
        chunks = sum(-(-t * 1000 // multi_tensor.CHUNK) for t in ts)
        assert grid == min(chunks, 4096)
    assert multi_tensor.tensor_lists([[_FakeArray(0, 8)]])[0][2] == 0  # nothing to launch


@pytest.mark.parametrize("grid", [1, 3, 7, 4096])
def test_blocks_own_every_chunk_exactly_once(grid):
    """The kernels' chunk walk (``first_owned``, ``chunk_count``), replayed in Python."""
    chunk = multi_tensor.CHUNK
    sizes = [1, chunk, chunk + 1, 5 * chunk - 3, 0, 7]
    seen = [np.zeros(size, np.int64) for size in sizes]
    for block in range(grid):
        base = 0
        for t, size in enumerate(sizes):
            count = -(-size // chunk)
            c = base + ((block - base % grid) + grid) % grid
            while c < base + count:
                first = (c - base) * chunk
                seen[t][first : min(first + chunk, size)] += 1
                c += grid
            base += count
    assert all((s == 1).all() for s in seen)


def test_numpy_arrays_never_take_the_kernels():
    a = np.zeros(4, np.float32)
    assert not multi_tensor.fusable(a, a)
    assert not multi_tensor.fusable(None)


# ---- CPU: the references equal dtrain's CPU ops ------------------------------------------
@pytest.mark.parametrize("shape", [(1, 1), (6, 5), (9, 40)])
def test_cross_entropy_reference_matches_cpu_op(shape):
    rng = np.random.default_rng(1)
    logits = rng.standard_normal(shape) * 3
    target = _targets(rng, shape[0], shape[1])
    weights = rng.standard_normal(shape[0])
    x = _leaf(logits)
    loss = F.cross_entropy(x, dt.tensor(target), reduction="none", ignore_index=IGNORE)
    (loss * dt.tensor(weights)).sum().backward()
    ref_loss, lse = kernels.cross_entropy_forward_reference(logits, target, IGNORE)
    np.testing.assert_allclose(_np(loss), ref_loss, rtol=1e-12, atol=1e-12)
    ref_grad = kernels.cross_entropy_backward_reference(logits, target, lse, weights, IGNORE)
    np.testing.assert_allclose(_np(x.grad), ref_grad, rtol=1e-10, atol=1e-12)

    x = _leaf(logits)  # mean: one scale, 1 / (rows kept), for every row
    F.cross_entropy(x, dt.tensor(target), ignore_index=IGNORE).backward()
    kept = max(int((target != IGNORE).sum()), 1)
    ref_grad = kernels.cross_entropy_backward_reference(logits, target, lse, 1 / kept, IGNORE)
    np.testing.assert_allclose(_np(x.grad), ref_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", [(1, 1), (4, 7), (3, 300)])
def test_layer_norm_reference_matches_cpu_op(shape, affine):
    rng = np.random.default_rng(2)
    xa, upstream = rng.standard_normal(shape) * 2 + 1, rng.standard_normal(shape)
    wa, ba = rng.standard_normal(shape[1]), rng.standard_normal(shape[1])
    x = _leaf(xa)
    w, b = (_leaf(wa), _leaf(ba)) if affine else (None, None)
    out = F.layer_norm(x, (shape[1],), w, b, eps=1e-5)
    (out * dt.tensor(upstream)).sum().backward()
    ref_out, stats = kernels.layer_norm_forward_reference(
        xa, wa if affine else None, ba if affine else None, 1e-5
    )
    np.testing.assert_allclose(_np(out), ref_out, rtol=1e-10, atol=1e-10)
    gx, gw, gb = kernels.layer_norm_backward_reference(upstream, xa, wa if affine else None, stats)
    np.testing.assert_allclose(_np(x.grad), gx, rtol=1e-9, atol=1e-10)
    if affine:
        np.testing.assert_allclose(_np(w.grad), gw, rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(_np(b.grad), gb, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_reference_matches_cpu_op(approximate):
    rng = np.random.default_rng(3)
    xa, upstream = rng.standard_normal((7, 13)) * 3, rng.standard_normal((7, 13))
    x = _leaf(xa)
    out = F.gelu(x, approximate=approximate)
    (out * dt.tensor(upstream)).sum().backward()
    # The CPU op's erf is Abramowitz & Stegun's (error < 1.5e-7); the reference's is exact.
    atol = 1e-6 if approximate == "none" else 1e-12
    np.testing.assert_allclose(_np(out), kernels.gelu_forward_reference(xa, approximate), atol=atol)
    ref_grad = kernels.gelu_backward_reference(upstream, xa, approximate)
    np.testing.assert_allclose(_np(x.grad), ref_grad, atol=atol)


def test_bias_gelu_reference_is_gelu_of_the_sum():
    rng = np.random.default_rng(4)
    xa, bias, upstream = rng.standard_normal((5, 6)), rng.standard_normal(6), np.ones((5, 6))
    for approximate in ("none", "tanh"):
        fused = kernels.gelu_forward_reference(xa, approximate, bias)
        np.testing.assert_array_equal(fused, kernels.gelu_forward_reference(xa + bias, approximate))
        fused = kernels.gelu_backward_reference(upstream, xa, approximate, bias)
        plain = kernels.gelu_backward_reference(upstream, xa + bias, approximate)
        np.testing.assert_array_equal(fused, plain)


ADAM_CASES = [
    ("Adam", {}),
    ("Adam", {"weight_decay": 0.1}),
    ("Adam", {"amsgrad": True, "maximize": True}),
    ("AdamW", {"weight_decay": 0.1}),
    ("AdamW", {"amsgrad": True, "betas": (0.5, 0.9)}),
]


def _adam_options(cls: str, options: dict) -> dict:
    beta1, beta2 = options.get("betas", (0.9, 0.999))
    return {
        "lr": 0.05,
        "beta1": beta1,
        "beta2": beta2,
        "eps": 1e-8,
        "weight_decay": options.get("weight_decay", 1e-2 if cls == "AdamW" else 0.0),
        "amsgrad": options.get("amsgrad", False),
        "maximize": options.get("maximize", False),
        "decoupled_weight_decay": cls == "AdamW",
    }


SGD_CASES = [
    {},
    {"momentum": 0.9},
    {"momentum": 0.9, "dampening": 0.3, "weight_decay": 0.1},
    {"momentum": 0.8, "nesterov": True, "maximize": True},
]


def _sgd_options(options: dict) -> dict:
    full = {"lr": 0.05, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0}
    return {**full, "nesterov": False, "maximize": False, **options}


def _optimizer_run(make, shapes, steps, dtype, device="cpu", seed=5):
    """Params from ``seed``, ``steps`` steps with gradients from ``seed + 1``; final values."""
    rng = np.random.default_rng(seed)
    params = [dt.nn.Parameter(dt.tensor(rng.standard_normal(s).astype(dtype), device=device))
              for s in shapes]  # fmt: skip
    opt = make(params)
    grad_rng = np.random.default_rng(seed + 1)
    for _ in range(steps):
        for p in params:
            p.grad = dt.tensor(grad_rng.standard_normal(p.shape).astype(dtype), device=device)
        opt.step()
    return [_np(p) for p in params]


def _reference_run(update, shapes, steps, state_names, seed=5):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s) for s in shapes]
    states = [{name: np.zeros(s) for name in state_names} for s in shapes]
    grad_rng = np.random.default_rng(seed + 1)
    for step in range(1, steps + 1):
        for p, state in zip(params, states):
            update(p, grad_rng.standard_normal(p.shape), state, step)
    return params


@pytest.mark.parametrize(("cls", "options"), ADAM_CASES, ids=str)
def test_adam_reference_matches_cpu_optimizer(cls, options):
    shapes, steps, opts = [(3, 4), (7,)], 4, _adam_options(cls, options)
    ours = _optimizer_run(lambda ps: getattr(optim, cls)(ps, lr=0.05, **options), shapes, steps,
                          np.float64)  # fmt: skip

    def update(p, g, state, step):
        kernels.adam_reference(p, g, state["m"], state["v"], state["vmax"], step=step, **opts)

    ref = _reference_run(update, shapes, steps, ("m", "v", "vmax"))
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("options", SGD_CASES, ids=str)
def test_sgd_reference_matches_cpu_optimizer(options):
    shapes, steps, opts = [(3, 4), (7,)], 4, _sgd_options(options)
    ours = _optimizer_run(lambda ps: optim.SGD(ps, lr=0.05, **options), shapes, steps, np.float64)

    def update(p, g, state, step):
        kernels.sgd_reference(p, g, state["b"], first=step == 1, **opts)

    ref = _reference_run(update, shapes, steps, ("b",))
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_scale_reference():
    flat = np.arange(6, dtype=np.float32)
    np.testing.assert_array_equal(kernels.scale_reference(flat, 0.5), flat * np.float32(0.5))
    assert kernels.scale_reference(flat, 0.25, np.float16).dtype == np.float16


def test_relu_reference_matches_cpu_op():
    rng = np.random.default_rng(7)
    xa, upstream = rng.standard_normal((6, 9)), rng.standard_normal((6, 9))
    xa[0, :3] = 0.0  # the kink: no gradient, as PyTorch
    x = _leaf(xa)
    out = F.relu(x)
    (out * dt.tensor(upstream)).sum().backward()
    np.testing.assert_array_equal(_np(x.grad), kernels.relu_backward_reference(upstream, _np(out)))


def test_cross_entropy_mean_reference_matches_cpu_op():
    rng = np.random.default_rng(6)
    logits, upstream = rng.standard_normal((9, 5)), 0.75
    target = _targets(rng, 9, 5)
    x = _leaf(logits)
    mean = F.cross_entropy(x, dt.tensor(target), ignore_index=IGNORE)
    (mean * upstream).backward()
    loss, lse = kernels.cross_entropy_forward_reference(logits, target, IGNORE)
    ref_mean, count = kernels.cross_entropy_mean_reference(loss, target, IGNORE)
    assert count == np.count_nonzero(target != IGNORE)
    np.testing.assert_allclose(_np(mean), ref_mean, rtol=1e-12)
    ref_grad = kernels.cross_entropy_backward_reference(logits, target, lse, upstream, IGNORE,
                                                        count)  # fmt: skip
    np.testing.assert_allclose(_np(x.grad), ref_grad, rtol=1e-10, atol=1e-15)
    all_ignored = np.full(9, IGNORE)
    assert np.isnan(kernels.cross_entropy_mean_reference(0 * loss, all_ignored, IGNORE)[0])


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", [(2, 3, 5), (4, 5, 3)], ids=["L<S", "L>S"])
def test_scaled_softmax_reference_matches_cpu_op(shape, causal):
    from dtrain._tensor.nn.functional.attention import ScaledSoftmax

    rng = np.random.default_rng(5)
    xa, upstream = rng.standard_normal(shape) * 3, rng.standard_normal(shape)
    x = _leaf(xa)
    out = ScaledSoftmax.apply(x, scale=0.7, causal=causal)
    (out * dt.tensor(upstream)).sum().backward()
    rows, length = (-1, shape[-1]), shape[-2] if causal else 0
    ref = kernels.scaled_softmax_forward_reference(xa.reshape(rows), 0.7, length)
    np.testing.assert_allclose(_np(out).reshape(rows), ref, rtol=1e-12, atol=1e-15)
    ref_grad = kernels.scaled_softmax_backward_reference(upstream.reshape(rows), ref, 0.7)
    np.testing.assert_allclose(_np(x.grad).reshape(rows), ref_grad, rtol=1e-12, atol=1e-15)
    if causal:  # query i sees keys j <= i only
        assert not np.any(_np(out)[..., np.triu_indices(shape[-2], 1, shape[-1])[0],
                                   np.triu_indices(shape[-2], 1, shape[-1])[1]])  # fmt: skip


# ---- GPU ----------------------------------------------------------------------------------
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("lengths", [(3, 5), (5, 3), (4, 4)], ids=str)
def test_attention_reference_matches_cpu_op(lengths, causal):
    rng = np.random.default_rng(6)
    length, keys = lengths
    arrays = [rng.standard_normal((2, 3, n, d)) for n, d in ((length, 4), (keys, 4), (keys, 6))]
    upstream = rng.standard_normal((2, 3, length, 6))
    q, k, v = (_leaf(a) for a in arrays)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=0.6)
    (out * dt.tensor(upstream)).sum().backward()
    ref = kernels.attention_forward_reference(*arrays, 0.6, causal)
    np.testing.assert_allclose(_np(out), ref, rtol=1e-12, atol=1e-15)
    ref_grads = kernels.attention_backward_reference(upstream, *arrays, 0.6, causal)
    for leaf, ref_grad in zip((q, k, v), ref_grads):
        np.testing.assert_allclose(_np(leaf.grad), ref_grad, rtol=1e-10, atol=1e-13)


gpu = pytest.mark.skipif(not dt.cuda_is_available(), reason="needs a CUDA GPU and cupy")
DTYPES = [np.float32, np.float64, np.float16]
TOL = {np.float64: 1e-10, np.float32: 2e-5, np.float16: 2e-2}


@pytest.fixture
def cp(monkeypatch):
    """cupy, with ``empty``/``empty_like`` returning NaN-filled floats (poisoned outputs).

    Without a GPU: the CPU stand-in for cupy (``cuda_emulator``) with every launch run by
    the kernel's own CUDA C, compiled with g++ (``host_cuda``), so these tests check the
    kernels' code on the CPU too.
    """
    if dt.cuda_is_available():
        import cupy
    else:
        if host_cuda.compiler() is None:
            pytest.skip("no GPU, and no g++ to run the kernels' CUDA C on the CPU")
        cuda_emulator.install(monkeypatch, kernels="source")
        cupy = sys.modules["cupy"]

    empty, empty_like = cupy.empty, cupy.empty_like

    def poison(array):
        if array.dtype.kind == "f":
            array.fill(np.nan)
        return array

    monkeypatch.setattr(cupy, "empty", lambda *a, **k: poison(empty(*a, **k)))
    monkeypatch.setattr(cupy, "empty_like", lambda *a, **k: poison(empty_like(*a, **k)))
    return cupy


def _counters_at_rest():
    """Some launch made a done-counter, and every one is back at 0 (build.done_counter)."""
    counters = list(build._done_counters.values())
    return bool(counters) and all(int(c[0]) == 0 for c in counters)


def _close(actual, expected, dtype, scale=1.0):
    tol = TOL[dtype] * scale
    np.testing.assert_allclose(_np(actual).astype(np.float64), expected.astype(np.float64),
                               rtol=tol, atol=tol)  # fmt: skip


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (7, 1000), (4, 3001)])
def test_gpu_cross_entropy(cp, shape, dtype):
    rng = np.random.default_rng(10)
    logits = (rng.standard_normal(shape) * 3).astype(dtype)
    target = _targets(rng, *shape)
    loss, lse = kernels.cross_entropy_forward(cp.asarray(logits), cp.asarray(target), IGNORE)
    ref_loss, ref_lse = kernels.cross_entropy_forward_reference(logits, target, IGNORE)
    _close(loss, ref_loss, dtype, 10)
    _close(lse, ref_lse, dtype, 10)
    for scale in (rng.standard_normal(shape[0]), np.array(0.5)):
        grad = kernels.cross_entropy_backward(
            cp.asarray(logits), cp.asarray(target), lse, cp.asarray(scale), IGNORE
        )
        ref = kernels.cross_entropy_backward_reference(logits, target, ref_lse, scale, IGNORE)
        _close(grad, ref, dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (3, 1000), (130, 513)])
def test_gpu_layer_norm(cp, shape, dtype, affine):
    rng = np.random.default_rng(11)
    x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
    w = rng.standard_normal(shape[1]).astype(dtype) if affine else None
    b = rng.standard_normal(shape[1]).astype(dtype) if affine else None
    g = rng.standard_normal(shape).astype(dtype)
    on = lambda a: None if a is None else cp.asarray(a)
    out, stats = kernels.layer_norm_forward(on(x), on(w), on(b), 1e-5)
    ref_out, ref_stats = kernels.layer_norm_forward_reference(x, w, b, 1e-5)
    _close(out, ref_out, dtype, 10)
    _close(stats[0], ref_stats[0], dtype)  # the means
    _close(stats[1], ref_stats[1], dtype, 10)  # the rstds
    scale = 10 * math.sqrt(shape[0])  # sums over rows
    addend = rng.standard_normal(shape).astype(dtype)  # a gradient x has from elsewhere
    # the second launch finds the counter the first one set back to 0
    for add in (None, addend):
        gx, gw, gb = kernels.layer_norm_backward(on(g), on(x), on(w), stats, addend=on(add))
        rgx, rgw, rgb = kernels.layer_norm_backward_reference(g, x, w, ref_stats, add)
        _close(gx, rgx, dtype, 10)
        _close(gw, rgw, dtype, scale)
        _close(gb, rgb, dtype, scale)
    assert _counters_at_rest()


@pytest.mark.gpu
def test_gpu_layer_norm_backward_without_the_counter(cp, monkeypatch):
    # A capture that begins before the device has its counter: the partials' sum is then a
    # launch of its own, with the same gradients.
    monkeypatch.setattr(build, "_done_counters", {})
    monkeypatch.setattr(build, "is_current_stream_capturing", lambda: True)
    rng = np.random.default_rng(13)
    x, g = rng.standard_normal((2, 130, 33))
    w = rng.standard_normal(33)
    _, stats = kernels.layer_norm_forward(cp.asarray(x), cp.asarray(w), None, 1e-5)
    gx, gw, gb = kernels.layer_norm_backward(cp.asarray(g), cp.asarray(x), cp.asarray(w), stats)
    rgx, rgw, rgb = kernels.layer_norm_backward_reference(g, x, w, stats.get())
    for value, reference in ((gx, rgx), (gw, rgw), (gb, rgb)):
        np.testing.assert_allclose(value.get(), reference, rtol=1e-10, atol=1e-12)
    assert build._done_counters == {}


@pytest.mark.gpu
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(1,), (1001,), (37, 129)])
def test_gpu_gelu(cp, shape, dtype, approximate, bias):
    rng = np.random.default_rng(12)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    b = rng.standard_normal(shape[-1]).astype(dtype) if bias else None
    cb = None if b is None else cp.asarray(b)
    out = kernels.gelu_forward(cp.asarray(x), approximate, cb)
    _close(out, kernels.gelu_forward_reference(x, approximate, b), dtype, 5)
    grad = kernels.gelu_backward(cp.asarray(g), cp.asarray(x), approximate, cb)
    _close(grad, kernels.gelu_backward_reference(g, x, approximate, b), dtype, 5)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_gpu_bucket_scaling(cp, dtype):
    flat = np.random.default_rng(13).standard_normal(100003).astype(dtype)
    scaled = kernels.scale_(cp.asarray(flat), 0.25)
    _close(scaled, kernels.scale_reference(flat, 0.25), dtype)
    if dtype != np.float16:
        half = kernels.scale_cast(cp.asarray(flat), 0.5, np.float16)
        assert half.dtype == np.float16
        _close(half, kernels.scale_reference(flat, 0.5, np.float16), np.float16)
        back = kernels.scale_cast(half, 2.0, dtype)
        _close(back, kernels.scale_reference(_np(half), 2.0, dtype), np.float16)


SIZES = [1, 7, 16385, 40000]  # one more than a chunk, and several chunks


def _multi_tensor_inputs(rng, dtype, names):
    return {name: [rng.standard_normal(n).astype(dtype) for n in SIZES] for name in names}


@pytest.mark.gpu
@pytest.mark.parametrize(("cls", "options"), ADAM_CASES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_gpu_adam_multi_tensor(cp, cls, options, dtype):
    rng = np.random.default_rng(14)
    opts = _adam_options(cls, options)
    host = _multi_tensor_inputs(rng, dtype, ("p",))
    host["m"] = [np.zeros_like(p) for p in host["p"]]
    host["v"] = [np.zeros_like(p) for p in host["p"]]
    host["vmax"] = [np.zeros_like(p) for p in host["p"]]
    dev = {k: [cp.asarray(a) for a in v] for k, v in host.items()}
    ref = {k: [a.astype(np.float64) for a in v] for k, v in host.items()}
    for step in range(1, 4):
        # |g| >= 0.5: (1 - beta2) g^2 stays clear of float16's underflow, which would turn
        # the update into m / eps in any float16 Adam, not only ours.
        grads = [(rng.choice([-1, 1], n) * rng.uniform(0.5, 2, n)).astype(dtype) for n in SIZES]
        kernels.adam_multi_tensor(dev["p"], [cp.asarray(g) for g in grads], dev["m"], dev["v"],
                                  dev["vmax"], step=step, **opts)  # fmt: skip
        for i, g in enumerate(grads):
            kernels.adam_reference(ref["p"][i], g, ref["m"][i], ref["v"][i], ref["vmax"][i],
                                   step=step, **opts)  # fmt: skip
    for name in ("p", "m", "v"):
        for got, want in zip(dev[name], ref[name]):
            _close(got, want, dtype, 10)


@pytest.mark.gpu
@pytest.mark.parametrize("options", SGD_CASES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_gpu_sgd_multi_tensor(cp, options, dtype):
    rng = np.random.default_rng(15)
    opts = _sgd_options(options)
    host = _multi_tensor_inputs(rng, dtype, ("p",))
    dev_p = [cp.asarray(a) for a in host["p"]]
    dev_b = [cp.empty(n, dtype) for n in SIZES]  # poisoned: the first step must write them
    ref_p = [a.astype(np.float64) for a in host["p"]]
    ref_b = [np.zeros(n) for n in SIZES]
    for step in range(1, 4):
        grads = [rng.standard_normal(n).astype(dtype) for n in SIZES]
        kernels.sgd_multi_tensor(dev_p, [cp.asarray(g) for g in grads], dev_b, first=step == 1,
                                 **opts)  # fmt: skip
        for i, g in enumerate(grads):
            kernels.sgd_reference(ref_p[i], g, ref_b[i], first=step == 1, **opts)
    for got, want in zip(dev_p, ref_p):
        _close(got, want, dtype, 10)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_gpu_relu_backward(cp, dtype):
    rng = np.random.default_rng(19)
    out = np.maximum(rng.standard_normal(100003), 0).astype(dtype)
    grad = rng.standard_normal(100003).astype(dtype)
    got = kernels.relu_backward(cp.asarray(grad), cp.asarray(out))
    np.testing.assert_array_equal(_np(got), kernels.relu_backward_reference(grad, out))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("rows", [1, 9, 5000])
def test_gpu_cross_entropy_mean(cp, rows, dtype):
    rng = np.random.default_rng(18)
    loss = rng.uniform(0, 3, rows).astype(dtype)
    target = _targets(rng, rows, 7)
    loss[target == IGNORE] = 0  # as cross_entropy_forward leaves them
    mean, count = kernels.cross_entropy_mean(cp.asarray(loss), cp.asarray(target), IGNORE)
    ref_mean, ref_count = kernels.cross_entropy_mean_reference(loss, target, IGNORE)
    assert float(count) == float(ref_count) and count.dtype == ref_count.dtype
    if ref_count:
        _close(mean, ref_mean, dtype)
    else:
        assert math.isnan(float(mean))


@pytest.mark.gpu
@pytest.mark.parametrize("counter", [True, False], ids=["last-block-mean", "mean-launch"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("rows", [1, 9, 700])
def test_gpu_cross_entropy_forward_with_its_mean(cp, monkeypatch, rows, dtype, counter):
    if not counter:  # a capture begun before the device had its counter
        monkeypatch.setattr(build, "_done_counters", {})
        monkeypatch.setattr(build, "is_current_stream_capturing", lambda: True)
    rng = np.random.default_rng(19)
    logits = (rng.standard_normal((rows, 11)) * 3).astype(dtype)
    target = _targets(rng, rows, 11)
    ref_loss, ref_lse = kernels.cross_entropy_forward_reference(logits, target, IGNORE)
    ref_mean, ref_count = kernels.cross_entropy_mean_reference(ref_loss, target, IGNORE)
    for _ in range(2):  # the second launch finds the counter the first one set back to 0
        loss, lse, mean, count = kernels.cross_entropy_forward(
            cp.asarray(logits), cp.asarray(target), IGNORE, mean=True
        )
        _close(loss, ref_loss, dtype, 10)
        _close(lse, ref_lse, dtype, 10)
        assert float(count) == float(ref_count) and count.dtype == ref_count.dtype
        if ref_count:
            _close(mean, ref_mean, dtype, 10)
        else:
            assert math.isnan(float(mean))
    if counter:
        assert _counters_at_rest()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(
    "rows, cols, lookups", [(1, 1, 1), (7, 5, (3, 4)), (5000, 3, 9), (6, 1000, 40)]
)  # one row; batch-shaped indices; more rows than blocks; columns beyond a block
def test_gpu_embedding_backward(cp, rows, cols, lookups, dtype):
    rng = np.random.default_rng(21)
    indices = rng.integers(0, min(rows, 4), size=lookups)  # repeated rows
    grad = rng.standard_normal((*np.shape(indices), cols)).astype(dtype)
    addend = rng.standard_normal((rows, cols)).astype(dtype)
    for padding_idx, add in ((None, None), (0, None), (None, addend), (rows - 1, addend)):
        out = kernels.embedding_backward(
            cp.asarray(grad), cp.asarray(indices), rows, padding_idx,
            None if add is None else cp.asarray(add),
        )  # fmt: skip
        ref = kernels.embedding_backward_reference(grad, indices, rows, padding_idx, add)
        _close(out, ref, dtype, 10)


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [0, 7, 64])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(1, 1), (21, 64), (7, 1000)])
def test_gpu_scaled_softmax(cp, shape, dtype, causal):
    rng = np.random.default_rng(17)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    y = kernels.scaled_softmax_forward(cp.asarray(x), 0.3, causal)
    ref = kernels.scaled_softmax_forward_reference(x, 0.3, causal)
    _close(y, ref, dtype)
    gx = kernels.scaled_softmax_backward(cp.asarray(g), y, 0.3)
    _close(gx, kernels.scaled_softmax_backward_reference(g, _np(y), 0.3), dtype, 10)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("bad", [None, "inf", "nan", "-inf"])
@pytest.mark.parametrize("counter", [True, False], ids=["last-block", "raise-only"])
def test_gpu_unscale_multi_tensor(cp, monkeypatch, dtype, bad, counter):
    if not counter:  # a capture begun before the device had its counter
        monkeypatch.setattr(build, "_done_counters", {})
        monkeypatch.setattr(build, "is_current_stream_capturing", lambda: True)
    rng = np.random.default_rng(16)
    # 50 tensors: two launches (48 per launch); the bad value sits in the second launch's
    # last chunk, so a launch or chunk the kernel skips would miss it.
    sizes = [*SIZES] * 12 + [3, 40000]
    host = [(rng.standard_normal(n) * 100).astype(dtype) for n in sizes]
    if bad is not None:
        host[-1][-5] = float(bad)
    dev = [cp.asarray(a) for a in host]
    found = cp.zeros((), np.float32)
    kernels.unscale_(dev, 1 / 3.0, found)  # rounded to float32 by both
    expected_found = kernels.unscale_reference(host, 1 / 3.0)
    assert math.isinf(float(found)) == expected_found == (bad is not None)
    for got, want in zip(dev, host):
        np.testing.assert_array_equal(_np(got), want)  # the same float math: bit-exact
    kernels.unscale_(dev[:2], 0.5, found)  # a clean call never resets the flag
    assert math.isinf(float(found)) == (bad is not None)
    # overwrite: the flag may hold anything before (no zeroing launch); a clean call sets 0
    for garbage in (np.inf, 7.0):
        found = cp.full((), garbage, np.float32)
        kernels.unscale_([d.copy() for d in dev], 1.0, found, overwrite=True)
        assert float(found) == (np.inf if bad is not None else 0.0)
        kernels.unscale_([], 1.0, found, overwrite=True)  # nothing to check: clean
        assert float(found) == 0.0


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("counter", [True, False], ids=["last-block-sums", "atomic-adds"])
def test_gpu_sum_squares_and_clip(cp, monkeypatch, dtype, counter):
    if not counter:  # a capture begun before the device had its counter
        monkeypatch.setattr(build, "_done_counters", {})
        monkeypatch.setattr(build, "is_current_stream_capturing", lambda: True)
    rng = np.random.default_rng(17)
    # 50 tensors: two launches; the last one of 40000 elements spans three chunks (blocks)
    host = [rng.standard_normal(n).astype(dtype) for n in [*SIZES] * 12 + [3, 40000]]
    dev = [cp.asarray(a) for a in host]
    want = sum(float(np.sum(a.astype(np.float64) ** 2)) for a in host)
    total = cp.asarray(np.float64(np.nan))  # overwrite: what it held does not matter
    for _ in range(2):  # the second call finds the counter set back to 0
        kernels.sum_squares_(dev, total, overwrite=True)
        assert float(total) == pytest.approx(want, rel=1e-12)
    kernels.sum_squares_(dev[:2], total)  # adds
    part = sum(float(np.sum(a.astype(np.float64) ** 2)) for a in host[:2])
    assert float(total) == pytest.approx(want + part, rel=1e-12)
    kernels.sum_squares_([], total, overwrite=True)
    assert float(total) == 0
    kernels.sum_squares_(dev, total, overwrite=True)
    norm = kernels.clip_(dev, total, 1.0)
    expected_norm = kernels.clip_reference(host, 1.0)
    assert float(norm) == pytest.approx(expected_norm, rel=TOL[dtype])
    for got, expected in zip(dev, host):
        _close(got, expected, dtype)
    if counter:
        assert _counters_at_rest()


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("graph", [False, True], ids=["repeated", "cuda-graph"])
def test_gpu_capturable_adam_counts_steps_on_the_device(cp, graph):
    rng = np.random.default_rng(16)
    opts = _adam_options("AdamW", {"amsgrad": True})
    host_p = [rng.standard_normal(n).astype(np.float32) for n in SIZES]
    host_g = [rng.standard_normal(n).astype(np.float32) for n in SIZES]  # fixed: replayable
    p = [cp.asarray(a) for a in host_p]
    g = [cp.asarray(a) for a in host_g]
    m, v, vmax = ([cp.zeros(n, np.float32) for n in SIZES] for _ in range(3))
    steps = [cp.zeros((), np.float32) for _ in SIZES]

    def step():
        kernels.adam_multi_tensor(p, g, m, v, vmax, steps=steps, **opts)

    step()  # eager: compiles, builds the tables
    if graph:
        stream = cp.cuda.Stream(non_blocking=True)
        with stream:
            stream.begin_capture(mode=cp.cuda.runtime.streamCaptureModeRelaxed)  # as dt.cuda
            step()
            captured = stream.end_capture()
        for _ in range(3):
            captured.launch(stream)
        stream.synchronize()
    else:
        for _ in range(3):
            step()
    assert [float(s) for s in steps] == [4.0] * len(SIZES)
    ref_p = [a.astype(np.float64) for a in host_p]
    ref_m, ref_v, ref_vmax = ([np.zeros(n) for n in SIZES] for _ in range(3))
    for t in range(1, 5):
        for i in range(len(SIZES)):
            kernels.adam_reference(ref_p[i], host_g[i], ref_m[i], ref_v[i], ref_vmax[i],
                                   step=t, **opts)  # fmt: skip
    for got, want in zip(p, ref_p):
        _close(got, want, np.float32, 10)


# ---- GPU: the wired ops and optimizers against the CPU ------------------------------------
def _both(fn, arrays, upstream_seed=20):
    """fn on CPU and cuda leaves; (outputs, grads) on each, the backward from one upstream."""
    results = []
    for device in ("cpu", "cuda"):
        leaves = [_leaf(a, device) for a in arrays]
        out = fn(*leaves)
        upstream = np.random.default_rng(upstream_seed).standard_normal(out.shape)
        (out * dt.tensor(upstream.astype(arrays[0].dtype), device=device)).sum().backward()
        results.append((_np(out), [_np(leaf.grad) for leaf in leaves]))
    return results


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(6, 11), (3, 9, 4)])
def test_gpu_cross_entropy_op_matches_cpu(shape, reduction):
    rng = np.random.default_rng(21)
    logits = rng.standard_normal(shape).astype(np.float32)
    target_shape = (shape[0],) + shape[2:]
    target = rng.integers(0, shape[1], size=target_shape)
    target.reshape(-1)[0] = IGNORE

    def fn(x):
        t = dt.tensor(target, device=x.device)
        return F.cross_entropy(x, t, ignore_index=IGNORE, reduction=reduction)

    (cpu_out, cpu_grads), (gpu_out, gpu_grads) = _both(fn, [logits])
    np.testing.assert_allclose(gpu_out, cpu_out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gpu_grads[0], cpu_grads[0], rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("lengths", [(6, 6), (3, 8), (8, 3)], ids=str)
def test_gpu_attention_op_matches_cpu(lengths, causal):
    rng = np.random.default_rng(24)
    (length, keys), heads = lengths, (2, 3)
    arrays = [rng.standard_normal((*heads, n, 16)).astype(np.float32) for n in (length, keys, keys)]
    fn = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    (cpu_out, cpu_grads), (gpu_out, gpu_grads) = _both(fn, arrays)
    np.testing.assert_allclose(gpu_out, cpu_out, rtol=1e-5, atol=1e-5)
    for a, b in zip(gpu_grads, cpu_grads):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@gpu
def test_gpu_layer_norm_op_matches_cpu():
    rng = np.random.default_rng(22)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in ((4, 3, 5, 6), (5, 6), (5, 6))]
    fn = lambda x, w, b: F.layer_norm(x, (5, 6), w, b)
    (cpu_out, cpu_grads), (gpu_out, gpu_grads) = _both(fn, arrays)
    np.testing.assert_allclose(gpu_out, cpu_out, rtol=1e-5, atol=1e-5)
    for a, b in zip(gpu_grads, cpu_grads):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gpu_gelu_op_matches_cpu(approximate):
    x = np.random.default_rng(23).standard_normal((9, 33)).astype(np.float32) * 3
    fn = lambda t: F.gelu(t, approximate=approximate)
    (cpu_out, cpu_grads), (gpu_out, gpu_grads) = _both(fn, [x])
    np.testing.assert_allclose(gpu_out, cpu_out, rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(gpu_grads[0], cpu_grads[0], rtol=1e-5, atol=2e-6)


OPTIMIZERS = {
    "Adam": lambda ps: optim.Adam(ps, lr=0.01, weight_decay=0.1),
    "AdamW-amsgrad": lambda ps: optim.AdamW(ps, lr=0.01, amsgrad=True),
    "AdamW-capturable": lambda ps: optim.AdamW(ps, lr=0.01, capturable=True),
    "SGD-nesterov": lambda ps: optim.SGD(ps, lr=0.01, momentum=0.9, nesterov=True),
    "SGD-dampening": lambda ps: optim.SGD(ps, lr=0.01, momentum=0.9, dampening=0.5),
}


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_gpu_fused_optimizers_match_cpu(name):
    shapes = [(3, 4), (7,), (130, 300), (1,)] + [(i + 1,) for i in range(60)]  # two launches
    on_gpu = _optimizer_run(OPTIMIZERS[name], shapes, 5, np.float32, "cuda")
    on_cpu = _optimizer_run(OPTIMIZERS[name], shapes, 5, np.float32)
    for a, b in zip(on_gpu, on_cpu):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_unscale_reference_matches_grad_scaler_on_the_cpu():
    from dtrain.runtime.kernels import unscale_reference

    for bad in (None, math.inf, math.nan):
        arrays = [np.array([4.0, -8.0, 3e-3], np.float32), np.array([[1.5, 2.0]], np.float64)]
        if bad is not None:
            arrays[1][0, 1] = bad
        params = [dt.tensor(np.zeros_like(a), requires_grad=True) for a in arrays]
        for p, a in zip(params, arrays):
            p.grad = dt.tensor(a.copy())
        scaler = dt.amp.GradScaler("cpu", init_scale=3.0)
        optimizer = optim.SGD(params, lr=1.0)
        scaler.unscale_(optimizer)
        expected = [a.copy() for a in arrays]
        found = unscale_reference(expected, 1 / 3.0)
        assert found == (bad is not None)
        for p, e in zip(params, expected):
            np.testing.assert_array_equal(p.grad.numpy(), e)


def test_clip_reference_matches_clip_grad_norm_on_the_cpu():
    from dtrain.runtime.kernels import clip_reference

    rng = np.random.default_rng(7)
    for max_norm in (0.5, 1e6):  # clipped, and left alone
        arrays = [rng.standard_normal(shape).astype(np.float32) for shape in [(3, 4), (5,), ()]]
        params = [dt.tensor(a.copy(), requires_grad=True) for a in arrays]
        for p, a in zip(params, arrays):
            p.grad = dt.tensor(a.copy())
        norm = dt.nn.utils.clip_grad_norm_(params, max_norm)
        expected = [a.copy() for a in arrays]
        total = clip_reference(expected, max_norm)
        assert abs(float(norm) - total) < 1e-5 * total
        for p, e in zip(params, expected):
            np.testing.assert_allclose(p.grad.numpy(), e, rtol=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(
    ("length", "keys", "dim", "dim_v"),
    [(1, 1, 1, 1), (5, 9, 7, 3), (64, 64, 24, 24), (40, 200, 33, 40)],
)
def test_gpu_attention(cp, dtype, causal, length, keys, dim, dim_v):
    # q, k, v and the output's gradient as (batch, heads, length, dim) views of
    # (batch, length, heads, dim) arrays, the layout of heads split out of a projection.
    rng = np.random.default_rng(21)
    batch, heads = 2, 3
    host = [rng.standard_normal((batch, n, heads, d)).astype(dtype)
            for n, d in ((length, dim), (keys, dim), (keys, dim_v), (length, dim_v))]  # fmt: skip
    q, k, v, g = (cp.asarray(a).transpose(0, 2, 1, 3) for a in host)
    q_h, k_h, v_h, g_h = (a.transpose(0, 2, 1, 3) for a in host)
    scale = 1 / math.sqrt(dim)
    assert kernels.attention.supported(q, k, v)
    out, saved = kernels.attention_forward(q, k, v, scale, causal)
    _close(out, kernels.attention_forward_reference(q_h, k_h, v_h, scale, causal), dtype, 10)
    grads = kernels.attention_backward(g, q, k, v, saved, scale, causal)
    refs = kernels.attention_backward_reference(g_h, q_h, k_h, v_h, scale, causal)
    for got, want in zip(grads, refs):
        _close(got, want, dtype, 10 * math.sqrt(max(length, keys)))


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_gpu_attention_of_a_split_qkv_projection(cp, dtype, causal):
    # q, k, v as the heads of the thirds of one (batch, length, 3 * heads * dim) array, as
    # a GPT block splits its qkv projection: their gradients come back as the same views of
    # one new array of that shape, whose every element the two backward kernels write.
    rng = np.random.default_rng(25)
    batch, length, heads, dim = 2, 9, 3, 5
    host = rng.standard_normal((batch, length, 3 * heads * dim)).astype(dtype)
    g_host = rng.standard_normal((batch, length, heads, dim)).astype(dtype)
    qkv = cp.asarray(host).reshape(batch, length, 3, heads, dim)
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
    g = cp.asarray(g_host).transpose(0, 2, 1, 3)
    assert kernels.attention._thirds_of_one_array(q, k, v)
    assert not kernels.attention._thirds_of_one_array(q, v, k)  # not in order
    scale = 1 / math.sqrt(dim)
    _, saved = kernels.attention_forward(q, k, v, scale, causal)
    grads = kernels.attention_backward(g, q, k, v, saved, scale, causal)
    packed = grads[0].base
    assert packed.shape == host.shape and all(grad.base is packed for grad in grads)
    for i, grad in enumerate(grads):  # each in its third, as q, k and v lie in theirs
        assert grad.strides == (q, k, v)[i].strides
        assert grad.data.ptr - packed.data.ptr == (q, k, v)[i].data.ptr - qkv.data.ptr
    q_h, k_h, v_h = (host.reshape(batch, length, 3, heads, dim)[:, :, i].transpose(0, 2, 1, 3)
                     for i in range(3))  # fmt: skip
    refs = kernels.attention_backward_reference(
        g_host.transpose(0, 2, 1, 3), q_h, k_h, v_h, scale, causal
    )
    for got, want in zip(grads, refs):
        _close(got, want, dtype, 10 * math.sqrt(length))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(
    ("shape", "axis", "lengths"),
    [
        ((4, 9, 3), 1, [2, 3, 4]),
        ((4, 9, 3), 0, [1, 3]),
        ((5, 300), 1, [7] * 40 + [20]),  # 41 pieces
        ((2, 60), 1, [1] * 60),  # 60 pieces: two launches of up to 48
        ((3, 5), 1, [0, 5, 0]),  # empty pieces
    ],
)
def test_gpu_tile(cp, dtype, shape, axis, lengths):
    rng = np.random.default_rng(22)
    if sum(lengths) != shape[axis]:
        lengths = lengths[:-1] + [shape[axis] - sum(lengths[:-1])]
    pieces = [
        rng.standard_normal(shape[:axis] + (n,) + shape[axis + 1 :]).astype(dtype) for n in lengths
    ]
    out = cp.empty(shape, dtype)
    device_pieces = [cp.asarray(p) for p in pieces]
    assert kernels.tile.supported(out, device_pieces)
    starts = list(np.cumsum([0, *lengths[:-1]]))
    kernels.tile_(out, device_pieces, [int(s) for s in starts], axis)
    np.testing.assert_array_equal(_np(out), kernels.tile_reference(pieces, axis))


@pytest.mark.gpu
def test_gpu_cast_multi_tensor(cp):
    # 50 arrays (two launches of up to 48), one of three chunks and one empty; values that
    # round both ways, overflow to inf and underflow to subnormals, as astype rounds them
    rng = np.random.default_rng(26)
    host = [(rng.standard_normal(n) * 10.0 ** rng.integers(-8, 6)).astype(np.float32)
            for n in [*SIZES] * 12 + [0, 40000]]  # fmt: skip
    host[2][:3] = [70000.0, -1e-7, 1.0 + 2.0**-11]
    outs = kernels.cast_multi_tensor([cp.asarray(x) for x in host], np.float16)
    with np.errstate(over="ignore"):
        want = kernels.cast_reference(host, np.float16)
    assert all(out.dtype == np.float16 and out.shape == x.shape for out, x in zip(outs, host))
    for got, expected in zip(outs, want):
        np.testing.assert_array_equal(_np(got).view(np.uint16), expected.view(np.uint16))
    with pytest.raises(ValueError, match="casts float32 to float16"):
        kernels.cast_multi_tensor([cp.asarray(host[0]).astype(np.float64)], np.float16)
