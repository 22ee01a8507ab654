"""NAdam, RAdam and Adamax against numpy references of PyTorch's documented algorithms (and
torch.optim when installed), state dicts through a checkpoint; MultiplicativeLR and CyclicLR
against hand-computed sequences and torch's schedulers."""

from __future__ import annotations

import math

import numpy as np
import pytest

import dtrain as dt
import dtrain.optim as optim
from dtrain.optim.lr_scheduler import CyclicLR, MultiplicativeLR

SHAPES = [(3, 4), (5,)]
STEPS = 12  # RAdam switches to its rectified update at step 6 with the default betas


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


def _groups(params):
    return [{"params": [params[0]]}, {"params": [params[1]], "lr": 0.01}]


def _run(make, grads, dtype=np.float64, params=None):
    params = params or _params(_initial(), dtype)
    opt = make(_groups(params))
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = dt.tensor(g.astype(p.dtype))
        opt.step()
    return [np.array(p.detach()) for p in params], opt, params


# ---- numpy references (PyTorch's documented algorithms) ---------------------------------
def _ref_nadam(
    p,
    grads,
    lr,
    betas=(0.9, 0.999),
    eps=1e-8,
    weight_decay=0,
    momentum_decay=4e-3,
    decoupled_weight_decay=False,
    maximize=False,
):
    b1, b2 = betas
    m, v, prod = np.zeros_like(p), np.zeros_like(p), 1.0
    for t, g in enumerate(grads, 1):
        g = -g if maximize else g
        if decoupled_weight_decay:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        mu = b1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))
        mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
        prod *= mu
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        denom = np.sqrt(v / (1 - b2**t)) + eps
        p = p - lr * (1 - mu) / (1 - prod) * g / denom
        p = p - lr * mu_next / (1 - prod * mu_next) * m / denom
    return p


def _ref_radam(
    p,
    grads,
    lr,
    betas=(0.9, 0.999),
    eps=1e-8,
    weight_decay=0,
    decoupled_weight_decay=False,
    maximize=False,
):
    b1, b2 = betas
    m, v = np.zeros_like(p), np.zeros_like(p)
    rho_inf = 2 / (1 - b2) - 1
    for t, g in enumerate(grads, 1):
        g = -g if maximize else g
        if decoupled_weight_decay:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1**t)
        rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
        if rho > 5:
            r = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            p = p - lr * m_hat * r * math.sqrt(1 - b2**t) / (np.sqrt(v) + eps)
        else:
            p = p - lr * m_hat
    return p


def _ref_adamax(p, grads, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, maximize=False):
    b1, b2 = betas
    m, u = np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, 1):
        g = -g if maximize else g
        g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        u = np.maximum(b2 * u, np.abs(g) + eps)
        p = p - lr / (1 - b1**t) * m / u
    return p


