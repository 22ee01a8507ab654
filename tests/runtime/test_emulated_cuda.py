"""Whole training steps down dtrain's CUDA paths, on the CPU (``cuda_emulator``): the same
numbers as the CPU paths, no host read inside a step, and the launches each step costs.
Each test runs twice: with every kernel launch carried out by its numpy reference, then by
the kernel's own CUDA C compiled for the CPU (``host_cuda``).

The launch counts are upper bounds, measured with this emulator: a change that adds
launches to these steps fails here, and one that removes some should lower the bound.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import host_cuda
import numpy as np
import pytest
from cuda_emulator import Emulator, install

import dtrain as dt
import dtrain.nn.functional as F
from dtrain import nn
from dtrain.runtime.kernels import attention as attention_kernels

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(params=["references", "source"])
def emulator(monkeypatch, request):
    """The emulator with each kernel launch carried out by its numpy reference, then again
    by the kernel's own CUDA C compiled for the CPU (``host_cuda``; needs g++)."""
    if request.param == "source" and host_cuda.compiler() is None:
        pytest.skip("no g++ to run the kernels' CUDA C on the CPU")
    return install(monkeypatch, kernels=request.param)


def _example(name):
    """``examples/<name>.py`` as a module (it imports its sibling ``common``)."""
    spec = importlib.util.spec_from_file_location(f"{name}_example", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(EXAMPLES))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(EXAMPLES))
    return module


def _gpt_step(model, capturable=False):
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}]
    optimizer = dt.optim.AdamW(groups, lr=3e-3, betas=(0.9, 0.99), capturable=capturable)

    def step(x, y):
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        dt.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss

    return step


@pytest.mark.parametrize("capturable", [False, True], ids=["host-step", "capturable"])
def test_char_gpt_steps_match_the_cpu_and_count_their_launches(emulator, capturable):
    char_gpt = _example("char_gpt")
    sizes = (16, 8, 16, 2, 2)  # vocab, context, embed, layers, heads
    dt.manual_seed(0)
    cpu_model = char_gpt.GPT(*sizes, dropout=0.0)
    gpu_model = char_gpt.GPT(*sizes, dropout=0.0)
    gpu_model.load_state_dict(cpu_model.state_dict())
    gpu_model.to("cuda")
    assert all(p.is_cuda for p in gpu_model.parameters())
    windows = np.random.default_rng(1).integers(0, sizes[0], size=(4, sizes[1] + 1))
    x, y = windows[:, :-1].copy(), windows[:, 1:].copy()
    cpu_step, gpu_step = _gpt_step(cpu_model), _gpt_step(gpu_model, capturable)
    xc, yc = dt.tensor(x, device="cuda"), dt.tensor(y, device="cuda")
    for _ in range(2):
        expected = cpu_step(dt.tensor(x), dt.tensor(y)).item()
        got = gpu_step(xc, yc).item()
        assert got == pytest.approx(expected, rel=1e-5)
    with emulator.counting() as launches:
        loss = gpu_step(xc, yc)
    assert loss.item() == pytest.approx(cpu_step(dt.tensor(x), dt.tensor(y)).item(), rel=1e-5)
    for p, q in zip(gpu_model.parameters(), cpu_model.parameters()):
        np.testing.assert_allclose(p.detach().cpu().numpy(), q.detach().numpy(), atol=2e-5)
    assert not [name for name in launches if name.startswith("host read")], launches
    fused = {
        "kernel layer_norm_forward": 5, "kernel layer_norm_backward": 5,
        "kernel layer_norm_param_grads_finish": 0,
        "kernel attention_forward": 2, "kernel attention_backward_rows": 2,
        "kernel attention_backward_columns": 2,
        "kernel gelu_forward": 2, "kernel gelu_backward": 2,
        "kernel cross_entropy_forward": 1, "kernel cross_entropy_backward": 1,
        "kernel sum_squares_multi_tensor": 1, "kernel clip_multi_tensor": 1,
    }  # fmt: skip
    assert {name: launches[name] for name in fused} == fused
    # A block: 4 linears with a bias, each a product with the bias in its epilogue forward
    # and backward (weight and bias gradients) and a plain one for the input's gradient;
    # attention is its own kernels. The head: no bias, 3 plain products.
    assert launches["cuBLASLt gemm + epilogue"] == 2 * 4 * 2
    assert launches["cuBLAS gemm"] == 2 * 4 + 3
    # The one sum left is the position embedding's, broadcast over the batch: no bias
    # gradient is a separate reduction.
    assert launches["add.reduce"] == 1
    total = Emulator.total(launches)
    print(f"launches per step: {total}: {dict(launches.most_common())}")
    # The adds left are the forward's (the embeddings, the residuals): the backward's
    # residual sums ride in LayerNorm's kernel, and the tied table's in its scatter.
    assert launches["add.__call__"] == 5
    # The embeddings' gradients: one launch per table (the token table's adds the head's).
    assert launches["kernel embedding_backward"] == 2 and not launches["scatter_add"]
    # Attention writes the gradients of the split qkv projection's thirds into one array,
    # which is the projection's gradient as it lies: nothing gathers the three pieces.
    assert not launches["kernel tile_multi_tensor"] and not launches["setitem"]
    # The embedding lookups: a gather each (the token table's and the position table's).
    assert launches["gather"] == 2
    assert total <= (66 if capturable else 64), dict(launches.most_common())
    assert not launches["ones_like"]  # backward's implicit 1 is kept from the first step


