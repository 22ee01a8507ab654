"""Every ``nn`` module and loss on CUDA against the same on the CPU: the output, the input's
gradient and every parameter's gradient (and BatchNorm's running statistics), in float64.

Marked ``gpu``: on the GPU machine these run on the GPU. Without one they run anyway, down
the same CUDA paths on the CPU (``cuda_emulator``, every kernel launch run by the kernel's
own CUDA C through ``host_cuda``).
"""

from __future__ import annotations

from collections.abc import Callable

import host_cuda
import numpy as np
import pytest
from cuda_emulator import install

import dtrain as dt
from dtrain import nn

pytestmark = pytest.mark.gpu


@pytest.fixture
def cuda(monkeypatch):
    """The real GPU when there is one, else the emulated one."""
    if dt.cuda_is_available():
        return "gpu"
    if host_cuda.compiler() is None:
        pytest.skip("no GPU, and no g++ to run the kernels' CUDA C on the CPU")
    install(monkeypatch, kernels="source")
    return "emulated"


class SelfAttention(nn.Module):
    """``nn.MultiheadAttention`` on one input, returning the output alone."""

    def __init__(self, **options: object) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(8, 2, batch_first=True)
        self.options = options

    def forward(self, x: dt.Tensor) -> dt.Tensor:
        length = x.shape[1]
        options = dict(self.options)
        if options.pop("causal", False):
            mask = np.triu(np.ones((length, length), dtype=bool), 1)
            options["attn_mask"] = dt.tensor(mask, device=x.device)
        return self.attention(x, x, x, **options)[0]