CASES = [
    ("NAdam", _ref_nadam, {}),
    ("NAdam", _ref_nadam, {"weight_decay": 0.1, "momentum_decay": 0.01, "maximize": True}),
    ("NAdam", _ref_nadam, {"weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("RAdam", _ref_radam, {}),
    ("RAdam", _ref_radam, {"betas": (0.8, 0.9), "weight_decay": 0.1, "maximize": True}),
    ("RAdam", _ref_radam, {"weight_decay": 0.1, "decoupled_weight_decay": True, "eps": 1e-3}),
    ("Adamax", _ref_adamax, {}),
    ("Adamax", _ref_adamax, {"betas": (0.5, 0.7), "weight_decay": 0.1, "maximize": True}),
]
IDS = [f"{c[0]}-{c[2]}" for c in CASES]


@pytest.mark.parametrize(("cls", "reference", "options"), CASES, ids=IDS)
def test_matches_reference(cls, reference, options):
    grads = _grads()
    got, _, _ = _run(lambda groups: getattr(optim, cls)(groups, lr=0.1, **options), grads)
    for i, (lr, start) in enumerate(zip((0.1, 0.01), _initial())):
        expected = reference(start, [g[i] for g in grads], lr, **options)
        np.testing.assert_allclose(got[i], expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(("cls", "reference", "options"), CASES, ids=IDS)
def test_matches_torch_optim(torch, cls, reference, options):
    grads = _grads()
    make = lambda groups: getattr(optim, cls)(groups, lr=0.1, **options)
    got, _, _ = _run(make, grads, np.float32)
    tparams = [torch.nn.Parameter(torch.tensor(a.astype(np.float32))) for a in _initial()]
    topt = getattr(torch.optim, cls)(_groups(tparams), lr=0.1, foreach=False, **options)
    for step_grads in grads:
        for p, g in zip(tparams, step_grads):
            p.grad = torch.tensor(g.astype(np.float32))
        topt.step()
    for ours, theirs in zip(got, tparams):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_defaults_are_pytorchs():
    (p,) = _params(_initial()[:1])
    assert optim.NAdam([p]).defaults["lr"] == 2e-3
    assert optim.NAdam([p]).defaults["momentum_decay"] == 4e-3
    assert optim.RAdam([p]).defaults["lr"] == 1e-3
    assert optim.Adamax([p]).defaults["lr"] == 2e-3


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: optim.NAdam(p, betas=(1.0, 0.9)), "index 0"),
        (lambda p: optim.NAdam(p, momentum_decay=-1), "momentum_decay"),
        (lambda p: optim.RAdam(p, eps=-1), "epsilon"),
        (lambda p: optim.Adamax(p, weight_decay=-1), "weight_decay"),
        (lambda p: optim.Adamax(p, lr=-1), "learning rate"),
        (lambda p: optim.RAdam(p, capturable=True), "capturable"),
    ],
)
def test_bad_hyperparameters(make, message):
    with pytest.raises(ValueError, match=message):
        make(_params(_initial()))


@pytest.mark.parametrize("cls", ["NAdam", "RAdam", "Adamax"])
def test_state_dict_round_trip_through_a_checkpoint(cls, tmp_path):
    grads = _grads(2) + _grads(3)
    make = lambda groups: getattr(optim, cls)(groups, lr=0.05, weight_decay=0.01)
    reference, _, _ = _run(make, grads)
    _, opt, first = _run(make, grads[:STEPS])
    dt.save(opt.state_dict(), tmp_path / "opt.safetensors")
    resumed = [dt.nn.Parameter(dt.tensor(p.detach().numpy().copy())) for p in first]
    new_opt = make(_groups(resumed))
    new_opt.load_state_dict(dt.load(tmp_path / "opt.safetensors"))
    assert new_opt.state[resumed[0]]["step"] == STEPS
    got, _, _ = _run(lambda groups: new_opt, grads[STEPS:], params=resumed)
    for a, b in zip(reference, got):
        np.testing.assert_array_equal(a, b)


def test_state_layout_is_pytorchs():
    _, opt, _ = _run(lambda g: optim.NAdam(g), _grads()[:2])
    state = opt.state_dict()["state"][0]
    assert set(state) == {"step", "exp_avg", "exp_avg_sq", "mu_product"}
    _, opt, _ = _run(lambda g: optim.Adamax(g), _grads()[:2])
    assert set(opt.state_dict()["state"][0]) == {"step", "exp_avg", "exp_inf"}


# ---- schedulers ---------------------------------------------------------------------------
def _sgd(lr=0.1, momentum=0.9):
    return optim.SGD([dt.nn.Parameter(dt.zeros(2))], lr=lr, momentum=momentum)


def _lrs(scheduler, n):
    out = []
    for _ in range(n):
        out.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    return out


def test_multiplicative_lr():
    sched = MultiplicativeLR(_sgd(), lambda epoch: 0.5)
    assert _lrs(sched, 4) == [0.1, 0.05, 0.025, 0.0125]
    with pytest.raises(TypeError, match="lr_lambda should be a function"):
        MultiplicativeLR(_sgd(), 0.5)