def test_mixed_precision_mlp_steps_match_the_cpu(emulator):
    # autocast(float16) + GradScaler + SGD with momentum: the unscale kernel and the fused
    # SGD on the CUDA path; the same losses and parameters as the CPU path in float16.
    dt.manual_seed(0)
    models = {d: nn.Sequential(nn.Linear(6, 16), nn.GELU(), nn.Linear(16, 3)) for d in ("cpu",)}
    models["cuda"] = nn.Sequential(nn.Linear(6, 16), nn.GELU(), nn.Linear(16, 3))
    models["cuda"].load_state_dict(models["cpu"].state_dict())
    models["cuda"].to("cuda")
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((8, 6)).astype(np.float32), rng.integers(0, 3, 8)
    losses = {}
    for device, model in models.items():
        optimizer = dt.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        scaler = dt.amp.GradScaler(device, init_scale=2.0**10)
        xd, yd = dt.tensor(x, device=device), dt.tensor(y, device=device)
        losses[device] = []
        for _ in range(3):
            optimizer.zero_grad()
            with dt.autocast(device, dtype=dt.float16):
                loss = F.cross_entropy(model(xd), yd)
            with emulator.counting() as launches:
                scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            losses[device].append(loss.item())
    # The layers' weight and bias gradients come out of their products in float32: the
    # one cast left in backward is the loss's (its float32 gradient to the float16 logits).
    assert launches["astype"] == 1, dict(launches)
    np.testing.assert_allclose(losses["cuda"], losses["cpu"], rtol=2e-3)
    for p, q in zip(models["cuda"].parameters(), models["cpu"].parameters()):
        np.testing.assert_allclose(p.detach().cpu().numpy(), q.detach().numpy(), atol=2e-3)


def test_an_overflowing_step_is_skipped_on_the_cuda_path(emulator):
    param = dt.tensor(np.ones(3, np.float32), device="cuda", requires_grad=True)
    optimizer = dt.optim.SGD([param], lr=1.0)
    scaler = dt.amp.GradScaler("cuda", init_scale=4.0)
    for row, moved in (([1.0, np.inf, 1.0], False), ([1.0, 2.0, 3.0], True)):
        before = param.detach().cpu().numpy().copy()
        optimizer.zero_grad()
        scaler.scale((param * dt.tensor(np.array(row, np.float32), device="cuda")).sum()).backward()
        with emulator.counting() as launches:
            scaler.step(optimizer)
        assert launches["kernel unscale_multi_tensor"] == 1
        assert launches["host read: float"] == 1  # the one read of the inf flag per step
        if moved:  # (the first step made the stream's done counter, once)
            assert not launches["zeros"] and not launches["fill"]  # the kernel sets the flag
        scaler.update()
        assert moved == (not np.array_equal(param.detach().cpu().numpy(), before))
    assert scaler.get_scale() == 2.0  # backed off once