def _floats(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


def _classes(n: int, classes: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, n)


# name: (module factory, inputs factory, index of the input that takes a gradient or None)
CASES: dict[str, tuple[Callable, Callable, int | None]] = {
    "Linear": (lambda: nn.Linear(5, 4), lambda: [_floats(3, 2, 5)], 0),
    "Linear-no-bias": (lambda: nn.Linear(5, 4, bias=False), lambda: [_floats(6, 5)], 0),
    "Conv2d": (lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1), lambda: [_floats(2, 3, 7, 7)], 0),
    "Conv2d-no-bias": (lambda: nn.Conv2d(2, 3, 2, bias=False), lambda: [_floats(1, 2, 5, 4)], 0),
    "MaxPool2d": (lambda: nn.MaxPool2d(2), lambda: [_floats(2, 3, 6, 6)], 0),
    "AvgPool2d": (lambda: nn.AvgPool2d(3, stride=2), lambda: [_floats(2, 3, 7, 7)], 0),
    "AdaptiveAvgPool2d": (lambda: nn.AdaptiveAvgPool2d((2, 3)), lambda: [_floats(2, 3, 6, 6)], 0),
    "BatchNorm1d": (lambda: nn.BatchNorm1d(5), lambda: [_floats(8, 5)], 0),
    "BatchNorm2d": (lambda: nn.BatchNorm2d(3), lambda: [_floats(2, 3, 4, 4)], 0),
    "BatchNorm2d-eval": (lambda: nn.BatchNorm2d(3).eval(), lambda: [_floats(2, 3, 4, 4)], 0),
    "LayerNorm": (lambda: nn.LayerNorm(5), lambda: [_floats(3, 4, 5)], 0),
    "LayerNorm-plain": (
        lambda: nn.LayerNorm(5, elementwise_affine=False),
        lambda: [_floats(3, 5)],
        0,
    ),
    "Embedding": (lambda: nn.Embedding(10, 4), lambda: [_classes(12, 10).reshape(3, 4)], None),
    "Embedding-padding": (
        lambda: nn.Embedding(10, 4, padding_idx=0),
        lambda: [np.array([[0, 3, 3], [9, 0, 1]])],
        None,
    ),
    "Dropout-eval": (lambda: nn.Dropout(0.5).eval(), lambda: [_floats(4, 5)], 0),
    "GELU": (lambda: nn.GELU(), lambda: [_floats(4, 5)], 0),
    "GELU-tanh": (lambda: nn.GELU(approximate="tanh"), lambda: [_floats(4, 5)], 0),
    "ReLU": (lambda: nn.ReLU(), lambda: [_floats(4, 5)], 0),
    "SiLU": (lambda: nn.SiLU(), lambda: [_floats(4, 5)], 0),
    "Tanh": (lambda: nn.Tanh(), lambda: [_floats(4, 5)], 0),
    "Sigmoid": (lambda: nn.Sigmoid(), lambda: [_floats(4, 5)], 0),
    "Softplus": (lambda: nn.Softplus(), lambda: [_floats(4, 5)], 0),
    "Softmax": (lambda: nn.Softmax(dim=-1), lambda: [_floats(3, 7)], 0),
    "LogSoftmax": (lambda: nn.LogSoftmax(dim=1), lambda: [_floats(3, 7, 2)], 0),
    "Flatten": (lambda: nn.Flatten(), lambda: [_floats(2, 3, 4)], 0),
    "Unflatten": (lambda: nn.Unflatten(1, (2, 3)), lambda: [_floats(4, 6)], 0),
    "Identity": (lambda: nn.Identity(), lambda: [_floats(4, 6)], 0),
    "Sequential": (
        lambda: nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.LayerNorm(8), nn.Linear(8, 3)),
        lambda: [_floats(5, 6)],
        0,
    ),
    "MultiheadAttention": (
        lambda: SelfAttention(need_weights=False),
        lambda: [_floats(2, 5, 8)],
        0,
    ),
    "MultiheadAttention-weights": (lambda: SelfAttention(), lambda: [_floats(2, 5, 8)], 0),
    "MultiheadAttention-causal": (
        lambda: SelfAttention(need_weights=False, is_causal=True),
        lambda: [_floats(2, 5, 8)],
        0,
    ),
    "MultiheadAttention-masked": (
        lambda: SelfAttention(need_weights=False, causal=True),
        lambda: [_floats(2, 5, 8)],
        0,
    ),
    "CrossEntropyLoss": (nn.CrossEntropyLoss, lambda: [_floats(6, 4), _classes(6, 4)], 0),
    "CrossEntropyLoss-smoothing": (
        lambda: nn.CrossEntropyLoss(label_smoothing=0.1),
        lambda: [_floats(6, 4), _classes(6, 4)],
        0,
    ),
    "NLLLoss": (nn.NLLLoss, lambda: [_floats(6, 4), _classes(6, 4)], 0),
    "MSELoss": (nn.MSELoss, lambda: [_floats(3, 4), _floats(3, 4, seed=2)], 0),
    "L1Loss": (nn.L1Loss, lambda: [_floats(3, 4), _floats(3, 4, seed=2)], 0),
    "BCEWithLogitsLoss": (
        nn.BCEWithLogitsLoss,
        lambda: [_floats(3, 4), (_floats(3, 4, seed=2) > 0).astype(np.float64)],
        0,
    ),
    # added with the PyTorch-parity layers
    "LeakyReLU": (lambda: nn.LeakyReLU(0.1), lambda: [_floats(4, 5)], 0),
    "ELU": (lambda: nn.ELU(), lambda: [_floats(4, 5)], 0),
    "ReLU6": (lambda: nn.ReLU6(), lambda: [_floats(4, 5) * 4], 0),
    "Hardswish": (lambda: nn.Hardswish(), lambda: [_floats(4, 5) * 3], 0),
    "Hardsigmoid": (lambda: nn.Hardsigmoid(), lambda: [_floats(4, 5) * 3], 0),
    "Mish": (lambda: nn.Mish(), lambda: [_floats(4, 5)], 0),
    "LogSigmoid": (lambda: nn.LogSigmoid(), lambda: [_floats(4, 5)], 0),
    "GLU": (lambda: nn.GLU(), lambda: [_floats(4, 6)], 0),
    "PReLU": (lambda: nn.PReLU(3), lambda: [_floats(2, 3, 4)], 0),
    "GroupNorm": (lambda: nn.GroupNorm(2, 4), lambda: [_floats(3, 4, 5)], 0),
    "Conv1d": (lambda: nn.Conv1d(3, 4, 3, padding=1), lambda: [_floats(2, 3, 7)], 0),
    "MaxPool1d": (lambda: nn.MaxPool1d(2), lambda: [_floats(2, 3, 6)], 0),
    "AvgPool1d": (lambda: nn.AvgPool1d(3, stride=2), lambda: [_floats(2, 3, 7)], 0),
    "Upsample-bilinear": (
        lambda: nn.Upsample(scale_factor=2, mode="bilinear"),
        lambda: [_floats(1, 2, 3, 4)],
        0,
    ),
    "BCELoss": (
        nn.BCELoss,
        lambda: [1 / (1 + np.exp(-_floats(3, 4))), (_floats(3, 4, seed=2) > 0).astype(np.float64)],
        0,
    ),
    "SmoothL1Loss": (nn.SmoothL1Loss, lambda: [_floats(3, 4), _floats(3, 4, seed=2)], 0),
    "HuberLoss": (
        lambda: nn.HuberLoss(delta=0.5),
        lambda: [_floats(3, 4), _floats(3, 4, seed=2)],
        0,
    ),
    "KLDivLoss": (
        lambda: nn.KLDivLoss(reduction="batchmean"),
        lambda: [np.log(np.full((3, 4), 0.25)) + _floats(3, 4) * 0.1, np.full((3, 4), 0.25)],
        0,
    ),
}


def _run(device: str, make_module: Callable, arrays: list, grad_input: int | None):
    dt.manual_seed(0)  # the same initial weights on both devices
    module = make_module().double().to(device)
    inputs = [dt.tensor(a, device=device) for a in arrays]
    if grad_input is not None:
        inputs[grad_input].requires_grad = True
    out = module(*inputs)
    upstream = np.random.default_rng(3).standard_normal(out.shape)
    (out * dt.tensor(upstream, device=device)).sum().backward()
    results = {"out": out.detach().cpu().numpy()}
    if grad_input is not None:
        results["input grad"] = inputs[grad_input].grad.cpu().numpy()
    for name, param in module.named_parameters():
        if param.grad is not None:
            results[f"{name} grad"] = param.grad.cpu().numpy()
    for name, buffer in module.named_buffers():
        results[f"{name} (buffer)"] = buffer.cpu().numpy()
    return results, module


@pytest.mark.parametrize("name", sorted(CASES))
def test_module_on_cuda_matches_cpu(cuda, name):
    make_module, make_inputs, grad_input = CASES[name]
    arrays = make_inputs()
    expected, _ = _run("cpu", make_module, arrays, grad_input)
    got, gpu_module = _run("cuda", make_module, arrays, grad_input)
    assert all(p.is_cuda for p in gpu_module.parameters())
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-10, atol=1e-12, err_msg=key)
