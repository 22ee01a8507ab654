"""A tensor's repr as PyTorch prints it (tensor/format.py) and grad_fn names as PyTorch's
(``AddBackward0``, tensor/autograd/op.py), against fixed strings and, when installed, torch."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import dtrain as dt


@pytest.fixture
def torch() -> Any:
    """The ``torch`` module, or a skip when it is not installed."""
    return pytest.importorskip("torch")


@pytest.fixture
def restore_print_options():
    saved = dt.get_printoptions()
    yield
    dt.set_printoptions(**saved)


EXPECTED = [
    (lambda: dt.tensor([True, False]), "tensor([ True, False])"),
    (lambda: dt.tensor(True), "tensor(True)"),
    (lambda: dt.tensor([1.5, 2.25, -3.0]), "tensor([ 1.5000,  2.2500, -3.0000])"),
    (
        lambda: dt.tensor([1.5, -3.0], dtype=dt.float64),
        "tensor([ 1.5000, -3.0000], dtype=dtrain.float64)",
    ),
    (
        lambda: dt.tensor([0.1, 0.25], dtype=dt.float16),
        "tensor([0.1000, 0.2500], dtype=dtrain.float16)",
    ),
    (lambda: dt.tensor([1e-8, 1.0]), "tensor([1.0000e-08, 1.0000e+00])"),
    (lambda: dt.tensor(3.5), "tensor(3.5000)"),
    (lambda: dt.tensor(3), "tensor(3)"),
    (lambda: dt.tensor([1, 2, 300]), "tensor([  1,   2, 300])"),
    (lambda: dt.tensor([1, 2], dtype=dt.int8), "tensor([1, 2], dtype=dtrain.int8)"),
    (lambda: dt.tensor([], dtype=dt.float32), "tensor([])"),
    (lambda: dt.tensor([], dtype=dt.int64), "tensor([], dtype=dtrain.int64)"),
    (lambda: dt.zeros(0, 3), "tensor([], size=(0, 3))"),
    (lambda: dt.zeros(2, 0, dtype=dt.bool), "tensor([], size=(2, 0), dtype=dtrain.bool)"),
    (lambda: dt.ones(2, requires_grad=True), "tensor([1., 1.], requires_grad=True)"),
    (lambda: dt.arange(2000), "tensor([   0,    1,    2,  ..., 1997, 1998, 1999])"),
    (lambda: dt.ones(2, requires_grad=True) * 2, "tensor([2., 2.], grad_fn=<MulBackward0>)"),
    (lambda: dt.ones(2, requires_grad=True).sum(), "tensor(2., grad_fn=<SumBackward0>)"),
]


@pytest.mark.parametrize("make, expected", EXPECTED, ids=[e[1] for e in EXPECTED])
def test_repr_is_torchs_layout(make, expected):
    assert repr(make()) == expected


def test_a_summarised_matrix_marks_the_middle_rows_and_columns():
    text = repr(dt.arange(3000).reshape(3, 1000))
    assert text == (
        "tensor([[   0,    1,    2,  ...,  997,  998,  999],\n"
        "        [1000, 1001, 1002,  ..., 1997, 1998, 1999],\n"
        "        [2000, 2001, 2002,  ..., 2997, 2998, 2999]])"
    )


def test_a_long_suffix_goes_on_a_line_of_its_own():
    text = repr(dt.tensor(np.full((2, 4), -4.2130e07)))
    assert text.endswith("]],\n       dtype=dtrain.float64)")


def test_a_cuda_tensor_names_its_device(test_device):
    if test_device != "cuda":
        pytest.skip("needs --device=cuda or --device=emulated-cuda")
    assert repr(dt.tensor([1.0, 2.0], device="cuda")) == "tensor([1., 2.], device='cuda:0')"
    assert repr(dt.tensor([1, 2], device="cuda", dtype=dt.int32)) == (
        "tensor([1, 2], device='cuda:0', dtype=dtrain.int32)"
    )


GRAD_FNS = {
    "AddBackward0": lambda m, x: x + x,
    "SubBackward0": lambda m, x: x - 1,
    "MulBackward0": lambda m, x: x * 2,
    "DivBackward0": lambda m, x: x / 2,
    "NegBackward0": lambda m, x: -x,
    "PowBackward0": lambda m, x: x**2,
    "SumBackward0": lambda m, x: x.sum(),
    "MeanBackward0": lambda m, x: x.mean(),
    "MmBackward0": lambda m, x: x.reshape(2, 2) @ x.reshape(2, 2),
    "ExpBackward0": lambda m, x: x.exp(),
    "ReluBackward0": lambda m, x: x.relu(),
    "TanhBackward0": lambda m, x: x.tanh(),
    "ViewBackward0": lambda m, x: x.view(2, 2),
    "PermuteBackward0": lambda m, x: x.reshape(2, 2).permute(1, 0),
    "CatBackward0": lambda m, x: m.cat([x, x]),
    "StackBackward0": lambda m, x: m.stack([x, x]),
    "CloneBackward0": lambda m, x: x.clone(),
    "SoftmaxBackward0": lambda m, x: x.softmax(0),
    "LogSoftmaxBackward0": lambda m, x: x.log_softmax(0),
    "ExpandBackward0": lambda m, x: x.unsqueeze(0).expand(2, 4),
    "WhereBackward0": lambda m, x: m.where(x > 1, x, x * 0),
    "ToCopyBackward0": lambda m, x: x.double(),
    "CumsumBackward0": lambda m, x: x.cumsum(0),
    "NativeLayerNormBackward0": lambda m, x: m.nn.functional.layer_norm(x, (4,)),
    "NllLossBackward0": lambda m, x: m.nn.functional.cross_entropy(
        x.reshape(2, 2), m.tensor([0, 1])
    ),
}


@pytest.mark.parametrize("name", GRAD_FNS)
def test_grad_fn_names_are_torchs(name):
    y = GRAD_FNS[name](dt, dt.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True))
    assert y.grad_fn.name() == name
    assert f"grad_fn=<{name}>" in repr(y)


@pytest.mark.parametrize("name", GRAD_FNS)
def test_grad_fn_names_match_torch(torch, name):
    y = GRAD_FNS[name](torch, torch.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True))
    assert y.grad_fn.name() == name


def _random_cases():
    rng = np.random.default_rng(0)
    for trial in range(150):
        shape = tuple(int(s) for s in rng.integers(1, 9 if trial % 3 else 30, size=trial % 4))
        values = rng.standard_normal(shape) * 10.0 ** rng.integers(-6, 10)
        if trial % 4 == 1:
            values = np.round(values)
        kind = ("float32", "float64", "float16", "int64", "int8", "bool")[trial % 6]
        if kind.startswith("int"):
            values = np.nan_to_num(values).clip(-100, 100)
        if kind == "bool":
            values = values > 0
        options = {
            "precision": int(rng.integers(1, 8)),
            "linewidth": int(rng.integers(30, 120)),
            "edgeitems": int(rng.integers(1, 4)),
            "threshold": int(rng.integers(5, 100)),
            "sci_mode": (None, True, False)[trial % 3],
        }
        with np.errstate(over="ignore"):  # float16 holds no 1e9: inf, as torch prints it
            values = np.asarray(values).astype(kind)
        yield values, options


def test_random_tensors_print_as_torch_prints_them(torch, restore_print_options):
    saved = torch._tensor_str.PRINT_OPTS.__dict__.copy()
    try:
        for values, options in _random_cases():
            dt.set_printoptions(**options)
            torch.set_printoptions(**options)
            ours = repr(dt.tensor(values)).replace("dtrain.", "torch.")
            theirs = repr(torch.tensor(values))
            # "dtrain." is a letter longer than "torch.": a suffix may wrap at another place
            ours, theirs = (" ".join(text.split()) for text in (ours, theirs))
            assert ours == theirs, (values.dtype, values.shape, options)
    finally:
        torch._tensor_str.PRINT_OPTS.__dict__.update(saved)