def test_autocast_casts_the_parameters_its_last_region_cast_in_one_launch(emulator):
    dt.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)).to("cuda")
    optimizer = dt.optim.SGD(model.parameters(), lr=0.1)
    x = dt.tensor(np.random.default_rng(3).standard_normal((8, 6)).astype(np.float32))
    x = x.to("cuda")
    for step in range(3):
        optimizer.zero_grad()
        with emulator.counting() as launches, dt.autocast("cuda"):
            out = model(x)
            copies = {id(p): entry[-1] for p in model.parameters()
                      for entry in [dt._tensor.amp.autocast_mode.state.cache[id(p)]]}  # fmt: skip
        if step == 0:  # one cast per parameter, and the input's
            assert launches["astype"] == 5 and not launches["kernel cast_multi_tensor"]
        else:  # the four parameters at once, at the first one's cast
            assert launches["astype"] == 1 and launches["kernel cast_multi_tensor"] == 1
        for p in model.parameters():  # the copies hold the parameters as they are now
            got = copies[id(p)].detach().cpu().numpy()
            np.testing.assert_array_equal(got, p.detach().cpu().numpy().astype(np.float16))
        out.float().sum().backward()
        assert all(p.grad.dtype == np.float32 for p in model.parameters())
        optimizer.step()
    # a parameter frozen since is cast on its own when used; the others still at once
    model[2].weight.requires_grad_(False)
    with emulator.counting() as launches, dt.autocast("cuda"):
        model(x)
    assert launches["kernel cast_multi_tensor"] == 1 and launches["astype"] == 2
    # a region that uses another model's parameters casts only those, one by one
    other = nn.Linear(6, 2).to("cuda")
    with emulator.counting() as launches, dt.autocast("cuda"):
        other(x)
    assert not launches["kernel cast_multi_tensor"] and launches["astype"] == 3
    # the last region's parameters are held weakly: a deleted model is not kept
    del model, optimizer, out, copies, p, other
    import gc

    gc.collect()
    assert all(ref() is None for ref in dt._tensor.amp.autocast_mode.state.recent.values())
    with dt.autocast("cuda"):
        assert nn.Linear(6, 2).to("cuda")(x).dtype == np.float16


def test_the_parameters_cast_at_once_are_those_the_last_region_used(emulator):
    # A backbone and two heads, one head per region: a region casts in advance what the
    # one before it used (at most one head too many), and the set never grows.
    state = dt._tensor.amp.autocast_mode.state
    backbone, heads = nn.Linear(6, 8).to("cuda"), [nn.Linear(8, 2).to("cuda") for _ in range(2)]
    x = dt.ones(4, 6, device="cuda")

    def region(head: int) -> set:
        with dt.autocast("cuda"):
            heads[head](backbone(x))
            return set(state.cache)

    def ids(*modules) -> set:
        return {id(p) for m in modules for p in m.parameters()}

    region(0), region(1)
    assert region(0) == ids(backbone, *heads)  # head 1 cast in advance, unused
    assert region(0) == ids(backbone, heads[0])  # only what the last region used


def test_a_parameter_replaced_after_the_casts_at_once_is_cast_anew(emulator):
    # p.data = ... (or Module.to) swaps the array without an in-place change: the copy made
    # in advance no longer stands for the parameter.
    first, second = nn.Linear(4, 4).to("cuda"), nn.Linear(4, 4).to("cuda")
    x = dt.ones(2, 4, device="cuda")
    with dt.autocast("cuda"):
        second(first(x))
    with dt.autocast("cuda"):
        hidden = first(x)  # casts both layers' parameters at once
        second.weight.data = dt.zeros(4, 4, device="cuda")
        out = second(hidden)
    expected = np.broadcast_to(second.bias.detach().cpu().numpy(), (2, 4)).astype(np.float16)
    np.testing.assert_array_equal(out.detach().cpu().numpy(), expected)


