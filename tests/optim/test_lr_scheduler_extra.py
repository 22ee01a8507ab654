"""ExponentialLR, ConstantLR, PolynomialLR, CosineAnnealingWarmRestarts, ChainedScheduler,
OneCycleLR and ReduceLROnPlateau: sequences against values worked out by hand and closed
forms, against torch.optim.lr_scheduler when installed (step by step), state dicts
through JSON, argument checks; tensor learning rates; import paths."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import dtrain as dt
import dtrain.optim as optim
from dtrain.optim import lr_scheduler

LRS = (0.1, 0.03)


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def _optimizer(cls="SGD", lrs=LRS, **options):
    groups = [{"params": [dt.nn.Parameter(dt.zeros(2))], "lr": lr} for lr in lrs]
    return getattr(optim, cls)(groups, lr=lrs[0], **options)


def _momenta(opt):
    return [g["betas"][0] if "betas" in g else g["momentum"] for g in opt.param_groups]


def _sequence(scheduler, steps, momentum=False):
    """Per step: the lrs (then the momenta, with ``momentum``), ``steps`` rows."""

    def row():
        values = list(scheduler.get_last_lr())
        return values + (_momenta(scheduler.optimizer) if momentum else [])

    out = [row()]
    for _ in range(steps - 1):
        scheduler.optimizer.step()
        scheduler.step()
        out.append(row())
    return np.array(out)


def _close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-15)


# ---- by hand and closed forms -----------------------------------------------------------
def test_exponential_lr():
    got = _sequence(lr_scheduler.ExponentialLR(_optimizer(), gamma=0.5), 5)
    _close(got[:, 0], [0.1, 0.05, 0.025, 0.0125, 0.00625])
    _close(got[:, 1], 0.03 * 0.5 ** np.arange(5))


def test_constant_lr_scales_then_restores():
    got = _sequence(lr_scheduler.ConstantLR(_optimizer(), factor=0.5, total_iters=3), 6)
    _close(got[:, 0], [0.05, 0.05, 0.05, 0.1, 0.1, 0.1])


def test_polynomial_lr_reaches_zero_and_stays():
    got = _sequence(lr_scheduler.PolynomialLR(_optimizer(), total_iters=4, power=2.0), 7)
    _close(got[:, 0], 0.1 * np.array([1, 0.75**2, 0.5**2, 0.25**2, 0, 0, 0]))


def test_cosine_warm_restarts_periods_grow_by_t_mult():
    eta = 0.01
    sched = lr_scheduler.CosineAnnealingWarmRestarts(_optimizer(), T_0=2, T_mult=2, eta_min=eta)
    got = _sequence(sched, 15)[:, 0]
    # periods of 2, 4 and 8 epochs: (T_cur, T_i) per epoch
    t_cur = [0, 1, 0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 6, 7, 0]
    t_i = [2, 2, 4, 4, 4, 4, 8, 8, 8, 8, 8, 8, 8, 8, 16]
    expected = [eta + (0.1 - eta) * (1 + math.cos(math.pi * c / i)) / 2 for c, i in zip(t_cur, t_i)]
    _close(got, expected)
    assert got[2] == got[6] == got[14] == pytest.approx(0.1)  # each restart


def test_cosine_warm_restarts_fractional_epochs():
    sched = lr_scheduler.CosineAnnealingWarmRestarts(_optimizer(), T_0=4, T_mult=2)
    for epoch, t_cur, t_i in [(1.5, 1.5, 4), (5.0, 1.0, 8), (12.0, 0.0, 16), (2.0, 2.0, 4)]:
        sched.step(epoch)
        expected = 0.1 * (1 + math.cos(math.pi * t_cur / t_i)) / 2
        assert sched.get_last_lr()[0] == pytest.approx(expected, rel=1e-12)
        assert sched.last_epoch == math.floor(epoch)
    with pytest.raises(ValueError, match="non-negative epoch, but got -1"):
        sched.step(-1)


def test_chained_scheduler_multiplies_the_factors():
    opt = _optimizer()
    chain = lr_scheduler.ChainedScheduler(
        [
            lr_scheduler.ConstantLR(opt, factor=0.1, total_iters=2),
            lr_scheduler.ExponentialLR(opt, gamma=0.9),
        ]
    )
    got = _sequence(chain, 5)[:, 0]
    _close(got, [0.1 * 0.1, 0.1 * 0.1 * 0.9, 0.1 * 0.9**2, 0.1 * 0.9**3, 0.1 * 0.9**4])


def _one_cycle_by_hand(step, total, peak, pct, div, final_div, strategy, three_phase):
    start, low = peak / div, peak / div / final_div

    def anneal(a, b, t):
        if strategy == "cos":
            return b + (a - b) / 2 * (math.cos(math.pi * t) + 1)
        return a + (b - a) * t

    up = pct * total - 1
    if three_phase:
        down = 2 * pct * total - 2
        if step <= up:
            return anneal(start, peak, step / up)
        if step <= down:
            return anneal(peak, start, (step - up) / (down - up))
        return anneal(start, low, (step - down) / (total - 1 - down))
    if step <= up:
        return anneal(start, peak, step / up)
    return anneal(peak, low, (step - up) / (total - 1 - up))


@pytest.mark.parametrize("strategy", ["cos", "linear"])
@pytest.mark.parametrize("three_phase", [False, True])
def test_one_cycle_lr_by_hand(strategy, three_phase):
    total, pct, div, final_div = 20, 0.25, 10.0, 100.0
    sched = lr_scheduler.OneCycleLR(
        _optimizer(momentum=0.9),
        max_lr=[1.0, 0.5],
        total_steps=total,
        pct_start=pct,
        anneal_strategy=strategy,
        div_factor=div,
        final_div_factor=final_div,
        three_phase=three_phase,
    )
    got = _sequence(sched, total)
    for peak, column in ((1.0, 0), (0.5, 1)):
        expected = [
            _one_cycle_by_hand(s, total, peak, pct, div, final_div, strategy, three_phase)
            for s in range(total)
        ]
        _close(got[:, column], expected)
    assert got[0, 0] == pytest.approx(0.1) and got[-1, 0] == pytest.approx(1e-3)
    assert max(got[:, 0]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"Tried to step 21 times.*total steps is 20"):
        sched.step()
        sched.step()


def test_one_cycle_cycles_sgd_momentum_and_adam_beta1():
    sched = lr_scheduler.OneCycleLR(_optimizer(momentum=0.9), max_lr=1.0, total_steps=10)
    got = _sequence(sched, 10, momentum=True)
    assert got[0, 2] == pytest.approx(0.95)  # max_momentum at the start
    assert got[2, 2] == pytest.approx(0.85)  # base_momentum at the peak rate (step 2)
    assert got[-1, 2] == pytest.approx(0.95)
    assert np.argmax(got[:, 0]) == np.argmin(got[:, 2]) == 2
    adam = _optimizer("AdamW", betas=(0.9, 0.98))
    got = _sequence(
        lr_scheduler.OneCycleLR(adam, max_lr=1.0, epochs=2, steps_per_epoch=5), 10, True
    )
    assert got[0, 2] == pytest.approx(0.95) and got[2, 2] == pytest.approx(0.85)
    assert all(g["betas"][1] == 0.98 for g in adam.param_groups)  # beta2 untouched
    off = _optimizer("Adagrad")
    with pytest.raises(ValueError, match="Adagrad has neither"):
        lr_scheduler.OneCycleLR(off, max_lr=1.0, total_steps=10)
    lr_scheduler.OneCycleLR(off, max_lr=1.0, total_steps=10, cycle_momentum=False)


# ---- ReduceLROnPlateau --------------------------------------------------------------------
def _plateau(metrics, **options):
    opt = _optimizer()
    sched = lr_scheduler.ReduceLROnPlateau(opt, **options)
    out = []
    for m in metrics:
        sched.step(m)
        out.append(sched.get_last_lr()[0])
    return out, sched


def test_plateau_waits_patience_then_reduces():
    # best 1.0 at epoch 1; epochs 2-3 bad (patience 2); the 3rd bad epoch (4) reduces
    got, sched = _plateau([1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5], patience=2, factor=0.5)
    _close(got, [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.025])
    assert sched.best == 0.5 and sched.last_epoch == 8


def test_plateau_threshold_modes_and_max_mode():
    # rel: 0.9999 is not below 1.0 * (1 - 1e-3): bad epochs
    got, _ = _plateau([1.0, 0.9999, 0.9999], patience=1, threshold=1e-3)
    _close(got, [0.1, 0.1, 0.01])
    got, _ = _plateau([1.0, 0.95, 0.9], patience=0, threshold=0.1, threshold_mode="abs")
    _close(got, [0.1, 0.01, 0.001])  # improvements of 0.05 do not count
    got, _ = _plateau([1.0, 2.0, 2.0, 3.0], mode="max", patience=0)
    _close(got, [0.1, 0.1, 0.01, 0.01])


def test_plateau_cooldown_min_lr_and_eps():
    got, _ = _plateau([1.0] * 7, patience=0, cooldown=2, min_lr=0.02, factor=0.5)
    # reduce at 1, cooldown at 2-3, reduce at 4 (to the floor), then held at 0.02
    _close(got, [0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025])
    got, sched = _plateau([1.0] * 4, patience=0, min_lr=[0.07, 0.0])
    assert got[-1] == 0.07 and sched.get_last_lr()[1] == pytest.approx(0.03 * 1e-3)
    got, _ = _plateau([1.0] * 3, patience=0, factor=0.9, eps=0.02)
    _close(got, [0.1, 0.1, 0.1])  # a reduction of 0.01 is under eps: skipped


def test_plateau_takes_a_tensor_metric_and_round_trips_its_state():
    opt = _optimizer()
    sched = lr_scheduler.ReduceLROnPlateau(opt, patience=1)
    for m in (1.0, 2.0):
        sched.step(dt.tensor(m))
    saved = json.loads(json.dumps(sched.state_dict()))
    other = lr_scheduler.ReduceLROnPlateau(_optimizer(), mode="max", patience=5)
    other.load_state_dict(saved)
    assert (other.mode, other.patience, other.best, other.num_bad_epochs) == ("min", 1, 1.0, 1)
    assert other.mode_worse == math.inf
    sched.step(3.0)
    other.step(3.0)
    assert sched.get_last_lr() == other.get_last_lr() == pytest.approx([0.01, 0.003])


# ---- state dicts through JSON -------------------------------------------------------------
MAKERS = {
    "ExponentialLR": lambda o: lr_scheduler.ExponentialLR(o, gamma=0.8),
    "ConstantLR": lambda o: lr_scheduler.ConstantLR(o, factor=0.25, total_iters=7),
    "PolynomialLR": lambda o: lr_scheduler.PolynomialLR(o, total_iters=9, power=1.5),
    "CosineAnnealingWarmRestarts": lambda o: lr_scheduler.CosineAnnealingWarmRestarts(
        o, T_0=3, T_mult=2, eta_min=1e-3
    ),
    "OneCycleLR": lambda o: lr_scheduler.OneCycleLR(o, max_lr=1.0, total_steps=12),
    "ChainedScheduler": lambda o: lr_scheduler.ChainedScheduler(
        [lr_scheduler.ConstantLR(o, factor=0.5, total_iters=6), lr_scheduler.ExponentialLR(o, 0.9)]
    ),
}


@pytest.mark.parametrize("name", MAKERS)
def test_state_dict_through_json_resumes_the_same_sequence(name):
    opt = _optimizer(momentum=0.9)
    full = _sequence(MAKERS[name](opt), 12, momentum=True)

    opt = _optimizer(momentum=0.9)
    sched = MAKERS[name](opt)
    for _ in range(5):
        opt.step()
        sched.step()
    saved_sched = json.loads(json.dumps(sched.state_dict()))
    saved_opt = opt.state_dict()
    saved_opt["param_groups"] = json.loads(json.dumps(saved_opt["param_groups"]))

    new_opt = _optimizer(momentum=0.9)
    new_sched = MAKERS[name](new_opt)
    new_opt.load_state_dict(saved_opt)
    new_sched.load_state_dict(saved_sched)
    rest = [new_sched.get_last_lr() + _momenta(new_opt)]
    for _ in range(6):
        new_opt.step()
        new_sched.step()
        rest.append(new_sched.get_last_lr() + _momenta(new_opt))
    np.testing.assert_array_equal(np.array(rest), full[5:])


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda o: lr_scheduler.ConstantLR(o, factor=1.5), ValueError, "factor=1.5"),
        (
            lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=0),
            ValueError,
            "T_0 .* got 0",
        ),
        (
            lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=2, T_mult=0),
            ValueError,
            "T_mult >= 1, but got 0",
        ),
        (lambda o: lr_scheduler.OneCycleLR(o, max_lr=1.0), ValueError, "total_steps OR"),
        (
            lambda o: lr_scheduler.OneCycleLR(o, max_lr=1.0, total_steps=0),
            ValueError,
            "total_steps, but got 0",
        ),
        (
            lambda o: lr_scheduler.OneCycleLR(o, max_lr=1.0, total_steps=5, pct_start=1),
            ValueError,
            "pct_start, but got 1",
        ),
        (
            lambda o: lr_scheduler.OneCycleLR(o, 1.0, 5, anneal_strategy="exp"),
            ValueError,
            "'cos' or 'linear'",
        ),
        (
            lambda o: lr_scheduler.OneCycleLR(o, max_lr=[1.0], total_steps=5),
            ValueError,
            "it has 1 values, the optimizer has 2",
        ),
        (lambda o: lr_scheduler.ReduceLROnPlateau(o, factor=1.0), ValueError, "factor=1.0"),
        (lambda o: lr_scheduler.ReduceLROnPlateau(o, mode="low"), ValueError, "'low'"),
        (
            lambda o: lr_scheduler.ReduceLROnPlateau(o, threshold_mode="x"),
            ValueError,
            "threshold mode 'x'",
        ),
        (
            lambda o: lr_scheduler.ReduceLROnPlateau(o, min_lr=[0.1]),
            ValueError,
            "expected 2 min_lrs",
        ),
        (lambda o: lr_scheduler.ChainedScheduler([]), ValueError, "at least one"),
        (
            lambda o: lr_scheduler.ChainedScheduler([lr_scheduler.ReduceLROnPlateau(o)]),
            ValueError,
            "does not support ReduceLROnPlateau",
        ),
        (
            lambda o: lr_scheduler.ChainedScheduler(
                [lr_scheduler.ExponentialLR(o, 0.9), lr_scheduler.ExponentialLR(_optimizer(), 0.9)]
            ),
            ValueError,
            "same optimizer",
        ),
    ],
)
def test_bad_arguments(make, error, message):
    with pytest.raises(error, match=message):
        make(_optimizer())


# ---- tensor learning rates, import paths ------------------------------------------------
def test_schedulers_fill_a_tensor_lr_in_place():
    lr = dt.tensor(np.array(0.1))
    (p,) = [dt.nn.Parameter(dt.zeros(2, dtype=dt.float64))]
    opt = optim.SGD([p], lr=lr)
    sched = lr_scheduler.ExponentialLR(opt, gamma=0.5)
    assert opt.param_groups[0]["initial_lr"] == 0.1 and isinstance(sched.base_lrs[0], float)
    for _ in range(2):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] is lr and lr.item() == pytest.approx(0.025)
    assert sched.get_last_lr() == [pytest.approx(0.025)]
    plateau = lr_scheduler.ReduceLROnPlateau(opt, patience=0)
    plateau.step(1.0)
    plateau.step(1.0)
    assert opt.param_groups[0]["lr"] is lr and lr.item() == pytest.approx(0.0025)
    p.grad = dt.ones(2, dtype=dt.float64)
    opt.step()
    np.testing.assert_allclose(p.detach().numpy(), [-0.0025, -0.0025])


def test_torch_import_paths():
    from dtrain.optim.lr_scheduler import LRScheduler, _LRScheduler
    from dtrain.optim.optimizer import Optimizer

    assert issubclass(_LRScheduler, LRScheduler)
    assert isinstance(_optimizer(), Optimizer) and Optimizer is optim.Optimizer

    class Halve(_LRScheduler):  # old-style subclass, as PyTorch code written for 1.x has
        def get_lr(self):
            return [base * 0.5**self.last_epoch for base in self.base_lrs]

    _close(_sequence(Halve(_optimizer()), 3)[:, 0], [0.1, 0.05, 0.025])


# ---- against torch.optim.lr_scheduler, step by step -------------------------------------
TORCH_CASES = [
    ("ExponentialLR", {"gamma": 0.9}, "SGD", {}),
    ("ConstantLR", {"factor": 0.5, "total_iters": 4}, "SGD", {}),
    ("PolynomialLR", {"total_iters": 6, "power": 2.0}, "SGD", {}),
    ("CosineAnnealingWarmRestarts", {"T_0": 3, "T_mult": 2, "eta_min": 1e-3}, "SGD", {}),
    ("CosineAnnealingWarmRestarts", {"T_0": 4}, "SGD", {}),
    ("OneCycleLR", {"max_lr": [1.0, 0.5], "total_steps": 25}, "SGD", {"momentum": 0.9}),
    (
        "OneCycleLR",
        {
            "max_lr": 1.0,
            "total_steps": 25,
            "anneal_strategy": "linear",
            "three_phase": True,
            "pct_start": 0.25,
            "div_factor": 10.0,
            "final_div_factor": 100.0,
        },
        "Adam",
        {},
    ),
    ("OneCycleLR", {"max_lr": 1.0, "total_steps": 25, "cycle_momentum": False}, "AdamW", {}),
]


def _torch_optimizer(torch, cls, **options):
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lr} for lr in LRS]
    return getattr(torch.optim, cls)(groups, lr=LRS[0], **options)


@pytest.mark.parametrize(("name", "options", "cls", "opt_options"), TORCH_CASES, ids=str)
def test_matches_torch(torch, name, options, cls, opt_options):
    ours = _sequence(
        getattr(lr_scheduler, name)(_optimizer(cls, **opt_options), **options), 25, True
    )
    topt = _torch_optimizer(torch, cls, **opt_options)
    theirs = _sequence(getattr(torch.optim.lr_scheduler, name)(topt, **options), 25, True)
    np.testing.assert_array_equal(ours, theirs)


def test_chained_matches_torch(torch):
    def run(module, opt):
        chain = module.ChainedScheduler(
            [module.ConstantLR(opt, factor=0.1, total_iters=3), module.ExponentialLR(opt, 0.9)]
        )
        return _sequence(chain, 10)

    np.testing.assert_array_equal(
        run(lr_scheduler, _optimizer()),
        run(torch.optim.lr_scheduler, _torch_optimizer(torch, "SGD")),
    )


@pytest.mark.parametrize(
    "options",
    [
        {"patience": 2},
        {"mode": "max", "factor": 0.5, "patience": 1, "threshold": 0.1, "threshold_mode": "abs"},
        {"cooldown": 2, "patience": 0, "min_lr": [0.02, 0.01], "factor": 0.5},
    ],
    ids=str,
)
def test_plateau_matches_torch(torch, options):
    rng = np.random.default_rng(3)
    metrics = np.round(1.0 + np.cumsum(rng.normal(0.0, 0.05, 40)), 2)
    ours = lr_scheduler.ReduceLROnPlateau(_optimizer(), **options)
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(_torch_optimizer(torch, "SGD"), **options)
    for m in metrics:
        ours.step(float(m))
        theirs.step(float(m))
        assert ours.get_last_lr() == theirs.get_last_lr()
        assert ours.num_bad_epochs == theirs.num_bad_epochs
