"""Gradient clipping with non-finite norms (as PyTorch: a NaN norm makes every gradient NaN,
an infinite one scales by 0), on the CPU path, the numpy reference of the CUDA kernel, and
the kernel's own CUDA C run on the CPU (``tests/runtime/cuda_emulator.py``)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import dtrain as dt
from dtrain import nn
from dtrain.runtime.kernels import clip_reference

NAN, INF = float("nan"), float("inf")


def _params(*grads, dtype=np.float32, device=None):
    params = []
    for g in grads:
        p = nn.Parameter(dt.zeros(len(g), dtype=dtype, device=device))
        p.grad = dt.tensor(np.asarray(g, dtype=dtype), device=device)
        params.append(p)
    return params


def _grads(params):
    return [p.grad.detach().cpu().numpy() for p in params]


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, "inf", 3.0])
def test_nan_norm_makes_every_gradient_nan(norm_type):
    params = _params([NAN, 1.0], [2.0, -3.0])
    norm = nn.utils.clip_grad_norm_(params, 1.0, norm_type=norm_type)
    assert math.isnan(norm.item())
    for g in _grads(params):
        assert np.isnan(g).all()


def test_infinite_norm_scales_by_zero_quietly():
    params = _params([INF, 1.0], [2.0, -3.0])
    with np.errstate(all="raise"):  # inf * 0 must not warn (PyTorch does not)
        norm = nn.utils.clip_grad_norm_(params, 1.0)
    assert norm.item() == INF
    a, b = _grads(params)
    assert np.isnan(a[0]) and a[1] == 0.0
    np.testing.assert_array_equal(b, [0.0, 0.0])


@pytest.mark.parametrize("bad", [NAN, INF])
@pytest.mark.parametrize("norm_type", [2.0, 1.0])
def test_error_if_nonfinite_raises_and_leaves_the_gradients(bad, norm_type):
    params = _params([bad, 1.0], [2.0])
    with pytest.raises(RuntimeError, match=r"is non-finite.*error_if_nonfinite=False"):
        nn.utils.clip_grad_norm_(params, 1.0, norm_type=norm_type, error_if_nonfinite=True)
    np.testing.assert_array_equal(_grads(params)[1], [2.0])


def test_foreach_is_accepted():
    params = _params([3.0, 4.0])
    assert nn.utils.clip_grad_norm_(params, 1.0, foreach=True).item() == pytest.approx(5.0)
    np.testing.assert_allclose(_grads(params)[0], [0.6, 0.8], rtol=1e-5)
    params = _params([3.0, NAN])
    nn.utils.clip_grad_value_(params, 1.0, foreach=False)
    a = _grads(params)[0]
    assert a[0] == 1.0 and np.isnan(a[1])  # clamping keeps NaN


def test_finite_norms_still_clip_only_above_max_norm():
    params = _params([0.3, 0.4])
    nn.utils.clip_grad_norm_(params, 1.0)
    np.testing.assert_array_equal(_grads(params)[0], np.float32([0.3, 0.4]))
    nn.utils.clip_grad_norm_(params, 0.25)
    np.testing.assert_allclose(_grads(params)[0], [0.15, 0.2], rtol=1e-5)


@pytest.mark.parametrize("bad", [NAN, INF, 0.5])
def test_kernel_reference_agrees_with_the_cpu_path(bad):
    arrays = [np.float32([bad, 1.0]), np.float32([2.0, -3.0, 4.0])]
    params = _params(*arrays)
    norm = nn.utils.clip_grad_norm_(params, 1.0)
    expected = [a.copy() for a in arrays]
    with np.errstate(invalid="ignore"):
        total = clip_reference(expected, 1.0)
    np.testing.assert_allclose(norm.item(), total, rtol=1e-6)
    for got, want in zip(_grads(params), expected):
        np.testing.assert_allclose(got, want, rtol=1e-6)  # NaNs in the same places


@pytest.mark.parametrize("bad", [NAN, INF])
def test_matches_torch(torch, bad):
    grads = [np.float32([bad, 1.0]), np.float32([2.0, -3.0])]
    for norm_type in (2.0, 1.0, math.inf):
        theirs = []
        for g in grads:
            tp = torch.nn.Parameter(torch.zeros(len(g)))
            tp.grad = torch.tensor(g)
            theirs.append(tp)
        ours = _params(*grads)
        tn = torch.nn.utils.clip_grad_norm_(theirs, 1.0, norm_type=norm_type)
        dn = nn.utils.clip_grad_norm_(ours, 1.0, norm_type=norm_type)
        np.testing.assert_array_equal(dn.item(), tn.item())
        for got, tp in zip(_grads(ours), theirs):
            np.testing.assert_array_equal(got, tp.grad.numpy())


@pytest.fixture
def source_emulator(monkeypatch):
    """CUDA arrays emulated on the CPU, each kernel run from its own CUDA C (needs g++)."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "runtime"))
    host_cuda = pytest.importorskip("host_cuda")
    if host_cuda.compiler() is None:
        pytest.skip("no g++ to run the kernels' CUDA C on the CPU")
    from cuda_emulator import install

    return install(monkeypatch, kernels="source")


@pytest.mark.parametrize("bad", [NAN, INF, 0.5])
def test_cuda_kernel_source_clips_like_the_cpu(source_emulator, bad):
    arrays = [np.float32([bad, 1.0]), np.float32([2.0, -3.0, 4.0])]
    on_gpu = _params(*arrays, device="cuda")
    with source_emulator.counting() as launches:
        norm = nn.utils.clip_grad_norm_(on_gpu, 1.0)
    assert launches.get("kernel clip_multi_tensor") == 1  # the fused path was taken
    on_cpu = _params(*arrays)
    expected = nn.utils.clip_grad_norm_(on_cpu, 1.0)
    np.testing.assert_allclose(float(norm), expected.item(), rtol=1e-6)
    for got, want in zip(_grads(on_gpu), _grads(on_cpu)):
        np.testing.assert_allclose(got, want, rtol=1e-6)