def test_one_flag_serves_the_gradients_of_two_dtypes(emulator):
    # One unscale launch per dtype, one flag per device: an inf in either group skips the
    # step, whichever launch saw it.
    for bad in (0, 1, None):
        params = [
            dt.tensor(np.ones(3, dtype), device="cuda", requires_grad=True)
            for dtype in (np.float32, np.float64)
        ]
        optimizer = dt.optim.SGD(params, lr=1.0)
        scaler = dt.amp.GradScaler("cuda", init_scale=4.0)
        loss = 0
        for index, param in enumerate(params):
            row = [1.0, np.inf if index == bad else 2.0, 3.0]
            loss = loss + (param * dt.tensor(np.array(row, param.dtype), device="cuda")).sum()
        scaler.scale(loss).backward()
        with emulator.counting() as launches:
            scaler.step(optimizer)
        assert launches["kernel unscale_multi_tensor"] == 2
        moved = [not np.array_equal(p.detach().cpu().numpy(), np.ones(3)) for p in params]
        assert moved == [bad is None] * 2


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "composed"])
@pytest.mark.parametrize("lengths", [(3, 5), (5, 3), (4, 4)], ids=str)
def test_attention_on_the_cuda_path_matches_the_cpu(emulator, monkeypatch, lengths, fused, causal):
    # q, k, v as (batch, heads, length, dim) views of (batch, length, heads, dim) arrays, as
    # heads split out of a projection are; the fused kernels read them where they lie.
    if not fused:  # sequences too long for the fused kernels take the composed path
        monkeypatch.setattr(attention_kernels, "MAX_LENGTH", 2)
    rng = np.random.default_rng(3)
    length, keys = lengths
    arrays = [rng.standard_normal((2, n, 3, 4)) for n in (length, keys, keys)]
    upstream = rng.standard_normal((2, 3, length, 4))
    results = {}
    for device in ("cpu", "cuda"):
        leaves = [dt.tensor(a, device=device, requires_grad=True) for a in arrays]
        q, k, v = (t.transpose(1, 2) for t in leaves)
        with emulator.counting() as forward:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        with emulator.counting() as backward:
            (out * dt.tensor(upstream, device=device)).sum().backward()
        results[device] = [t.detach().cpu().numpy() for t in (out, *(t.grad for t in leaves))]
    if fused:  # one launch, no copies of the views; two launches back, no matrix products
        assert dict(forward) == {"kernel attention_forward": 1}
        assert backward["kernel attention_backward_rows"] == 1
        assert backward["kernel attention_backward_columns"] == 1
        assert "cuBLAS gemm" not in backward
    else:
        assert forward["kernel scaled_softmax_forward"] == 1
    for got, expected in zip(results["cuda"], results["cpu"]):
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_examples_train_on_the_cuda_device(emulator, tmp_path, monkeypatch):
    # --device auto picks the (emulated) GPU; model, batches, evaluation, checkpoints and
    # sampling all run there.
    monkeypatch.syspath_prepend(str(EXAMPLES))
    mlp = _example("mlp_digits")
    options = ["--epochs", "2", "--quiet", "--hidden", "32", "--lr", "1e-2", "--dropout", "0"]
    on_gpu = mlp.train(mlp.parse(options))
    on_cpu = mlp.train(mlp.parse([*options, "--device", "cpu"]))
    assert next(on_gpu["model"].parameters()).is_cuda
    assert not next(on_cpu["model"].parameters()).is_cuda
    assert on_gpu["loss"] == pytest.approx(on_cpu["loss"], rel=1e-3)
    assert (
        on_gpu["accuracy"] == pytest.approx(on_cpu["accuracy"], abs=0.01)
        and on_gpu["accuracy"] > 0.9
    )
    gpt = _example("char_gpt")
    checkpoint = str(tmp_path / "gpt.safetensors")
    options = ["--steps", "4", "--corpus-chars", "4000", "--block", "8", "--embed", "16",
               "--layers", "1", "--heads", "2", "--eval-every", "2", "--eval-batches", "1",
               "--sample-chars", "5", "--quiet", "--checkpoint", checkpoint]  # fmt: skip
    on_gpu = gpt.train(gpt.parse([*options, "--device", "cuda"]))
    vocab, embed = dt.load(checkpoint)["model"]["head.weight"].shape  # saved from the GPU
    assert embed == 16
    on_cpu = gpt.train(gpt.parse([*options, "--device", "cpu"]))
    assert on_gpu["val_loss"] == pytest.approx(on_cpu["val_loss"], rel=1e-4)
    assert on_gpu["val_loss"] < np.log(vocab)  # below chance after 4 steps


