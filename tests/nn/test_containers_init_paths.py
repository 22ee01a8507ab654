"""ParameterList / ParameterDict, ModuleList ``+=`` / ``+``, ``init.orthogonal_`` / ``eye_``
/ ``dirac_``, ``parameters_to_vector`` and PyTorch's submodule import paths."""

import importlib
import subprocess
import sys

import numpy as np
import pytest

import dtrain as dt
import dtrain.nn as nn


# ---- containers ----------------------------------------------------------------------------
def test_parameter_list_registers_its_parameters():
    params = nn.ParameterList([dt.ones(2), nn.Parameter(dt.zeros(3))])
    params.append(dt.ones(1))
    params += [dt.ones(4, 1)]
    assert len(params) == 4 and params[-1].shape == (4, 1)
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in params)
    assert isinstance(params[1:], nn.ParameterList) and len(params[1:]) == 3
    params[0] = dt.full((2,), 5.0)
    np.testing.assert_array_equal(params[0].detach().numpy(), [5.0, 5.0])

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.scales = params
            self.named = nn.ParameterDict({"a": dt.ones(2)})
            self.named["b"] = nn.Parameter(dt.zeros(1))

    model = Model()
    names = ["scales.0", "scales.1", "scales.2", "scales.3", "named.a", "named.b"]
    assert [n for n, _ in model.named_parameters()] == names
    assert list(model.state_dict()) == names
    with pytest.raises(IndexError, match="out of range"):
        params[4]
    with pytest.raises(TypeError, match="tensor"):
        params.append(3.0)


def test_parameter_dict_is_a_mapping():
    d = nn.ParameterDict([("w", dt.ones(2)), ("b", dt.zeros(2))])
    assert list(d) == ["w", "b"] and list(d.keys()) == ["w", "b"] and "w" in d and len(d) == 2
    d.update({"c": dt.ones(1)})
    assert isinstance(d["c"], nn.Parameter)
    assert d.pop("w").shape == (2,) and "w" not in d
    assert d.get("missing") is None
    assert [k for k, _ in d.items()] == ["b", "c"]
    d.clear()
    assert len(d) == 0 and list(d.parameters()) == []


def test_module_list_add():
    layers = nn.ModuleList()
    layers += [nn.ReLU(), nn.Tanh()]
    more = layers + nn.ModuleList([nn.GELU()])
    assert len(layers) == 2 and len(more) == 3
    assert more[0] is layers[0] and isinstance(more[2], nn.GELU)
    assert [n for n, _ in more.named_children()] == ["0", "1", "2"]


def test_containers_match_torch(torch):
    ours = nn.ParameterList([dt.ones(2), dt.zeros(3, 2)])
    theirs = torch.nn.ParameterList([torch.ones(2), torch.zeros(3, 2)])
    assert repr(ours) == repr(theirs).replace("torch.", "dtrain.")
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]


# ---- init ----------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(3, 5), (5, 3), (6, 2, 2)])
def test_orthogonal(shape):
    w = nn.init.orthogonal_(dt.empty(*shape), gain=2.0)
    m = w.numpy().reshape(shape[0], -1)
    small = min(m.shape)
    gram = m @ m.T if m.shape[0] == small else m.T @ m
    np.testing.assert_allclose(gram, 4 * np.eye(small), atol=1e-5)
    with pytest.raises(ValueError, match="2 or more"):
        nn.init.orthogonal_(dt.empty(3))


def test_eye_and_dirac():
    np.testing.assert_array_equal(nn.init.eye_(dt.empty(2, 3)).numpy(), np.eye(2, 3))
    with pytest.raises(ValueError, match="2 dimensions"):
        nn.init.eye_(dt.empty(2, 3, 1))
    w = nn.init.dirac_(dt.empty(4, 2, 3), groups=2)
    x = np.random.default_rng(0).standard_normal((1, 4, 6)).astype(np.float32)
    out = dt.nn.functional.conv1d(dt.tensor(x), w, padding=1, groups=2).numpy()
    np.testing.assert_allclose(out[0, [0, 2]], x[0, [0, 2]])  # the identity per group
    with pytest.raises(ValueError, match="divisible"):
        nn.init.dirac_(dt.empty(3, 2, 3), groups=2)


def test_init_matches_torch(torch):
    t = torch.empty(4, 2, 3, 3)
    torch.nn.init.dirac_(t, 2)
    np.testing.assert_array_equal(nn.init.dirac_(dt.empty(4, 2, 3, 3), 2).numpy(), t.numpy())


# ---- utils ---------------------------------------------------------------------------------
def test_parameters_to_vector_round_trip():
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    vec = nn.utils.parameters_to_vector(model.parameters())
    expected = np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])
    np.testing.assert_array_equal(vec.detach().numpy(), expected)
    vec.sum().backward()  # differentiable, as PyTorch's
    assert all((p.grad.numpy() == 1).all() for p in model.parameters())
    nn.utils.vector_to_parameters(dt.arange(11, dtype=dt.float32), model.parameters())
    np.testing.assert_array_equal(model[0].bias.detach().numpy(), [6.0, 7.0])
    with pytest.raises(ValueError, match="11"):
        nn.utils.vector_to_parameters(dt.ones(10), model.parameters())
    with pytest.raises(TypeError, match="Tensor"):
        nn.utils.vector_to_parameters(np.ones(11), model.parameters())


# ---- import paths --------------------------------------------------------------------------
def test_torch_style_import_paths():
    import dtrain.nn.init as init
    from dtrain.nn.modules import Conv1d, Linear
    from dtrain.nn.modules.loss import _Loss
    from dtrain.nn.modules.module import Module
    from dtrain.nn.parallel import DistributedDataParallel
    from dtrain.nn.parameter import Parameter
    from dtrain.nn.utils import clip_grad_norm_, parameters_to_vector

    assert nn.init is init and init.orthogonal_ is nn.init.orthogonal_
    assert init._calculate_fan_in_and_fan_out(dt.empty(3, 4, 2)) == (8, 6)
    assert nn.Linear is Linear and nn.Conv1d is Conv1d and nn.Module is Module
    assert nn.Parameter is Parameter and issubclass(nn.MSELoss, _Loss)
    assert nn.utils.clip_grad_norm_ is clip_grad_norm_
    assert nn.utils.parameters_to_vector is parameters_to_vector
    assert nn.parallel.DistributedDataParallel is DistributedDataParallel
    assert (
        DistributedDataParallel
        is importlib.import_module("dtrain.parallel").DistributedDataParallel
    )


def test_nn_does_not_import_parallel_until_asked():
    code = (
        "import sys, dtrain.nn as nn; assert 'dtrain.parallel' not in sys.modules; "
        "nn.parallel.DistributedDataParallel; assert 'dtrain.parallel' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        nn.nothing  # noqa: B018
