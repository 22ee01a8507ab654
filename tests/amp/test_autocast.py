"""autocast: the dtype each op category runs in, gradients, nesting, the decorator, threads,
the parameter-cast cache, and dtype errors; on the CPU (numpy float16), with GPU variants."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import dtrain as dt
import dtrain.nn.functional as F
from dtrain import nn

f16, f32, f64 = dt.float16, dt.float32, dt.float64
needs_gpu = pytest.mark.skipif(not dt.cuda_is_available(), reason="needs a CUDA GPU and cupy")


def rand(*shape: int, seed: int = 0, dtype=np.float32, grad: bool = False) -> dt.Tensor:
    data = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    return dt.tensor(data, requires_grad=grad)


LOWER_OPS = {
    "matmul": lambda x, w: dt.matmul(x, w.T),
    "@": lambda x, w: x @ w.T,
    "method": lambda x, w: x.matmul(w.T),
    "linear": lambda x, w: F.linear(x, w, w[:, 0]),
    "conv2d": lambda x, w: F.conv2d(x.reshape(1, 2, 4, 4), w.reshape(5, 2, 2, 2)),
    "attention": lambda x, w: F.scaled_dot_product_attention(x, w, w),
}

FLOAT32_OPS = {
    "softmax": lambda h: F.softmax(h, -1),
    "log_softmax": lambda h: F.log_softmax(h, -1),
    "cross_entropy": lambda h: F.cross_entropy(h, dt.tensor([0, 3, 1, 2])),
    "nll_loss": lambda h: F.nll_loss(h, dt.tensor([0, 3, 1, 2])),
    "mse_loss": lambda h: F.mse_loss(h, h.detach() * 0.5),
    "l1_loss": lambda h: F.l1_loss(h, h.detach() * 0.5),
    "bce_logits": lambda h: F.binary_cross_entropy_with_logits(h, (h.detach() > 0).to(h.dtype)),
    "layer_norm": lambda h: F.layer_norm(h, (5,), h[0].detach(), h[1].detach()),
    "batch_norm": lambda h: F.batch_norm(h, None, None, h[0].detach(), h[1].detach(), True),
}


@pytest.mark.parametrize("name", sorted(LOWER_OPS))
def test_matmul_heavy_ops_run_in_float16(name):
    x, w = rand(4, 8, seed=1), rand(5, 8, seed=2)
    op = LOWER_OPS[name]
    assert op(x, w).dtype == f32  # outside a region: untouched
    with dt.autocast("cpu"):
        out = op(x, w)
    assert out.dtype == f16
    expected = op(x.half().float(), w.half().float())  # same rounding of the inputs
    np.testing.assert_allclose(out.float().numpy(), expected.numpy(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("name", sorted(FLOAT32_OPS))
def test_sensitive_ops_run_in_float32(name):
    h = rand(4, 5, seed=3).half()
    op = FLOAT32_OPS[name]
    assert op(h).dtype == f16  # outside a region: the input's dtype
    with dt.autocast("cpu"):
        out = op(h)
    assert out.dtype == f32
    np.testing.assert_allclose(out.numpy(), op(h.float()).numpy(), rtol=1e-6, atol=1e-6)


def test_other_ops_follow_promotion():
    h, x = rand(3, 3, seed=4).half(), rand(3, 3, seed=5)
    with dt.autocast("cpu"):
        assert F.relu(h).dtype == f16
        assert (h + x).dtype == f32
        assert (h * 2.0).dtype == f16
        assert F.linear(x, x).relu().dtype == f16


def test_float64_and_integer_inputs_are_left_alone():
    a, b = rand(3, 4, dtype=np.float64), rand(4, 2, dtype=np.float64)
    with dt.autocast("cpu"):
        assert (a @ b).dtype == f64
        assert F.softmax(a, -1).dtype == f64
        assert F.cross_entropy(a, dt.tensor([0, 1, 3])).dtype == f64


def test_a_cuda_region_leaves_cpu_tensors_alone():
    x = rand(2, 3)
    with dt.autocast("cuda"):
        assert dt.is_autocast_enabled("cuda") and not dt.is_autocast_enabled("cpu")
        assert (x @ x.T).dtype == f32


def test_gradients_come_back_in_float32():
    w = rand(4, 3, seed=6, grad=True)
    b = rand(4, seed=7, grad=True)
    x = rand(5, 3, seed=8)
    with dt.autocast("cpu"):
        logits = F.linear(x, w, b)
        loss = F.cross_entropy(logits, dt.tensor([0, 1, 2, 3, 0]))
    assert logits.dtype == f16 and loss.dtype == f32
    loss.backward()
    assert w.grad.dtype == f32 and b.grad.dtype == f32
    # The same loss in full precision: gradients agree to float16 accuracy.
    w32, b32 = w.detach().requires_grad_(), b.detach().requires_grad_()
    F.cross_entropy(F.linear(x, w32, b32), dt.tensor([0, 1, 2, 3, 0])).backward()
    np.testing.assert_allclose(w.grad.numpy(), w32.grad.numpy(), atol=5e-3)
    np.testing.assert_allclose(b.grad.numpy(), b32.grad.numpy(), atol=5e-3)


def test_float16_gradient_flows_through_float32_op():
    h = rand(3, 4, seed=9).half().requires_grad_()
    with dt.autocast("cpu"):
        out = F.log_softmax(h, -1)
    out.sum().backward()
    assert out.dtype == f32 and h.grad.dtype == f16


def test_nesting_and_disabled_inner_region():
    x = rand(2, 2)
    assert not dt.is_autocast_enabled("cpu")
    with dt.autocast("cpu"):
        assert (x @ x).dtype == f16
        with dt.autocast("cpu", enabled=False):
            assert not dt.is_autocast_enabled("cpu")
            assert (x @ x).dtype == f32
            with dt.autocast("cpu"):
                assert (x @ x).dtype == f16
            assert (x @ x).dtype == f32
        assert dt.is_autocast_enabled("cpu")
        with dt.autocast("cuda"):
            assert (x @ x).dtype == f16  # the cpu region is still open
        assert (x @ x).dtype == f16
    assert not dt.is_autocast_enabled("cpu")
    assert (x @ x).dtype == f32


def test_state_is_restored_after_an_exception():
    with pytest.raises(KeyError), dt.autocast("cpu"):
        raise KeyError("boom")
    assert not dt.is_autocast_enabled("cpu")


def test_decorator():
    @dt.amp.autocast("cpu")
    def forward(a):
        return a @ a, dt.is_autocast_enabled("cpu")

    x = rand(2, 2)
    out, enabled = forward(x)
    assert out.dtype == f16 and enabled
    assert not dt.is_autocast_enabled("cpu")
    assert (x @ x).dtype == f32
    # Re-entrant: the decorated function may call itself (each call its own region).
    assert forward(forward(x)[0].float())[0].dtype == f16


def test_state_is_per_thread():
    seen = {}

    def other():
        seen["enabled"] = dt.is_autocast_enabled("cpu")
        seen["dtype"] = (rand(2, 2) @ rand(2, 2)).dtype

    with dt.autocast("cpu"):
        worker = threading.Thread(target=other)
        worker.start()
        worker.join()
        assert (rand(2, 2) @ rand(2, 2)).dtype == f16
    assert seen == {"enabled": False, "dtype": f32}


def _cast_node(out: dt.Tensor, index: int) -> object:
    """The graph node that fed input ``index`` of ``out``'s op (the Cast of a parameter)."""
    return out.grad_fn.parents[index]