def test_relu_mlp_step_matches_the_cpu_and_counts_its_launches(emulator):
    # The bench's small-MLP step (Linear/ReLU x 3, cross-entropy, SGD) at test sizes.
    dt.manual_seed(0)
    cpu = nn.Sequential(
        nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)
    )
    gpu = nn.Sequential(
        nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)
    )
    gpu.load_state_dict(cpu.state_dict())
    gpu.to("cuda")
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((8, 12)).astype(np.float32), rng.integers(0, 4, 8)
    losses = {}
    for device, model in (("cpu", cpu), ("cuda", gpu)):
        optimizer = dt.optim.SGD(model.parameters(), lr=0.1)
        xd, yd = dt.tensor(x, device=device), dt.tensor(y, device=device)
        for _ in range(3):
            with emulator.counting() as launches:
                optimizer.zero_grad(set_to_none=True)
                loss = F.cross_entropy(model(xd), yd)
                loss.backward()
                optimizer.step()
            losses.setdefault(device, []).append(loss.item())
    np.testing.assert_allclose(losses["cuda"], losses["cpu"], rtol=1e-6)
    # 3 products forward with their biases (and the ReLUs: Sequential runs a Linear and a
    # ReLU as one op, the ReLU in the product's epilogue), 5 backward (3 with the bias
    # gradients), 2 ReLU backwards, cross-entropy 2 (the loss with its mean, the
    # gradient), one SGD launch (the backward's implicit 1 is kept from the first step).
    assert launches["kernel relu_backward"] == 2 and not launches["maximum"]
    assert launches["cuBLASLt gemm + epilogue"] == 6
    assert launches["kernel cross_entropy_mean"] == 0
    assert Emulator.total(launches) <= 13, dict(launches.most_common())


def test_cross_entropy_with_every_target_ignored_on_the_cuda_path(emulator):
    x = dt.tensor(np.ones((4, 3), np.float32), device="cuda", requires_grad=True)
    loss = F.cross_entropy(x, dt.tensor([-100] * 4, device="cuda"))
    loss.backward()
    assert np.isnan(loss.item())
    np.testing.assert_array_equal(x.grad.cpu().numpy(), np.zeros((4, 3)))


def test_backward_keeps_its_implicit_one_out_of_reach_of_hooks_and_functions(emulator):
    class Doubled(dt.autograd.Function):  # whose backward writes into its gradient
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, grad):
            return grad.mul_(2)

    w = dt.tensor([1.0, 2.0], device="cuda", requires_grad=True)

    def w_grad_of(loss):
        w.grad = None
        loss.backward()
        return w.grad.cpu().tolist()

    with emulator.counting() as launches:
        assert w_grad_of((w * 3).sum()) == [3.0, 3.0]
    assert launches["ones_like"] <= 1  # the first backward on this device may fill one
    with emulator.counting() as launches:
        assert w_grad_of((w * 3).sum()) == [3.0, 3.0]
    assert not launches["ones_like"]
    # Each writes into the gradient it is given; the next backward must still start from 1.
    loss = (w * 3).sum()
    loss.register_hook(lambda g: g.mul_(10))
    assert w_grad_of(loss) == [30.0, 30.0]  # as on the CPU: what the hook changed goes on
    total = (w * 3).sum()
    total.retain_grad()
    assert w_grad_of(total) == [3.0, 3.0] and total.grad.item() == 1.0
    total.grad.mul_(10)
    assert w_grad_of(Doubled.apply(w * 3).sum().reshape(1)) == [6.0, 6.0]
    assert w_grad_of(Doubled.apply((w * 3).sum())) == [6.0, 6.0]
    assert w_grad_of((w * 3).sum()) == [3.0, 3.0]


