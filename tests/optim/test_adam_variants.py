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
    # PyTorch keeps the product of the mu_t as a float32 tensor (its default float dtype).
    m, v, prod = np.zeros_like(p), np.zeros_like(p), np.float32(1.0)
    for t, g in enumerate(grads, 1):
        g = -g if maximize else g
        if decoupled_weight_decay:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        mu = b1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))
        mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
        prod = prod * np.float32(mu)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        denom = np.sqrt(v / (1 - b2**t)) + eps
        p = p - lr * (1 - mu) / (1 - float(prod)) * g / denom
        p = p - lr * mu_next / (1 - float(prod) * mu_next) * m / denom
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


def _mu_product(t, beta1=0.9, momentum_decay=4e-3):
    prod = np.float32(1.0)
    for k in range(1, t + 1):
        prod = prod * np.float32(beta1 * (1 - 0.5 * 0.96 ** (k * momentum_decay)))
    return prod


def test_nadam_mu_product_is_a_float32_cpu_tensor(tmp_path):
    # As torch's state: a 0-d float32 tensor on the CPU, also for float64 parameters and
    # after a load (not cast to the parameter's dtype).
    _, opt, params = _run(lambda g: optim.NAdam(g), _grads())  # float64 parameters
    product = opt.state_dict()["state"][0]["mu_product"]
    assert isinstance(product, dt.Tensor)
    assert (product.dtype, product.shape, str(product.device)) == (dt.float32, (), "cpu")
    assert product.item() == _mu_product(STEPS)
    dt.save(opt.state_dict(), tmp_path / "opt.safetensors")
    resumed = optim.NAdam(_groups(params))
    resumed.load_state_dict(dt.load(tmp_path / "opt.safetensors"))
    loaded = resumed.state[params[0]]["mu_product"]
    assert (loaded.dtype, loaded.shape, loaded.item()) == (dt.float32, (), _mu_product(STEPS))
    assert loaded is not product
    # An older dtrain saved a Python float: it loads as the tensor.
    old = opt.state_dict()
    old["state"] = {i: {**s, "mu_product": float(s["mu_product"])} for i, s in old["state"].items()}
    resumed.load_state_dict(old)
    assert resumed.state[params[1]]["mu_product"].dtype == dt.float32


def _torch_state(torch, state_dict):
    """A dtrain state dict with its tensors as torch tensors."""
    to_torch = lambda v: torch.tensor(np.array(v)) if isinstance(v, dt.Tensor) else v
    state = {i: {k: to_torch(v) for k, v in s.items()} for i, s in state_dict["state"].items()}
    return {"state": state, "param_groups": state_dict["param_groups"]}


def _dtrain_state(state_dict):
    """A torch state dict with its tensors as numpy arrays (what dtrain loads)."""
    to_numpy = lambda v: v.numpy() if hasattr(v, "numpy") else v
    state = {i: {k: to_numpy(v) for k, v in s.items()} for i, s in state_dict["state"].items()}
    return {"state": state, "param_groups": state_dict["param_groups"]}