def test_cache_reuses_one_cast_per_parameter():
    w = rand(3, 3, seed=10, grad=True)
    x = rand(2, 3, seed=11)
    with dt.autocast("cpu"):
        a, b = F.linear(x, w), F.linear(x, w)
        first_cast = _cast_node(a, 1)
        assert first_cast is not None and first_cast is _cast_node(b, 1)
        (a.float().sum() + b.float().sum()).backward()
    # Both uses reach w through the one cast: twice the gradient of one use.
    w1 = w.detach().requires_grad_()
    with dt.autocast("cpu"):
        F.linear(x, w1).float().sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), 2 * w1.grad.numpy(), rtol=1e-6)
    with dt.autocast("cpu"):
        c = F.linear(x, w)
    assert _cast_node(c, 1) is not first_cast  # the cache died with the region


def test_cache_off_and_non_leaves_cast_each_time():
    w = rand(3, 3, seed=12, grad=True)
    x = rand(2, 3, seed=13)
    with dt.autocast("cpu", cache_enabled=False):
        assert _cast_node(F.linear(x, w), 1) is not _cast_node(F.linear(x, w), 1)
    with dt.autocast("cpu"):
        v = w * 1.0  # not a leaf: never cached
        assert _cast_node(F.linear(x, v), 1) is not _cast_node(F.linear(x, v), 1)