def test_every_kernel_has_an_emulation():
    from cuda_emulator import KERNELS
    from kernel_signatures import KERNEL_MODULES, signatures

    declared = {name for module in KERNEL_MODULES for name in signatures(module.SOURCE.code)}
    assert declared == set(KERNELS)


def test_changing_the_fused_attention_output_in_place_is_refused(emulator):
    # Its backward reads the output (D = dy . y), as PyTorch's fused attention does.
    q, k, v = (dt.tensor(np.ones((1, 2, 3, 4)), device="cuda", requires_grad=True) for _ in "qkv")
    with emulator.counting() as launches:
        out = F.scaled_dot_product_attention(q, k, v)
    assert launches["kernel attention_forward"] == 1
    with dt.no_grad():
        out.mul_(2.0)
    with pytest.raises(RuntimeError, match="modified by an in-place operation"):
        out.sum().backward()


def test_causal_multihead_attention_takes_the_fused_kernels(emulator):
    mha = nn.MultiheadAttention(8, 2, batch_first=True).to("cuda")
    x = dt.tensor(
        np.random.default_rng(0).standard_normal((2, 5, 8)).astype(np.float32), device="cuda"
    )
    with emulator.counting() as launches:
        mha(x, x, x, need_weights=False, is_causal=True)
    assert launches["kernel attention_forward"] == 1


def test_char_gpt_under_float16_autocast_matches_the_cpu(emulator):
    # The fused attention, LayerNorm, split and bias paths in float16, with a GradScaler.
    char_gpt = _example("char_gpt")
    windows = np.random.default_rng(1).integers(0, 16, size=(4, 9))
    losses = {}
    for device in ("cpu", "cuda"):
        dt.manual_seed(0)
        model = char_gpt.GPT(16, 8, 16, 2, 2, dropout=0.0).to(device)
        optimizer = dt.optim.AdamW(model.parameters(), lr=1e-2)
        scaler = dt.amp.GradScaler(device)
        x = dt.tensor(windows[:, :-1].copy(), device=device)
        y = dt.tensor(windows[:, 1:].copy(), device=device)
        for _ in range(3):
            optimizer.zero_grad()
            with dt.autocast(device, dtype=dt.float16):
                loss = F.cross_entropy(model(x).reshape(-1, 16), y.reshape(-1))
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            losses.setdefault(device, []).append(loss.item())
    np.testing.assert_allclose(losses["cuda"], losses["cpu"], rtol=1e-4)
    assert losses["cuda"][-1] < losses["cuda"][0]


def test_uncarried_launches_are_counted_and_leave_their_outputs(monkeypatch):
    # bench/host_cost.py times dtrain's host work with launches counted but not run.
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    counts, outputs = {}, {}
    for mode in ("references", "uncarried"):
        emulator = install(monkeypatch, kernels=mode)
        layer_norm = nn.LayerNorm(8).to("cuda")
        with emulator.counting() as launches:
            out = layer_norm(dt.tensor(x, device="cuda"))
        counts[mode], outputs[mode] = dict(launches), out.detach().cpu().numpy()
    assert counts["uncarried"] == counts["references"]
    assert counts["uncarried"]["kernel layer_norm_forward"] == 1
    np.testing.assert_allclose(outputs["references"].std(axis=1), 1, rtol=1e-3)
    # the output was allocated by cupy.empty and never written: not the normalized rows
    assert not np.allclose(outputs["uncarried"], outputs["references"])