def test_cyclic_triangular_by_hand():
    opt = _sgd(lr=123.0)
    sched = CyclicLR(opt, base_lr=0.1, max_lr=0.5, step_size_up=2, step_size_down=2)
    got = _lrs(sched, 9)
    np.testing.assert_allclose(got, [0.1, 0.3, 0.5, 0.3, 0.1, 0.3, 0.5, 0.3, 0.1])
    sched = CyclicLR(_sgd(), base_lr=0.1, max_lr=0.5, step_size_up=2, mode="triangular2")
    np.testing.assert_allclose(_lrs(sched, 7), [0.1, 0.3, 0.5, 0.3, 0.1, 0.2, 0.3])
    sched = CyclicLR(_sgd(), 0.1, 0.5, step_size_up=2, mode="exp_range", gamma=0.5)
    np.testing.assert_allclose(_lrs(sched, 3), [0.1, 0.1 + 0.2 * 0.5, 0.1 + 0.4 * 0.25])


def test_cyclic_momentum_goes_the_other_way():
    opt = _sgd()
    sched = CyclicLR(opt, 0.1, 0.5, step_size_up=2, base_momentum=0.8, max_momentum=0.9)
    moms = []
    for _ in range(5):
        moms.append(opt.param_groups[0]["momentum"])
        sched.step()
    np.testing.assert_allclose(moms, [0.9, 0.85, 0.8, 0.85, 0.9])
    adam = optim.Adam([dt.nn.Parameter(dt.zeros(2))])
    CyclicLR(adam, 0.1, 0.5, step_size_up=2).step()
    assert adam.param_groups[0]["betas"] == pytest.approx((0.85, 0.999))
    with pytest.raises(ValueError, match="cycle_momentum=False"):
        CyclicLR(optim.Adagrad([dt.nn.Parameter(dt.zeros(2))]), 0.1, 0.5)
    with pytest.raises(ValueError, match="mode='sawtooth'"):
        CyclicLR(_sgd(), 0.1, 0.5, mode="sawtooth")


def test_cyclic_state_dict_round_trip():
    sched = CyclicLR(_sgd(), 0.1, 0.5, step_size_up=3, mode="triangular2")
    _lrs(sched, 5)
    state = sched.state_dict()
    again = CyclicLR(_sgd(), 0.1, 0.5, step_size_up=3, mode="triangular2")
    again.load_state_dict(state)
    assert _lrs(again, 6) == _lrs(sched, 6)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "triangular"},
        {"mode": "triangular2", "step_size_down": 5},
        {"mode": "exp_range", "gamma": 0.9},
        {"mode": "triangular", "cycle_momentum": False},
    ],
)
@pytest.mark.parametrize("opt_name", ["SGD", "Adam"])
def test_cyclic_matches_torch(torch, kwargs, opt_name):
    extra = {"momentum": 0.9} if opt_name == "SGD" else {}
    ours = getattr(optim, opt_name)([dt.nn.Parameter(dt.zeros(2))], lr=0.1, **extra)
    theirs = getattr(torch.optim, opt_name)([torch.zeros(2, requires_grad=True)], lr=0.1, **extra)
    a = CyclicLR(ours, 0.01, 0.2, step_size_up=3, **kwargs)
    b = torch.optim.lr_scheduler.CyclicLR(theirs, 0.01, 0.2, step_size_up=3, **kwargs)
    for _ in range(20):
        assert a.get_last_lr() == pytest.approx(b.get_last_lr(), rel=1e-12)
        key = "momentum" if opt_name == "SGD" else "betas"
        assert ours.param_groups[0][key] == pytest.approx(theirs.param_groups[0][key])
        ours.step()
        theirs.step()
        a.step()
        b.step()


def test_multiplicative_matches_torch(torch):
    ours = optim.SGD([dt.nn.Parameter(dt.zeros(2))], lr=0.1)
    theirs = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1)
    a = MultiplicativeLR(ours, lambda e: 0.9 + 0.01 * e)
    b = torch.optim.lr_scheduler.MultiplicativeLR(theirs, lambda e: 0.9 + 0.01 * e)
    for _ in range(8):
        assert a.get_last_lr() == pytest.approx(b.get_last_lr(), rel=1e-12)
        ours.step()
        theirs.step()
        a.step()
        b.step()
