"""Lazy modules: shapes inferred on the first forward, then the ordinary class (PyTorch's
``LazyModuleMixin``), and the ``UninitializedParameter`` / ``UninitializedBuffer``
placeholders."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import dtrain as dt
import dtrain.nn as nn
from dtrain.nn.modules import LazyModuleMixin

# (lazy class, its cls_to_become, constructor args, input shape, expected weight shape)
CONVS = [
    ("LazyConv1d", "Conv1d", (4, 3), (2, 2, 7), (4, 1, 3)),
    ("LazyConv2d", "Conv2d", (4, 3), (2, 2, 6, 5), (4, 1, 3, 3)),
    ("LazyConv3d", "Conv3d", (4, 2), (1, 2, 4, 3, 3), (4, 1, 2, 2, 2)),
    ("LazyConvTranspose1d", "ConvTranspose1d", (4, 3), (2, 2, 5), (2, 2, 3)),
    ("LazyConvTranspose2d", "ConvTranspose2d", (4, 3), (2, 2, 4, 3), (2, 2, 3, 3)),
    ("LazyConvTranspose3d", "ConvTranspose3d", (4, 2), (1, 2, 3, 2, 2), (2, 2, 2, 2, 2)),
]
NORMS = [
    ("LazyBatchNorm1d", "BatchNorm1d", (6, 3)),
    ("LazyBatchNorm2d", "BatchNorm2d", (4, 3, 2, 2)),
    ("LazyBatchNorm3d", "BatchNorm3d", (2, 3, 2, 2, 2)),
    ("LazyInstanceNorm1d", "InstanceNorm1d", (2, 3, 5)),
    ("LazyInstanceNorm2d", "InstanceNorm2d", (2, 3, 3, 3)),
    ("LazyInstanceNorm3d", "InstanceNorm3d", (2, 3, 2, 2, 2)),
]


def test_lazy_linear_before_its_first_forward() -> None:
    layer = nn.LazyLinear(3)
    assert repr(layer) == "LazyLinear(in_features=0, out_features=3, bias=True)"
    assert layer.has_uninitialized_params()
    assert isinstance(layer.weight, nn.UninitializedParameter)
    assert isinstance(layer.weight, nn.Parameter)
    assert repr(layer.weight) == "<UninitializedParameter>"
    assert list(layer.state_dict()) == ["weight", "bias"]
    with pytest.raises(RuntimeError, match="run one forward pass"):
        layer.weight.shape  # noqa: B018 - the access is the test


def test_lazy_linear_infers_in_features_and_becomes_linear(rng: np.random.Generator) -> None:
    layer = nn.LazyLinear(3)
    x = rng.standard_normal((2, 5, 4)).astype(np.float32)
    out = layer(dt.tensor(x))
    assert type(layer) is nn.Linear and layer.in_features == 4
    assert not layer._forward_pre_hooks
    assert type(layer.weight) is nn.Parameter and layer.weight.shape == (3, 4)
    assert type(layer.bias) is nn.Parameter and layer.bias.shape == (3,)
    bound = 1 / np.sqrt(4)
    assert (
        np.abs(layer.weight.detach().numpy()).max() <= bound
        and layer.weight.detach().numpy().std() > 0
    )
    expected = x @ layer.weight.detach().numpy().T + layer.bias.detach().numpy()
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-5, atol=1e-6)
    out.sum().backward()
    np.testing.assert_allclose(
        layer.weight.grad.numpy(), np.ones((10, 3)).T @ x.reshape(10, 4), rtol=1e-5
    )


def test_lazy_linear_without_bias_and_factory_dtype() -> None:
    layer = nn.LazyLinear(2, bias=False, dtype=dt.float64)
    layer(dt.ones(3, 5, dtype=dt.float64))
    assert layer.bias is None and layer.weight.dtype == dt.float64


def test_module_to_before_the_first_forward_sets_the_dtype() -> None:
    model = nn.Sequential(nn.LazyLinear(4), nn.ReLU(), nn.LazyLinear(1)).double()
    out = model(dt.ones(2, 3, dtype=dt.float64))
    assert out.shape == (2, 1)
    assert [type(m).__name__ for m in model] == ["Linear", "ReLU", "Linear"]
    assert all(p.dtype == dt.float64 for p in model.parameters())
    assert [p.shape for p in model.parameters()] == [(4, 3), (4,), (1, 4), (1,)]


def test_optimizer_built_after_the_first_forward_trains() -> None:
    dt.manual_seed(0)
    model = nn.Sequential(nn.LazyLinear(8), nn.Tanh(), nn.LazyLinear(1))
    x, y = dt.randn(16, 3), dt.randn(16, 1)
    model(x)
    opt = dt.optim.SGD(model.parameters(), lr=0.2)
    losses = []
    for _ in range(50):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]


@pytest.mark.parametrize(("lazy", "plain", "args", "shape", "weight"), CONVS)
def test_lazy_conv_becomes_its_class(
    lazy: str, plain: str, args: tuple, shape: tuple, weight: tuple
) -> None:
    layer = getattr(nn, lazy)(*args, groups=2)
    assert repr(layer).startswith(f"{lazy}(0, 4, ")
    x = dt.randn(*shape)
    out = layer(x)
    assert type(layer) is getattr(nn, plain) and layer.in_channels == 2
    assert layer.weight.shape == weight and layer.bias.shape == (4,)
    reference = getattr(nn, plain)(2, *args, groups=2)
    reference.load_state_dict(layer.state_dict())
    np.testing.assert_allclose(out.detach().numpy(), reference(x).detach().numpy(), rtol=1e-6)


def test_lazy_conv_unbatched_input_and_groups_error() -> None:
    layer = nn.LazyConv2d(4, 3)
    layer(dt.randn(5, 6, 6))  # (C, H, W): the channels are dim 0
    assert layer.weight.shape == (4, 5, 3, 3)
    with pytest.raises(ValueError, match="groups=2"):
        nn.LazyConv1d(4, 3, groups=2)(dt.randn(1, 3, 8))
    with pytest.raises(RuntimeError, match="2D \\(unbatched\\) or 3D"):
        nn.LazyConv1d(4, 3)(dt.randn(3, 8, 1, 1))


@pytest.mark.parametrize(("lazy", "plain", "shape"), NORMS)
def test_lazy_norm_becomes_its_class(lazy: str, plain: str, shape: tuple) -> None:
    layer = getattr(nn, lazy)()
    assert isinstance(layer.running_mean, nn.UninitializedBuffer)
    assert list(layer.state_dict()) == [
        "weight",
        "bias",
        "running_mean",
        "running_var",
        "num_batches_tracked",
    ]
    x = dt.randn(*shape)
    layer(x)
    assert type(layer) is getattr(nn, plain) and layer.num_features == 3
    np.testing.assert_array_equal(layer.weight.detach().numpy(), np.ones(3))
    np.testing.assert_array_equal(layer.bias.detach().numpy(), np.zeros(3))
    assert type(layer.running_mean) is nn.Buffer and layer.running_mean.persistent
    axes = tuple(a for a in range(len(shape)) if a != 1)
    np.testing.assert_allclose(
        layer.running_mean.numpy(), 0.1 * x.numpy().mean(axis=axes), rtol=1e-5, atol=1e-7
    )


def test_lazy_norm_options() -> None:
    plain = nn.LazyBatchNorm1d(affine=False, track_running_stats=False)
    assert not plain.has_uninitialized_params()
    plain(dt.randn(4, 2))
    assert type(plain) is nn.BatchNorm1d and plain.num_features == 2
    no_bias = nn.LazyBatchNorm2d(bias=False)
    no_bias(dt.randn(2, 3, 2, 2))
    assert no_bias.bias is None and no_bias.weight.shape == (3,)
    unbatched = nn.LazyInstanceNorm1d()
    unbatched(dt.randn(3, 5))  # (C, L): the channels are dim 0 (PyTorch reads dim 1)
    assert unbatched.num_features == 3


def test_placeholder_materialize() -> None:
    param = nn.UninitializedParameter(dtype=dt.float64)
    param.materialize((2, 3))
    assert type(param) is nn.Parameter and param.shape == (2, 3)
    assert param.dtype == dt.float64 and param.requires_grad
    buffer = nn.UninitializedBuffer(persistent=False)
    buffer.materialize(4, dtype=dt.float16)
    assert type(buffer) is nn.Buffer and buffer.shape == (4,) and not buffer.persistent
    assert buffer.dtype == dt.float16


def test_custom_lazy_module() -> None:
    class LazyScale(LazyModuleMixin, nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.UninitializedParameter()

        def initialize_parameters(self, input: Any) -> None:
            self.scale.materialize(input.shape[-1:])
            self.scale.fill_(2.0)

        def forward(self, input: Any) -> Any:
            return input * self.scale

    module = LazyScale()
    np.testing.assert_array_equal(module(dt.ones(2, 3)).detach().numpy(), np.full((2, 3), 2.0))
    assert type(module) is LazyScale and not module.has_uninitialized_params()


def test_load_state_dict_materializes_a_lazy_module() -> None:
    source = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    source(dt.randn(5, 4))
    lazy = nn.Sequential(nn.LazyLinear(3), nn.LazyBatchNorm1d())
    lazy.load_state_dict(source.state_dict())
    assert type(lazy[0]) is nn.LazyLinear and not lazy[0].has_uninitialized_params()
    for key, value in source.state_dict().items():
        np.testing.assert_array_equal(lazy.state_dict()[key].numpy(), value.numpy())
    x = dt.randn(2, 4)
    lazy.eval(), source.eval()
    np.testing.assert_array_equal(lazy(x).detach().numpy(), source(x).detach().numpy())
    assert type(lazy[0]) is nn.Linear and type(lazy[1]) is nn.BatchNorm1d


LAZY_CASES = [
    ("LazyLinear", (3,), (2, 4)),
    *[(lazy, args, shape) for lazy, _, args, shape, _ in CONVS],
    *[(lazy, (), shape) for lazy, _, shape in NORMS],
]


@pytest.mark.parametrize(("name", "args", "shape"), LAZY_CASES)
def test_lazy_modules_match_torch(torch: Any, name: str, args: tuple, shape: tuple) -> None:
    ours, theirs = getattr(nn, name)(*args), getattr(torch.nn, name)(*args)
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours(dt.randn(*shape))
    theirs(torch.randn(*shape))
    assert type(ours).__name__ == type(theirs).__name__
    assert repr(ours) == repr(theirs)
    for (key, mine), (their_key, their) in zip(
        ours.state_dict().items(), theirs.state_dict().items()
    ):
        assert key == their_key and tuple(mine.shape) == tuple(their.shape)


def test_ddp_refuses_a_module_with_uninitialized_parameters() -> None:
    from dtrain.parallel.ddp import DistributedDataParallel

    with pytest.raises(RuntimeError, match="run one forward pass"):
        DistributedDataParallel(nn.Sequential(nn.LazyLinear(3)))


def test_a_saved_lazy_state_dict_loads_back_into_a_lazy_module(tmp_path) -> None:
    # dt.save writes a placeholder as an empty tensor; loading it leaves the module lazy.
    path = tmp_path / "lazy.safetensors"
    dt.save(nn.LazyLinear(3).state_dict(), str(path))
    fresh = nn.LazyLinear(3)
    fresh.load_state_dict(dt.load(str(path)))
    assert fresh(dt.ones(2, 5)).shape == (2, 3)
    assert fresh.weight.shape == (3, 5)


def test_lazy_linear_loaded_from_a_state_dict_records_in_features() -> None:
    source = nn.Linear(5, 3)
    lazy = nn.LazyLinear(3)
    lazy.load_state_dict(source.state_dict())
    lazy(dt.ones(2, 5))
    assert lazy.in_features == 5 and "in_features=5" in repr(lazy)


def test_adagrad_built_before_the_first_forward_trains() -> None:
    model = nn.LazyLinear(3)
    optimizer = dt.optim.Adagrad(model.parameters(), lr=0.1)
    loss = model(dt.ones(4, 2)).sum()
    loss.backward()
    optimizer.step()
    assert optimizer.state[model.weight]["sum"].shape == (3, 2)