def test_optimizers_hold_no_arrays_of_parameters_they_no_longer_step(monkeypatch):
    install(monkeypatch)
    layers = [nn.Linear(3, 3).to("cuda") for _ in range(2)]
    params = [p for layer in layers for p in layer.parameters()]
    for optimizer in (dt.optim.Adam(params), dt.optim.SGD(params, lr=0.1, momentum=0.9)):
        for frozen in (False, True):
            optimizer.zero_grad(set_to_none=True)
            used = layers[0] if frozen else layers[1]
            used(layers[0](dt.ones(2, 3, device="cuda"))).sum().backward()
            if frozen:
                for p in layers[1].parameters():
                    p.grad = None
            optimizer.step()
        known = optimizer._scratch.checks._known
        assert set(known) == set(layers[0].parameters())  # layer 1 was not stepped last
        optimizer.load_state_dict(optimizer.state_dict())
        assert not optimizer._scratch.checks._known


@pytest.mark.parametrize("one_kernel", [True, False], ids=["one-kernel", "scatter"])
def test_embedding_gradients_on_the_cuda_path_match_the_cpu(emulator, monkeypatch, one_kernel):
    from dtrain.runtime.kernels import embedding as embedding_kernels

    if not one_kernel:  # a table too large for every row to scan every index
        monkeypatch.setattr(embedding_kernels, "_MAX_WORK", 0)
    rng = np.random.default_rng(5)
    table = rng.standard_normal((6, 4)).astype(np.float32)
    idx = rng.integers(0, 6, size=(3, 5))
    grads = {}
    for device in ("cpu", "cuda"):
        for tied in (False, True):
            for padding_idx in (None, 2):
                weight = dt.tensor(table, device=device, requires_grad=True)
                i = dt.tensor(idx, device=device)
                out = F.embedding(i, weight, padding_idx=padding_idx)
                if tied:  # the table is also an output layer's weight
                    out = F.linear(out, weight)
                with emulator.counting() as launches:
                    (out * out).sum().backward()
                grads[device, tied, padding_idx] = weight.grad.cpu().numpy()
                if device == "cuda":
                    used = launches["kernel embedding_backward"]
                    assert used == (1 if one_kernel else 0), dict(launches)
    for key in [k for k in grads if k[0] == "cpu"]:
        np.testing.assert_allclose(grads[("cuda", *key[1:])], grads[key], rtol=1e-5, atol=1e-6)


def test_a_missing_device_names_what_the_process_sees_and_its_own(emulator, monkeypatch):
    # the emulator shows one GPU
    with pytest.raises(RuntimeError, match=r"sees 1 CUDA device\(s\); pick an index below"):
        dt.ones(2, device="cuda:1")
    monkeypatch.setenv("DTRAIN_DEVICE", "cuda:0")
    with pytest.raises(RuntimeError, match=r"this rank's device is cuda:0 \(DTRAIN_DEVICE"):
        dt.ones(2, device="cuda:1")


def test_deterministic_mode_sums_large_embeddings_and_padding_in_a_fixed_order(emulator):
    # Without the mode these backwards add with atomics on CUDA; with it, a sorted sum:
    # the same values as the CPU's, and no error (as PyTorch's deterministic versions).
    import dtrain.nn.functional as F

    table_host = np.random.default_rng(0).standard_normal((5000, 4)).astype(np.float32)
    rows_host = np.arange(300) % 7  # 5000 x 300: past the one-launch kernel
    pad_host = np.random.default_rng(1).standard_normal((1, 2, 5)).astype(np.float32)
    grads = {}
    dt.use_deterministic_algorithms(True)
    try:
        for device in ("cpu", "cuda"):
            table = dt.tensor(table_host, device=device, requires_grad=True)
            padded = dt.tensor(pad_host, device=device, requires_grad=True)
            weights = dt.tensor(
                np.arange(300 * 4).reshape(300, 4) % 5, dtype=dt.float32, device=device
            )
            (F.embedding(dt.tensor(rows_host, device=device), table) * weights).sum().backward()
            (F.pad(padded, (2, 2), mode="reflect") * 3).sum().backward()
            grads[device] = (table.grad.cpu().numpy(), padded.grad.cpu().numpy())
    finally:
        dt.use_deterministic_algorithms(False)
    for cpu, cuda in zip(grads["cpu"], grads["cuda"]):
        np.testing.assert_allclose(cuda, cpu, rtol=1e-6)