def test_cache_sees_in_place_updates_and_freed_graphs():
    w = rand(3, 3, seed=14, grad=True)
    x = rand(2, 3, seed=15)
    opt = dt.optim.SGD([w], lr=0.5)
    with dt.autocast("cpu"):  # a whole training loop inside one region
        for _ in range(3):
            opt.zero_grad()
            out = F.linear(x, w)
            expected = x.numpy() @ w.detach().numpy().T
            np.testing.assert_allclose(out.float().detach().numpy(), expected, atol=2e-2)
            (out.float() ** 2).sum().backward()  # frees the cast's graph node
            assert w.grad is not None and np.abs(w.grad.numpy()).sum() > 0
            opt.step()  # changes w in place: the cached copy is stale


def test_cache_recasts_after_an_in_place_change():
    w = rand(3, 3, seed=22, grad=True)
    x = rand(2, 3, seed=23)
    with dt.autocast("cpu"):
        before = F.linear(x, w)
        with dt.no_grad():
            w.mul_(2.0)  # no backward in between: only the version counter tells
        after = F.linear(x, w)
    np.testing.assert_allclose(after.float().detach().numpy(), 2 * before.float().detach().numpy())


def test_cache_recasts_after_backward_freed_the_graph():
    w = rand(3, 3, seed=20, grad=True)
    x = rand(2, 3, seed=21)
    with dt.autocast("cpu"):
        F.linear(x, w).float().sum().backward()
        first = w.grad.numpy().copy()
        w.grad = None
        F.linear(x, w).float().sum().backward()  # same parameter, same region, new graph
    np.testing.assert_array_equal(w.grad.numpy(), first)


def test_cache_is_per_grad_mode():
    w = rand(3, 3, seed=16, grad=True)
    x = rand(2, 3, seed=17)
    with dt.autocast("cpu"):
        with dt.no_grad():
            F.linear(x, w)
        out = F.linear(x, w)
    assert out.requires_grad
    out.float().sum().backward()
    assert w.grad is not None


def test_dtype_errors():
    with pytest.raises(TypeError, match="numpy has no bfloat16"):
        dt.autocast("cpu", dtype="bfloat16")
    with pytest.raises(TypeError, match="bfloat16"):
        dt.autocast("cpu", dtype="bf16")
    if not dt.cuda_is_available():
        with pytest.raises(TypeError, match="cupy has no bfloat16"):
            dt.autocast("cuda", dtype="bfloat16")
    with pytest.raises(ValueError, match="lower-precision"):
        dt.autocast("cpu", dtype=dt.float32)
    with pytest.raises(ValueError, match="'cpu' or 'cuda'"):
        dt.autocast("cuda:0")
    dt.autocast("cpu", dtype="bfloat16", enabled=False)  # a disabled region never casts
    assert dt.get_autocast_dtype("cpu") == f16


@pytest.mark.parametrize(
    "device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, needs_gpu])]
)
def test_linear_gradients_are_float32_sums_of_float16_products(device):
    # A Linear layer's float32 weight and bias, cast to float16 by autocast, get float32
    # gradients summed from the float16 operands, never rounded to float16 on the way: here
    # the weight's gradient is past float16's range, where a float16 product holds inf. On
    # CUDA both come out of one cuBLASLt call.
    rng = np.random.default_rng(3)
    x = rng.standard_normal((64, 8)).astype(np.float32) * 100
    grad = rng.standard_normal((64, 4)).astype(np.float16) * 100
    layer = nn.Linear(8, 4).to(device)
    with dt.autocast(device):
        out = layer(dt.tensor(x, device=device))
    assert out.dtype == f16
    out.backward(dt.tensor(grad, device=device))
    expected_w = np.matmul(grad.T, x.astype(np.float16), dtype=np.float64)
    assert np.abs(expected_w).max() > 65504
    assert layer.weight.grad.dtype == layer.bias.grad.dtype == f32
    got_w, got_b = layer.weight.grad.cpu().numpy(), layer.bias.grad.cpu().numpy()
    np.testing.assert_allclose(got_w, expected_w, rtol=1e-5, atol=0.05)
    np.testing.assert_allclose(got_b, grad.sum(0, dtype=np.float64), rtol=1e-3)
    # a float16 input that wants its gradient gets it in float16, as before
    x16 = dt.tensor(x.astype(np.float16) / 100, requires_grad=True, device=device)
    with dt.autocast(device):
        layer(x16).sum().backward()
    assert x16.grad.dtype == f16


def test_a_bias_alone_gets_its_float32_gradient_too():
    grad = np.full((64, 4), 2000.0, np.float16)  # column sums of 128000: past float16
    layer = nn.Linear(8, 4)
    layer.weight.requires_grad_(False)
    with dt.autocast("cpu"):
        layer(dt.ones(64, 8)).backward(dt.tensor(grad))
    assert layer.bias.grad.dtype == f32
    np.testing.assert_array_equal(layer.bias.grad.numpy(), np.full(4, 128000.0))