def test_nadam_state_dicts_exchange_with_torch(torch):
    grads = _grads(2) + _grads(3)
    make_ours = lambda groups: optim.NAdam(groups, lr=0.05, weight_decay=0.01)

    def make_theirs(params):
        return torch.optim.NAdam(_groups(params), lr=0.05, weight_decay=0.01, foreach=False)

    def run_theirs(topt, params, steps):
        for step_grads in steps:
            for p, g in zip(params, step_grads):
                p.grad = torch.tensor(g.astype(np.float32))
            topt.step()

    def torch_params(arrays):
        return [torch.nn.Parameter(torch.tensor(np.asarray(a, np.float32))) for a in arrays]

    # The first half in one library, the second in the other, both ways; the ends agree with
    # a run entirely in torch.
    whole = torch_params(_initial())
    run_theirs(make_theirs(whole), whole, grads)
    expected = [p.detach().numpy() for p in whole]

    theirs = torch_params(_initial())
    topt = make_theirs(theirs)
    run_theirs(topt, theirs, grads[:STEPS])
    saved = topt.state_dict()
    assert saved["state"][0]["mu_product"].dtype == torch.float32
    ours = _params([p.detach().numpy() for p in theirs], np.float32)
    opt = make_ours(_groups(ours))
    opt.load_state_dict(_dtrain_state(saved))
    assert opt.state[ours[0]]["mu_product"].item() == saved["state"][0]["mu_product"].item()
    got, opt, _ = _run(lambda groups: opt, grads[STEPS:], params=ours)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)

    _, opt, ours = _run(make_ours, grads[:STEPS], np.float32)
    back = torch_params([p.detach().numpy() for p in ours])
    topt = make_theirs(back)
    topt.load_state_dict(_torch_state(torch, opt.state_dict()))
    loaded = topt.state[back[0]]["mu_product"]
    assert loaded.dtype == torch.float32 and loaded.item() == _mu_product(STEPS)
    run_theirs(topt, back, grads[STEPS:])
    for a, b in zip(back, expected):
        np.testing.assert_allclose(a.detach().numpy(), b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("cls", ["NAdam", "RAdam", "Adamax"])
def test_a_tensor_lr_is_read_once_per_group_per_step(cls, monkeypatch):
    lrs = [dt.tensor(0.1), dt.tensor(0.01)]
    reads = []
    item = dt.Tensor.item

    def counting_item(self):
        if any(self is lr for lr in lrs):
            reads.append(self)
        return item(self)

    monkeypatch.setattr(dt.Tensor, "item", counting_item)
    params = _params(_initial() + _initial())  # two parameters in each group
    groups = [
        {"params": params[:2], "lr": lrs[0]},
        {"params": params[2:], "lr": lrs[1]},
    ]
    opt = getattr(optim, cls)(groups)
    for p in params:
        p.grad = dt.ones_like(p)
    opt.step()
    assert len(reads) == 2 and reads[0] is lrs[0] and reads[1] is lrs[1]
    # The values equal a float lr's; an in-place change is read at the next step.
    floats = _params(_initial() + _initial())
    f32 = lambda x: float(np.float32(x))  # the tensor lr's value
    opt_f = getattr(optim, cls)(
        [{"params": floats[:2], "lr": f32(0.1)}, {"params": floats[2:], "lr": f32(0.01)}]
    )
    for p in floats:
        p.grad = dt.ones_like(p)
    opt_f.step()
    with dt.no_grad():
        lrs[0].fill_(0.05)
    opt_f.param_groups[0]["lr"] = f32(0.05)
    opt.step()
    opt_f.step()
    for a, b in zip(params, floats):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())


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


@pytest.mark.parametrize("cls", ["NAdam", "RAdam", "Adamax"])
def test_on_the_test_device_matches_the_cpu(cls, test_device):
    # With --device=emulated-cuda (or cuda) the updates take their cupy path; NAdam's
    # mu_product stays a CPU float32 tensor there too (as torch's without capturable).
    grads = _grads()

    def run(device, state_dict=None):
        params = [
            dt.nn.Parameter(dt.tensor(a.astype(np.float32), device=device)) for a in _initial()
        ]
        opt = getattr(optim, cls)(_groups(params), lr=0.1, weight_decay=0.01)
        if state_dict is not None:
            opt.load_state_dict(state_dict)
        for step_grads in grads:
            for p, g in zip(params, step_grads):
                p.grad = dt.tensor(g.astype(np.float32), device=device)
            opt.step()
        return [p.detach().cpu().numpy() for p in params], opt

    on_device, opt = run(test_device)
    on_cpu, cpu_opt = run("cpu")
    for a, b in zip(on_device, on_cpu):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    _, resumed = run(test_device, cpu_opt.state_dict())  # CPU state onto device parameters
    for state in (opt.state_dict()["state"][0], resumed.state_dict()["state"][0]):
        assert str(state["exp_avg"].device) == str(dt.device(test_device))
        if cls == "NAdam":
            product = state["mu_product"]
            assert (str(product.device), product.dtype) == ("cpu", dt.float32)
