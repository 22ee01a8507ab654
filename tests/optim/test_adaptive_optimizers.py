"""RMSprop, Adagrad and Adadelta against numpy references of PyTorch's documented
algorithms (and torch.optim itself when installed), param groups and state dicts; a
one-element tensor ``lr`` for every optimizer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import dtrain as dt
import dtrain.optim as optim

SHAPES = [(3, 4), (5,)]
STEPS = 6


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def _grads(seed: int = 1) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(s) for s in SHAPES] for _ in range(STEPS)]


def _initial() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal(s) for s in SHAPES]


def _params(arrays, dtype=np.float64):
    return [dt.nn.Parameter(dt.tensor(a.astype(dtype))) for a in arrays]


def _set_grads(params, grads) -> None:
    for p, g in zip(params, grads):
        p.grad = dt.tensor(g.astype(p.dtype))


def _groups(params):
    return [{"params": [params[0]]}, {"params": [params[1]], "lr": 0.01}]


def _run(make, grads, dtype=np.float64):
    params = _params(_initial(), dtype)
    opt = make(_groups(params))
    for step_grads in grads:
        _set_grads(params, step_grads)
        opt.step()
    return [np.array(p.detach()) for p in params]


# ---- numpy references, written from PyTorch's documented algorithms ----------------------
def _ref_rmsprop(
    p, grads, lr, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False, maximize=False
):
    v, m, b = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    for g in grads:
        g = -g if maximize else g
        g = g + weight_decay * p
        v = alpha * v + (1 - alpha) * g * g
        if centered:
            m = alpha * m + (1 - alpha) * g
            avg = np.sqrt(v - m * m) + eps
        else:
            avg = np.sqrt(v) + eps
        if momentum:
            b = momentum * b + g / avg
            p = p - lr * b
        else:
            p = p - lr * g / avg
    return p


def _ref_adagrad(
    p, grads, lr, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10, maximize=False
):
    s = np.full_like(p, initial_accumulator_value)
    for t, g in enumerate(grads, start=1):
        g = -g if maximize else g
        g = g + weight_decay * p
        s = s + g * g
        p = p - lr / (1 + (t - 1) * lr_decay) * g / (np.sqrt(s) + eps)
    return p


def _ref_adadelta(p, grads, lr, rho=0.9, eps=1e-6, weight_decay=0, maximize=False):
    v, u = np.zeros_like(p), np.zeros_like(p)
    for g in grads:
        g = -g if maximize else g
        g = g + weight_decay * p
        v = rho * v + (1 - rho) * g * g
        d = np.sqrt(u + eps) / np.sqrt(v + eps) * g
        u = rho * u + (1 - rho) * d * d
        p = p - lr * d
    return p


CASES = [
    ("RMSprop", _ref_rmsprop, {}),
    ("RMSprop", _ref_rmsprop, {"momentum": 0.9}),
    ("RMSprop", _ref_rmsprop, {"centered": True, "alpha": 0.8, "eps": 1e-3}),
    (
        "RMSprop",
        _ref_rmsprop,
        {"momentum": 0.5, "centered": True, "weight_decay": 0.1, "maximize": True},
    ),
    ("Adagrad", _ref_adagrad, {}),
    ("Adagrad", _ref_adagrad, {"lr_decay": 0.1, "initial_accumulator_value": 0.5}),
    ("Adagrad", _ref_adagrad, {"weight_decay": 0.1, "eps": 1e-3, "maximize": True}),
    ("Adadelta", _ref_adadelta, {}),
    ("Adadelta", _ref_adadelta, {"rho": 0.5, "eps": 1e-3}),
    ("Adadelta", _ref_adadelta, {"weight_decay": 0.1, "maximize": True}),
]
IDS = [f"{c[0]}-{c[2]}" for c in CASES]


@pytest.mark.parametrize(("cls", "reference", "options"), CASES, ids=IDS)
def test_matches_reference(cls, reference, options):
    grads = _grads()
    got = _run(lambda groups: getattr(optim, cls)(groups, lr=0.1, **options), grads)
    for i, (lr, start) in enumerate(zip((0.1, 0.01), _initial())):
        expected = reference(start, [g[i] for g in grads], lr, **options)
        np.testing.assert_allclose(got[i], expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(("cls", "reference", "options"), CASES, ids=IDS)
def test_matches_torch_optim(torch, cls, reference, options):
    grads = _grads()
    got = _run(lambda groups: getattr(optim, cls)(groups, lr=0.1, **options), grads, np.float32)
    tparams = [torch.nn.Parameter(torch.tensor(a.astype(np.float32))) for a in _initial()]
    topt = getattr(torch.optim, cls)(_groups(tparams), lr=0.1, foreach=False, **options)
    for step_grads in grads:
        for p, g in zip(tparams, step_grads):
            p.grad = torch.tensor(g.astype(np.float32))
        topt.step()
    for ours, theirs in zip(got, tparams):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=2e-6, atol=1e-6)


def test_defaults_are_pytorchs():
    (p,) = _params(_initial()[:1])
    assert optim.Adadelta([p]).defaults["lr"] == 1.0
    assert optim.Adadelta([p]).defaults["rho"] == 0.9
    rms = optim.RMSprop([p]).defaults
    assert (rms["lr"], rms["alpha"], rms["eps"]) == (1e-2, 0.99, 1e-8)
    ada = optim.Adagrad([p]).defaults
    assert (ada["lr"], ada["eps"], ada["initial_accumulator_value"]) == (1e-2, 1e-10, 0)


def test_state_is_float32_for_float32_params():
    for cls in ("RMSprop", "Adagrad", "Adadelta"):
        params = _params(_initial(), np.float32)
        kw = {"momentum": 0.9, "centered": True} if cls == "RMSprop" else {}
        opt = getattr(optim, cls)(params, **kw)
        _set_grads(params, _grads()[0])
        opt.step()
        for p in params:
            assert p.dtype == np.float32
            tensors = [v for v in opt.state[p].values() if isinstance(v, dt.Tensor)]
            assert tensors and all(v.dtype == np.float32 and v.shape == p.shape for v in tensors)


def test_adagrad_makes_every_state_when_built_as_pytorch():
    params = _params(_initial())
    opt = optim.Adagrad(params, initial_accumulator_value=0.25)
    sd = opt.state_dict()["state"]
    assert sorted(sd) == [0, 1] and all(s["step"] == 0 for s in sd.values())
    np.testing.assert_array_equal(sd[1]["sum"].numpy(), np.full(5, 0.25))
    extra = dt.nn.Parameter(dt.zeros(2, dtype=dt.float64))
    opt.add_param_group({"params": [extra], "initial_accumulator_value": 1.0})
    extra.grad = dt.ones(2, dtype=dt.float64)
    opt.step()
    np.testing.assert_array_equal(opt.state[extra]["sum"].numpy(), [2.0, 2.0])


def test_rmsprop_momentum_switched_on_later_starts_from_zero():
    grads = _grads()
    (p,) = _params(_initial()[:1])
    opt = optim.RMSprop([p], lr=0.1)
    _set_grads([p], grads[0][:1])
    opt.step()
    assert "momentum_buffer" not in opt.state[p]
    opt.param_groups[0]["momentum"] = 0.9
    _set_grads([p], grads[1][:1])
    opt.step()
    assert opt.state[p]["momentum_buffer"].shape == p.shape


def test_steps_skip_params_without_grad_and_bump_versions():
    for cls in ("RMSprop", "Adagrad", "Adadelta"):
        params = _params(_initial())
        opt = getattr(optim, cls)(params)
        params[0].grad = dt.ones(*SHAPES[0], dtype=dt.float64)
        before = params[1].detach().numpy().copy()
        opt.step()
        np.testing.assert_array_equal(params[1].detach().numpy(), before)
        assert params[0]._version[0] == 1 and params[1]._version[0] == 0


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: optim.RMSprop(p, lr=-1), "Invalid learning rate: -1"),
        (lambda p: optim.RMSprop(p, alpha=-0.1), "Invalid alpha value: -0.1"),
        (lambda p: optim.RMSprop(p, momentum=-1), "Invalid momentum value: -1"),
        (lambda p: optim.RMSprop(p, eps=-1), "Invalid epsilon value: -1"),
        (lambda p: optim.RMSprop(p, capturable=True), "capturable=True is not supported"),
        (lambda p: optim.Adagrad(p, lr_decay=-1), "Invalid lr_decay value: -1"),
        (lambda p: optim.Adagrad(p, initial_accumulator_value=-1), "initial_accumulator_value"),
        (lambda p: optim.Adagrad(p, weight_decay=-1), "Invalid weight_decay value: -1"),
        (lambda p: optim.Adadelta(p, rho=1.5), "Invalid rho value: 1.5"),
        (lambda p: optim.Adadelta(p, lr=float("nan")), "Invalid learning rate: nan"),
        (lambda p: optim.Adadelta(p, differentiable=True), "differentiable=True"),
        (lambda p: optim.SGD(p, lr=dt.ones(2)), "Tensor lr must be 1-element"),
    ],
)
def test_bad_hyperparameters(make, message):
    with pytest.raises(ValueError, match=message):
        make(_params(_initial()))


# ---- state dicts ------------------------------------------------------------------------
def _through_checkpoint(state_dict):
    state = {
        str(k): {
            name: dt.tensor(v.detach().numpy().copy()) if isinstance(v, dt.Tensor) else v
            for name, v in s.items()
        }
        for k, s in state_dict["state"].items()
    }
    return {"state": state, "param_groups": json.loads(json.dumps(state_dict["param_groups"]))}


MAKERS = {
    "RMSprop": lambda g: optim.RMSprop(g, lr=0.1, momentum=0.9, centered=True),
    "Adagrad": lambda g: optim.Adagrad(g, lr=0.1, lr_decay=0.05),
    "Adadelta": lambda g: optim.Adadelta(g, weight_decay=0.01),
}


@pytest.mark.parametrize("checkpoint", [False, True], ids=["direct", "json"])
@pytest.mark.parametrize("name", MAKERS)
def test_state_dict_round_trip_continues_bitwise(name, checkpoint):
    grads = _grads(seed=2) + _grads(seed=3)
    make = MAKERS[name]
    reference = _params(_initial())
    ref_opt = make(_groups(reference))
    for step_grads in grads:
        _set_grads(reference, step_grads)
        ref_opt.step()

    first = _params(_initial())
    opt = make(_groups(first))
    for step_grads in grads[:STEPS]:
        _set_grads(first, step_grads)
        opt.step()
    saved = opt.state_dict()
    if checkpoint:
        saved = _through_checkpoint(saved)
    resumed = [dt.nn.Parameter(dt.tensor(p.detach().numpy().copy())) for p in first]
    new_opt = make(_groups(resumed))
    new_opt.param_groups[1]["lr"] = 123.0  # the saved options win
    new_opt.load_state_dict(saved)
    assert new_opt.param_groups[1]["lr"] == 0.01
    assert new_opt.state[resumed[0]]["step"] == STEPS
    for step_grads in grads[STEPS:]:
        _set_grads(resumed, step_grads)
        new_opt.step()
    for a, b in zip(reference, resumed):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())


def test_state_dict_shape_mismatch_is_named():
    params = _params(_initial())
    opt = optim.RMSprop(params, momentum=0.9)
    _set_grads(params, _grads()[0])
    opt.step()
    swapped = optim.RMSprop(list(reversed(params)), momentum=0.9)
    with pytest.raises(ValueError, match=r"state\[0\]\['square_avg'\] has shape \(3, 4\)"):
        swapped.load_state_dict(opt.state_dict())


# ---- a one-element tensor lr (as PyTorch allows) ------------------------------------------
ALL = {
    "SGD": {"momentum": 0.9},
    "Adam": {},
    "AdamW": {},
    "RMSprop": {},
    "Adagrad": {},
    "Adadelta": {},
}


@pytest.mark.parametrize("cls", ALL)
def test_tensor_lr_steps_as_the_float(cls):
    grads = _grads()
    lr = dt.tensor(np.array(0.05))  # float64 (dt.tensor(0.05, dtype=float64) rounds via float32)
    with_tensor = _run(lambda g: getattr(optim, cls)(g, lr=lr, **ALL[cls]), grads)
    with_float = _run(lambda g: getattr(optim, cls)(g, lr=0.05, **ALL[cls]), grads)
    # group 1 overrides lr with 0.01; group 0 keeps the tensor
    for a, b in zip(with_tensor, with_float):
        np.testing.assert_array_equal(a, b)


def test_tensor_lr_changed_in_place_takes_effect():
    (p,) = _params([np.zeros(2)])
    lr = dt.tensor(np.array(1.0))
    opt = optim.SGD([p], lr=lr)
    assert opt.param_groups[0]["lr"] is lr
    p.grad = dt.ones(2, dtype=dt.float64)
    opt.step()
    lr.fill_(0.5)
    opt.step()
    np.testing.assert_array_equal(p.detach().numpy(), [-1.5, -1.5])


@pytest.mark.parametrize("cls", ["SGD", "Adam", "AdamW", "RMSprop"])
def test_tensor_lr_matches_torch(torch, cls):
    grads = _grads()
    got = _run(lambda g: getattr(optim, cls)(g, lr=dt.tensor(0.05)), grads, np.float32)
    tparams = [torch.nn.Parameter(torch.tensor(a.astype(np.float32))) for a in _initial()]
    topt = getattr(torch.optim, cls)(_groups(tparams), lr=torch.tensor(0.05), foreach=False)
    for step_grads in grads:
        for p, g in zip(tparams, step_grads):
            p.grad = torch.tensor(g.astype(np.float32))
        topt.step()
    for ours, theirs in zip(got, tparams):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=2e-6, atol=1e-6)


@pytest.fixture(params=["emulated", "gpu"])
def cuda(request, monkeypatch):
    """CUDA arrays: emulated on the CPU (``tests/runtime/cuda_emulator.py``), or a real GPU."""
    if request.param == "gpu":
        if not dt.cuda_is_available():
            pytest.skip("needs a CUDA GPU and cupy")
        return
    if dt.cuda_is_available():
        pytest.skip("a real GPU is present: the gpu case covers it")
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "runtime"))
    from cuda_emulator import install

    install(monkeypatch)


@pytest.mark.parametrize("name", MAKERS)
def test_cuda_matches_cpu(cuda, name):
    grads = _grads()

    def run(device):
        params = [
            dt.nn.Parameter(dt.tensor(a.astype(np.float32), device=device)) for a in _initial()
        ]
        opt = MAKERS[name](_groups(params))
        for step_grads in grads:
            for p, g in zip(params, step_grads):
                p.grad = dt.tensor(g.astype(np.float32), device=device)
            opt.step()
        for p in params:
            assert all(v.is_cuda == p.is_cuda == (device == "cuda") for v in _tensors(opt, p))
        return [p.detach().cpu().numpy() for p in params]

    for a, b in zip(run("cuda"), run("cpu")):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _tensors(opt, p):
    return [v for v in opt.state[p].values() if isinstance(v, dt.Tensor)]


def test_load_state_dict_copies_a_tensor_lr():
    # A scheduler fills the lr tensor in place: two optimizers must not share it.
    first = dt.optim.SGD([dt.nn.Parameter(dt.ones(2))], lr=dt.tensor(0.1))
    second = dt.optim.SGD([dt.nn.Parameter(dt.ones(2))], lr=dt.tensor(0.5))
    second.load_state_dict(first.state_dict())
    assert second.param_groups[0]["lr"] is not first.param_groups[0]["lr"]
    second.param_groups[0]["lr"].fill_(0.01)
    assert first.param_groups[0]["lr"].item() == pytest.approx(0.1)
