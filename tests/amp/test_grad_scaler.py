"""GradScaler: the scale sequence and skipped steps against torch.amp.GradScaler("cpu") on
scripted gradients with infs and NaNs, the call-order errors, one host read per step, and
state dicts through dt.save."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import dtrain as dt
from dtrain._tensor.amp import grad_scaler as grad_scaler_module

INF, NAN = math.inf, math.nan

# One row per step: the gradient of the (unscaled) loss for a 3-element parameter.
SCRIPT = [
    [0.5, -1.0, 2.0],
    [1e-3, 2e-3, -3e-3],
    [INF, 1.0, 1.0],
    [0.25, 0.25, 0.25],
    [1.0, NAN, 1.0],
    [-INF, INF, 0.0],  # inf + -inf: a sum would say NaN, which is caught too
    [3.0, 2.0, 1.0],
    [1e4, -1e4, 5e3],
    [0.1, 0.2, 0.3],
    [0.1, 0.2, 0.3],
    [0.1, 0.2, 0.3],
    [7.0, 8.0, 9.0],
    [0.0, 0.0, 0.0],
]


def run_dtrain(script, device="cpu", **options):
    param = dt.tensor(np.ones(3, np.float32), device=device, requires_grad=True)
    opt = dt.optim.SGD([param], lr=0.1, momentum=0.9)
    scaler = dt.amp.GradScaler(device, **options)
    scales, params = [], []
    for row in script:
        opt.zero_grad()
        row = dt.tensor(np.array(row, np.float32), device=device)
        scaler.scale((param * row).sum()).backward()
        scaler.step(opt)
        scaler.update()
        scales.append(scaler.get_scale())
        params.append(param.detach().cpu().numpy().copy())
    return scales, params, scaler


def run_torch(torch, script, **options):
    param = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([param], lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", **options)
    scales, params = [], []
    for row in script:
        opt.zero_grad()
        scaler.scale((param * torch.tensor(row)).sum()).backward()
        scaler.step(opt)
        scaler.update()
        scales.append(scaler.get_scale())
        params.append(param.detach().numpy().copy())
    return scales, params, scaler


@pytest.mark.parametrize(
    "options",
    [
        {"init_scale": 2.0**10, "growth_interval": 3},
        {"init_scale": 1000.0, "growth_factor": 1.7, "backoff_factor": 0.3, "growth_interval": 2},
        {"init_scale": 2.0**16},  # torch's defaults
    ],
    ids=["pow2", "odd-factors", "defaults"],
)
def test_same_scales_and_skipped_steps_as_torch(options):
    torch = pytest.importorskip("torch")
    ours, ours_params, scaler = run_dtrain(SCRIPT, **options)
    theirs, theirs_params, their_scaler = run_torch(torch, SCRIPT, **options)
    assert ours == theirs  # exactly: both keep the scale in float32
    np.testing.assert_allclose(np.array(ours_params), np.array(theirs_params), rtol=1e-6)
    assert scaler.state_dict() == their_scaler.state_dict()


@pytest.mark.gpu
@pytest.mark.skipif(not dt.cuda_is_available(), reason="needs a CUDA GPU and cupy")
def test_cuda_scaler_matches_the_cpu_one():
    # On CUDA the check and the unscale are one multi-tensor kernel; the CPU path is numpy.
    options = {"init_scale": 2.0**10, "growth_interval": 3}
    cpu_scales, cpu_params, _ = run_dtrain(SCRIPT, **options)
    gpu_scales, gpu_params, _ = run_dtrain(SCRIPT, "cuda", **options)
    assert gpu_scales == cpu_scales
    np.testing.assert_allclose(np.array(gpu_params), np.array(cpu_params), rtol=1e-6)


def test_overflowing_steps_are_skipped_and_back_off():
    scales, params, _ = run_dtrain(SCRIPT, init_scale=8.0, growth_interval=100)
    skipped = [i for i in range(1, len(SCRIPT)) if np.array_equal(params[i], params[i - 1])]
    finite = [all(math.isfinite(v) for v in row) for row in SCRIPT]
    # Every non-finite row is skipped and halves the scale; the all-zero last row steps
    # (momentum moves the parameter) and so does every other finite row.
    assert [i for i in range(len(SCRIPT)) if not finite[i]] == skipped
    assert scales == [8.0 * 0.5 ** sum(not f for f in finite[: i + 1]) for i in range(len(SCRIPT))]


def test_growth_after_interval_clean_steps():
    scales, _, scaler = run_dtrain([[1.0, 1.0, 1.0]] * 7, init_scale=4.0, growth_interval=3)
    assert scales == [4.0, 4.0, 8.0, 8.0, 8.0, 16.0, 16.0]
    assert scaler.state_dict()["_growth_tracker"] == 1


def test_scale_does_not_grow_to_inf():
    scales, _, _ = run_dtrain([[1.0, 1.0, 1.0]] * 2, init_scale=2.0**127, growth_interval=1)
    assert scales == [2.0**127, 2.0**127]


def make(grads, dtype=np.float32):
    params = [dt.tensor(np.zeros(len(g), dtype), requires_grad=True) for g in grads]
    for p, g in zip(params, grads):
        p.grad = dt.tensor(np.array(g, dtype))
    return params, dt.optim.SGD(params, lr=1.0)


def test_unscale_divides_in_place_before_clipping():
    scaler = dt.amp.GradScaler("cpu", init_scale=4.0)
    (p,), opt = make([[4.0, -8.0]])
    array = p.grad._array
    scaler.unscale_(opt)
    assert p.grad._array is array  # in place: views into DDP's buckets stay views
    np.testing.assert_array_equal(p.grad.numpy(), [1.0, -2.0])
    scaler.step(opt)  # does not unscale again
    np.testing.assert_array_equal(p.detach().numpy(), [-1.0, 2.0])
    scaler.update()


def test_call_order_errors():
    scaler = dt.amp.GradScaler("cpu")
    _, opt = make([[1.0]])
    scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match="already been called"):
        scaler.unscale_(opt)
    scaler.step(opt)
    with pytest.raises(RuntimeError, match="after step"):
        scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match="already been called since the last update"):
        scaler.step(opt)
    scaler.update()
    with pytest.raises(RuntimeError, match="no inf checks"):
        scaler.update()
    with pytest.raises(RuntimeError, match="closure"):
        scaler.step(opt, closure=lambda: 0.0)
    empty = dt.optim.SGD([dt.tensor([1.0], requires_grad=True)], lr=1.0)
    with pytest.raises(RuntimeError, match="no inf checks"):
        scaler.step(empty)


def test_float16_gradients_are_refused():
    _, opt = make([[1.0]], dtype=np.float16)
    with pytest.raises(ValueError, match="float16 gradients"):
        dt.amp.GradScaler("cpu").unscale_(opt)


def test_one_host_read_per_step(monkeypatch):
    reads = []
    real = grad_scaler_module.read_found_inf
    monkeypatch.setattr(
        grad_scaler_module, "read_found_inf", lambda probes: reads.append(1) or real(probes)
    )
    scaler = dt.amp.GradScaler("cpu")
    _, opt = make([[1.0, 2.0], [INF]])
    _, opt2 = make([[3.0]])
    for _ in range(3):
        scaler.step(opt)
        scaler.step(opt2)
        scaler.update()
    assert len(reads) == 6  # one per optimizer step; update reuses them
    scaler.unscale_(opt)
    scaler.update()  # no step: update reads once
    assert len(reads) == 7


def test_scale_outputs_and_update_with_new_scale():
    scaler = dt.amp.GradScaler("cpu", init_scale=3.0)
    a, b = dt.tensor([1.0, 2.0]), dt.tensor(4.0)
    np.testing.assert_array_equal(scaler.scale(a).numpy(), [3.0, 6.0])
    pair = scaler.scale((a, b))
    assert isinstance(pair, tuple) and pair[1].item() == 12.0
    assert [t.item() for t in scaler.scale([b, b])] == [12.0, 12.0]
    assert [t.item() for t in scaler.scale(iter([b]))] == [12.0]
    with pytest.raises(ValueError, match="Tensor or an iterable"):
        scaler.scale(2.0)
    scaler.update(new_scale=0.1)
    assert scaler.get_scale() == float(np.float32(0.1))
    scaler.update(dt.tensor([256.0]))
    assert scaler.get_scale() == 256.0
    with pytest.raises(TypeError, match="new_scale"):
        scaler.update("big")


def test_disabled_scaler_passes_through():
    scaler = dt.amp.GradScaler("cpu", enabled=False)
    (p,), opt = make([[2.0]])
    loss = dt.tensor(5.0)
    assert scaler.scale(loss) is loss
    scaler.unscale_(opt)
    scaler.step(opt)
    scaler.update()
    assert p.item() == -2.0 and scaler.get_scale() == 1.0 and not scaler.is_enabled()
    assert scaler.state_dict() == {}
    scaler.load_state_dict({})  # ignored, as in PyTorch


@pytest.mark.skipif(dt.cuda_is_available(), reason="checks the machine without CUDA")
def test_cuda_scaler_without_cuda_warns_and_disables():
    with pytest.warns(UserWarning, match="CUDA is not available"):
        scaler = dt.amp.GradScaler()
    assert not scaler.is_enabled()


def test_bad_arguments():
    for options, match in (
        ({"device": "tpu"}, "device"),
        ({"init_scale": 0.0}, "init_scale"),
        ({"growth_factor": 0.5}, "growth_factor"),
        ({"backoff_factor": 1.5}, "backoff_factor"),
        ({"growth_interval": 0}, "growth_interval"),
    ):
        with pytest.raises(ValueError, match=match):
            dt.amp.GradScaler(**{"device": "cpu", **options})


def test_state_dict_round_trips_through_a_checkpoint(tmp_path):
    _, _, scaler = run_dtrain(SCRIPT[:8], init_scale=1000.0, growth_factor=1.7, growth_interval=3)
    state = scaler.state_dict()
    assert json.loads(json.dumps(state)) == state
    path = tmp_path / "ckpt.safetensors"
    dt.save({"scaler": state}, path)
    restored = dt.amp.GradScaler("cpu")
    restored.load_state_dict(dt.load(path)["scaler"])
    assert restored.state_dict() == state
    assert restored.get_growth_factor() == 1.7 and restored.get_growth_interval() == 3
    with pytest.raises(RuntimeError, match="empty"):
        restored.load_state_dict({})
    with pytest.raises(KeyError, match="growth_interval"):
        restored.load_state_dict({"scale": 1.0, "growth_factor": 2.0, "backoff_factor": 0.5})


def test_state_dict_loads_into_torch(tmp_path):
    torch = pytest.importorskip("torch")
    _, _, scaler = run_dtrain(SCRIPT[:5], init_scale=512.0, growth_interval=2)
    theirs = torch.amp.GradScaler("cpu")
    theirs.load_state_dict(scaler.state_dict())
    assert theirs.get_scale() == scaler.get_scale()
    assert theirs.state_dict() == scaler.state_dict()
