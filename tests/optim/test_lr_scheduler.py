"""Learning-rate schedulers: sequences against closed forms, hard values and (when torch is
installed) torch.optim.lr_scheduler; state dicts through JSON; argument checks."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import dtrain as dt
import dtrain.optim as optim
from dtrain.optim import lr_scheduler

LRS = (0.1, 0.03)


def _optimizer(lrs=LRS):
    groups = [{"params": [dt.nn.Parameter(dt.zeros(2))], "lr": lr} for lr in lrs]
    return optim.SGD(groups, lr=lrs[0], momentum=0.9)


def _sequence(scheduler, epochs):
    """The lrs at epochs 0 .. epochs-1, one list per group."""
    out = [scheduler.get_last_lr()]
    for _ in range(epochs - 1):
        scheduler.optimizer.step()
        scheduler.step()
        out.append(scheduler.get_last_lr())
    return np.array(out)


def _close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-15)


def test_steplr_hard_values():
    got = _sequence(lr_scheduler.StepLR(_optimizer(), step_size=3, gamma=0.1), 8)
    expected = [0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.001, 0.001]
    _close(got[:, 0], expected)
    _close(got[:, 1], np.array(expected) * 0.3)


def test_multisteplr_hard_values():
    opt = _optimizer()
    got = _sequence(lr_scheduler.MultiStepLR(opt, milestones=[2, 5, 5], gamma=0.5), 7)
    _close(got[:, 0], [0.1, 0.1, 0.05, 0.05, 0.05, 0.0125, 0.0125])
    assert [g["lr"] for g in opt.param_groups] == list(got[-1])


def test_cosine_annealing_matches_closed_form_over_two_periods():
    t_max, eta_min = 10, 1e-3
    got = _sequence(lr_scheduler.CosineAnnealingLR(_optimizer(), T_max=t_max, eta_min=eta_min), 45)
    epochs = np.arange(45)[:, None]
    base = np.array(LRS)[None, :]
    expected = eta_min + (base - eta_min) * (1 + np.cos(np.pi * epochs / t_max)) / 2
    _close(got, expected)
    assert got[t_max, 0] == pytest.approx(eta_min, abs=1e-15)


def test_linearlr_matches_closed_form():
    sched = lr_scheduler.LinearLR(_optimizer(), start_factor=0.25, end_factor=0.9, total_iters=6)
    got = _sequence(sched, 10)
    factor = 0.25 + (0.9 - 0.25) * np.minimum(np.arange(10), 6) / 6
    _close(got, factor[:, None] * np.array(LRS)[None, :])


def test_lambdalr_one_function_per_group():
    sched = lr_scheduler.LambdaLR(_optimizer(), [lambda e: 0.9**e, lambda e: 1 / (e + 1)])
    got = _sequence(sched, 6)
    e = np.arange(6)
    _close(got[:, 0], 0.1 * 0.9**e)
    _close(got[:, 1], 0.03 / (e + 1))


def test_sequentiallr_warmup_then_cosine():
    opt = _optimizer()
    warmup = lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=4)
    cosine = lr_scheduler.CosineAnnealingLR(opt, T_max=8, eta_min=0.0)
    sched = lr_scheduler.SequentialLR(opt, [warmup, cosine], milestones=[4])
    got = _sequence(sched, 14)
    e = np.arange(14)
    factor = np.where(e < 4, 0.1 + 0.9 * e / 4, (1 + np.cos(np.pi * np.maximum(e - 4, 0) / 8)) / 2)
    _close(got, factor[:, None] * np.array(LRS)[None, :])


def test_schedulers_chain_on_one_optimizer():
    opt = _optimizer()
    a = lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    b = lr_scheduler.MultiStepLR(opt, milestones=[3], gamma=0.1)
    lrs = []
    for _ in range(6):
        opt.step()
        a.step()
        b.step()
        lrs.append(opt.param_groups[0]["lr"])
    _close(lrs, [0.1, 0.05, 0.005, 0.0025, 0.0025, 0.00125])


def test_step_with_epoch_warns_and_uses_the_closed_form():
    sched = lr_scheduler.CosineAnnealingLR(_optimizer(), T_max=10)
    with pytest.warns(UserWarning, match="deprecated"):
        sched.step(7)
    _close(sched.get_last_lr()[0], 0.1 * (1 + math.cos(math.pi * 0.7)) / 2)


def test_initial_lr_is_set_and_resuming_needs_it():
    opt = _optimizer()
    sched = lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    assert [g["initial_lr"] for g in opt.param_groups] == list(LRS)
    assert sched.last_epoch == 0 and sched.base_lrs == list(LRS)
    with pytest.raises(KeyError, match=r"initial_lr.*param_groups\[0\]"):
        lr_scheduler.StepLR(_optimizer(), step_size=1, last_epoch=3)


def _make_all(opt):
    return {
        "step": lr_scheduler.StepLR(opt, step_size=3, gamma=0.5),
        "multistep": lr_scheduler.MultiStepLR(opt, milestones=[2, 6], gamma=0.3),
        "cosine": lr_scheduler.CosineAnnealingLR(opt, T_max=7, eta_min=1e-4),
        "linear": lr_scheduler.LinearLR(opt, start_factor=0.2, total_iters=5),
        "lambda": lr_scheduler.LambdaLR(opt, lambda e: 0.95**e),
    }


@pytest.mark.parametrize("name", ["step", "multistep", "cosine", "linear", "lambda", "sequential"])
def test_state_dict_through_json_resumes_the_same_sequence(name):
    def make(opt):
        if name == "sequential":
            first = lr_scheduler.LinearLR(opt, start_factor=0.5, total_iters=3)
            second = lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
            return lr_scheduler.SequentialLR(opt, [first, second], milestones=[3])
        return _make_all(opt)[name]

    opt = _optimizer()
    sched = make(opt)
    full = _sequence(make(_optimizer()), 14)
    _sequence(sched, 6)
    saved_sched = json.loads(json.dumps(sched.state_dict()))
    saved_opt = opt.state_dict()
    saved_opt["param_groups"] = json.loads(json.dumps(saved_opt["param_groups"]))

    new_opt = _optimizer()
    new_sched = make(new_opt)  # as PyTorch advises: the scheduler first, then the optimizer
    new_opt.load_state_dict(saved_opt)
    new_sched.load_state_dict(saved_sched)
    rest = [new_sched.get_last_lr()]
    for _ in range(8):
        new_opt.step()
        new_sched.step()
        rest.append(new_sched.get_last_lr())
    np.testing.assert_array_equal(np.array(rest), full[5:])


def test_lambdalr_state_dict_leaves_functions_out_but_keeps_callable_objects():
    class Decay:
        def __init__(self, rate):
            self.rate = rate

        def __call__(self, epoch):
            return self.rate**epoch

    opt = _optimizer()
    sched = lr_scheduler.LambdaLR(opt, [lambda e: 1.0, Decay(0.5)])
    sd = sched.state_dict()
    assert sd["lr_lambdas"] == [None, {"rate": 0.5}]
    other = lr_scheduler.LambdaLR(_optimizer(), [lambda e: 1.0, Decay(0.9)])
    other.load_state_dict(sd)
    assert other.lr_lambdas[1].rate == 0.5


def test_multisteplr_loads_a_counter_state():
    from collections import Counter

    sched = lr_scheduler.MultiStepLR(_optimizer(), milestones=[4])
    sd = sched.state_dict()
    assert sd["milestones"] == [4]
    sd["milestones"] = {"2": 1, "5": 2}  # a PyTorch Counter after JSON
    sched.load_state_dict(sd)
    assert sched.milestones == Counter({2: 1, 5: 2})


def test_load_state_dict_with_other_group_count_fails():
    sd = lr_scheduler.StepLR(_optimizer(), step_size=2).state_dict()
    with pytest.raises(ValueError, match="2 base learning rates but the optimizer has 1"):
        lr_scheduler.StepLR(_optimizer((0.1,)), step_size=2).load_state_dict(sd)


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda o: lr_scheduler.StepLR(o, step_size=0), ValueError, "step_size .* got 0"),
        (lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=-2), ValueError, "T_max .* got -2"),
        (lambda o: lr_scheduler.LinearLR(o, start_factor=0), ValueError, "start_factor=0"),
        (lambda o: lr_scheduler.LinearLR(o, end_factor=1.5), ValueError, "end_factor=1.5"),
        (lambda o: lr_scheduler.LinearLR(o, total_iters=0), ValueError, "total_iters .* got 0"),
        (lambda o: lr_scheduler.LambdaLR(o, [lambda e: 1.0]), ValueError, "Expected 2 lr_lambdas"),
        (lambda o: lr_scheduler.StepLR(object(), 2), TypeError, "object is not an Optimizer"),
        (lambda o: lr_scheduler.SequentialLR(o, [], []), ValueError, "at least one"),
        (
            lambda o: lr_scheduler.SequentialLR(o, [lr_scheduler.StepLR(o, 2)], [3]),
            ValueError,
            "1 schedulers and 1 milestones",
        ),
        (
            lambda o: lr_scheduler.SequentialLR(o, [lr_scheduler.StepLR(_optimizer(), 2)], []),
            ValueError,
            "same optimizer",
        ),
    ],
)
def test_bad_arguments(make, error, message):
    with pytest.raises(error, match=message):
        make(_optimizer())


# ---- against torch.optim.lr_scheduler ---------------------------------------------------
TORCH_SCHEDULERS = {
    "StepLR": {"step_size": 3, "gamma": 0.5},
    "MultiStepLR": {"milestones": [2, 6, 6], "gamma": 0.3},
    "CosineAnnealingLR": {"T_max": 7, "eta_min": 1e-4},
    "LinearLR": {"start_factor": 0.2, "end_factor": 0.8, "total_iters": 5},
    "LambdaLR": {"lr_lambda": lambda e: 0.95**e},
    "SequentialLR": None,
}


def _torch_like(module, opt, name):
    if name != "SequentialLR":
        return getattr(module, name)(opt, **TORCH_SCHEDULERS[name])
    warmup = module.LinearLR(opt, start_factor=0.1, total_iters=3)
    cosine = module.CosineAnnealingLR(opt, T_max=10, eta_min=1e-3)
    decay = module.StepLR(opt, step_size=4, gamma=0.5)
    return module.SequentialLR(opt, [warmup, cosine, decay], milestones=[3, 13])


@pytest.mark.parametrize("name", TORCH_SCHEDULERS)
def test_matches_torch(name):
    torch = pytest.importorskip("torch")
    ours = _sequence(_torch_like(lr_scheduler, _optimizer(), name), 40)
    tparams = [torch.nn.Parameter(torch.zeros(2)) for _ in LRS]
    topt = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(tparams, LRS)], lr=0.1)
    theirs = _sequence(_torch_like(torch.optim.lr_scheduler, topt, name), 40)
    np.testing.assert_array_equal(ours, theirs)  # the same float operations, so bitwise


def test_chained_schedulers_match_torch():
    torch = pytest.importorskip("torch")

    def run(module, opt):
        schedulers = [
            module.LinearLR(opt, start_factor=0.3, total_iters=4),
            module.CosineAnnealingLR(opt, T_max=9, eta_min=1e-3),
            module.MultiStepLR(opt, milestones=[5, 11], gamma=0.5),
        ]
        lrs = []
        for _ in range(30):
            opt.step()
            for s in schedulers:
                s.step()
            lrs.append([g["lr"] for g in opt.param_groups])
        return np.array(lrs)

    tparams = [torch.nn.Parameter(torch.zeros(2)) for _ in LRS]
    topt = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(tparams, LRS)], lr=0.1)
    np.testing.assert_array_equal(
        run(lr_scheduler, _optimizer()), run(torch.optim.lr_scheduler, topt)
    )