def test_a_float16_tensor_of_the_users_gets_float16_gradients():
    # Only autocast's own casts take float32 gradients: a tensor the user cast (and can
    # hook, retain or ask autograd.grad about) gets gradients of its own dtype.
    w = dt.randn(4, 3, requires_grad=True)
    x = dt.randn(5, 3).half()
    half = w.half()
    half.retain_grad()
    seen = []
    half.register_hook(lambda grad: seen.append(grad.dtype))
    F.linear(x, half).sum().backward()
    assert half.grad.dtype == f16 and seen == [f16] and w.grad.dtype == f32
    half = w.half()
    assert dt.autograd.grad(F.linear(x, half).sum(), [half])[0].dtype == f16


def test_mlp_trains_under_autocast_with_grad_scaler():
    dt.manual_seed(0)
    rng = np.random.default_rng(0)
    x = dt.tensor(rng.standard_normal((128, 8)).astype(np.float32))
    y = dt.tensor((x.numpy()[:, :4].sum(1) > 0).astype(np.int64) + 2 * (x.numpy()[:, 4] > 0))
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
    opt = dt.optim.Adam(model.parameters(), lr=1e-2)
    # 2**24 overflows the float16 gradient of the logits (up to 2**24 / 128 > 65504)
    scaler = dt.amp.GradScaler("cpu", init_scale=2.0**24, growth_interval=10)
    losses, scales = [], []
    for _ in range(150):
        opt.zero_grad()
        with dt.autocast("cpu"):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
        assert logits.dtype == f16 and loss.dtype == f32
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(loss.item())
        scales.append(scaler.get_scale())
    assert all(p.dtype == f32 and p.grad.dtype == f32 for p in model.parameters())
    assert min(scales) < 2.0**24  # the scaler backed off
    assert losses[-1] < 0.3 * losses[0], losses[::15]
    accuracy = (model(x).argmax(-1) == y).float().mean().item()
    assert accuracy > 0.9


@pytest.mark.gpu
@needs_gpu
def test_cuda_region_casts_cuda_tensors():
    w = rand(16, 8, seed=18).cuda().requires_grad_()
    x = rand(4, 8, seed=19).cuda()
    cpu_x = rand(4, 8, seed=19)
    with dt.autocast("cuda"):
        out = F.linear(x, w)
        loss = F.cross_entropy(out, dt.tensor([0, 1, 2, 3]).cuda())
        assert (cpu_x @ cpu_x.T).dtype == f32  # the cpu state is off
        attn = F.scaled_dot_product_attention(x[None], x[None], x[None], is_causal=True)
    assert out.dtype == f16 and out.is_cuda and loss.dtype == f32 and attn.dtype == f16
    loss.backward()
    assert w.grad.dtype == f32 and w.grad.is_cuda
    reference = x.cpu().numpy() @ w.detach().cpu().numpy().T
    np.testing.assert_allclose(out.detach().float().cpu().numpy(), reference, rtol=1e-2, atol=1e-2)


@pytest.mark.gpu
@needs_gpu
def test_cuda_mlp_trains_under_autocast_with_grad_scaler():
    dt.manual_seed(0)
    rng = np.random.default_rng(0)
    x = dt.tensor(rng.standard_normal((256, 16)).astype(np.float32)).cuda()
    y = dt.tensor((rng.standard_normal(256) > 0).astype(np.int64))
    y = (y + 2 * dt.tensor((x.cpu().numpy()[:, 0] > 0).astype(np.int64))).cuda()
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4)).to("cuda")
    opt = dt.optim.Adam(model.parameters(), lr=1e-2)
    scaler = dt.amp.GradScaler("cuda")
    first = None
    for _ in range(60):
        opt.zero_grad()
        with dt.autocast("cuda"):
            loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        first = loss.item() if first is None else first
    assert loss.item() < 0.8 * first


def test_graphs_of_one_region_backpropagate_one_after_another():
    # Both forwards share autocast's cast of the weight; each backward walks it.
    layer = nn.Linear(3, 2)
    with dt.autocast("cpu"):
        first = layer(dt.ones(1, 3)).float().sum()
        second = layer(dt.ones(1, 3) * 2).float().sum()
    first.backward()
    second.backward()
    np.testing.assert_allclose(layer.weight.grad.numpy(), np.full((2, 3), 3.0))
