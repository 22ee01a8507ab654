"""validate_args: parameter and value checks that raise ValueError naming the value,
set_default_validate_args, and the constraints themselves."""

from __future__ import annotations

import numpy as np
import pytest

import dtrain as dt
import dtrain.distributions as D
from dtrain.distributions import constraints


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the invalid values' nan and inf
@pytest.mark.parametrize(
    ("build", "param"),
    [
        (lambda m: D.Normal(m([0.0, 1.0]), m([1.0, -2.0])), "scale"),
        (lambda m: D.Normal(m([0.0, float("nan")]), m([1.0, 2.0])), "loc"),
        (lambda m: D.Laplace(m([0.0]), m([0.0])), "scale"),
        (lambda m: D.LogNormal(m([0.0]), m([-1.0])), "scale"),
        (lambda m: D.Exponential(m([1.0, -1.0])), "rate"),
        (lambda m: D.Bernoulli(m([0.5, 1.5])), "probs"),
        (lambda m: D.Categorical(m([0.5, -0.5])), "probs"),
        (lambda m: D.OneHotCategorical(m([0.5, -0.5])), "probs"),
        (lambda m: D.Categorical(logits=m([0.0, float("nan")])), "logits"),
    ],
)
def test_bad_parameters_raise_naming_the_parameter(build, param, make):
    with pytest.raises(ValueError, match=f"Expected parameter {param}"):
        build(make)


def test_uniform_low_must_be_below_high(make):
    with pytest.raises(ValueError, match="low >= high"):
        D.Uniform(make([0.0, 2.0]), make([1.0, 1.0]))
    D.Uniform(make([0.0, 2.0]), make([1.0, 1.0]), validate_args=False)  # not checked


@pytest.mark.parametrize(
    ("dist", "value", "match"),
    [
        (lambda m: D.Exponential(m([1.0])), [-0.5], "support"),
        (lambda m: D.LogNormal(m([0.0]), m([1.0])), [0.0], "support"),
        (lambda m: D.Uniform(m([0.0]), m([1.0])), [1.5], "support"),
        (lambda m: D.Bernoulli(m([0.3])), [0.5], "support"),
        (lambda m: D.Normal(m([0.0, 1.0]), m([1.0, 1.0])), [1.0, 2.0, 3.0], "broadcastable"),
        (lambda m: D.OneHotCategorical(m([0.5, 0.5])), [1.0, 1.0], "support"),
        (lambda m: D.OneHotCategorical(m([0.5, 0.5])), [1.0, 0.0, 0.0], "event_shape"),
    ],
)
def test_log_prob_checks_the_value(dist, value, match, make):
    with pytest.raises(ValueError, match=match):
        dist(make).log_prob(make(value))


def test_categorical_value_checks(make):
    d = D.Categorical(make([0.2, 0.3, 0.5]))
    with pytest.raises(ValueError, match="support"):
        d.log_prob(make([3], dtype=dt.int64))
    with pytest.raises(ValueError, match="support"):
        d.log_prob(make([-1], dtype=dt.int64))
    with pytest.raises(ValueError, match="must be a Tensor"):
        d.log_prob(1)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_validate_args_false_skips_the_checks(make):
    d = D.Normal(make([0.0]), make([-1.0]), validate_args=False)
    assert np.isnan(d.log_prob(make([0.0])).cpu().numpy()).all()
    e = D.Exponential(make([1.0]), validate_args=False)
    np.testing.assert_allclose(e.log_prob(make([-1.0])).cpu().numpy(), [1.0])


def test_set_default_validate_args(make):
    try:
        D.Distribution.set_default_validate_args(False)
        D.Normal(make([0.0]), make([-1.0]))  # no error
        with pytest.raises(ValueError, match="Expected parameter scale"):
            D.Normal(make([0.0]), make([-1.0]), validate_args=True)
    finally:
        D.Distribution.set_default_validate_args(True)
    with pytest.raises(ValueError, match="Expected parameter scale"):
        D.Normal(make([0.0]), make([-1.0]))
    with pytest.raises(ValueError, match="True or False"):
        D.Distribution.set_default_validate_args("yes")


def test_probs_or_logits_not_both_and_at_least_1d(make):
    with pytest.raises(ValueError, match="either probs or logits"):
        D.Categorical(make([0.5, 0.5]), make([0.0, 0.0]))
    with pytest.raises(ValueError, match="either probs or logits"):
        D.Bernoulli()
    with pytest.raises(ValueError, match="one-dimensional"):
        D.Categorical(make(0.5))


def test_constraints_check():
    x = dt.tensor([-1.0, 0.0, 0.5, 1.0, 2.0])
    assert constraints.positive.check(x).tolist() == [False, False, True, True, True]
    assert constraints.nonnegative.check(x).tolist() == [False, True, True, True, True]
    assert constraints.unit_interval.check(x).tolist() == [False, True, True, True, False]
    assert constraints.boolean.check(x).tolist() == [False, True, False, True, False]
    assert constraints.interval(0.0, 1.0).check(x).tolist() == [False, True, True, True, False]
    assert constraints.half_open_interval(0.0, 1.0).check(x).tolist()[3] is False
    assert constraints.integer_interval(0, 1).check(x).tolist() == [False, True, False, True, False]
    assert constraints.real.check(dt.tensor([1.0, float("nan")])).tolist() == [True, False]
    simplex = dt.tensor([[0.5, 0.5], [0.7, 0.7], [1.2, -0.2]])
    assert constraints.simplex.check(simplex).tolist() == [True, False, False]
    pair = constraints.independent(constraints.positive, 1)
    assert pair.event_dim == 1 and pair.check(dt.tensor([[1.0, 2.0], [1.0, -1.0]])).tolist() == [
        True,
        False,
    ]
    assert constraints.is_dependent(constraints.dependent)
    assert not constraints.is_dependent(constraints.real)
    assert D.Normal.arg_constraints["scale"] is constraints.positive
    assert D.Categorical(dt.tensor([0.5, 0.5])).support.upper_bound == 1


def test_subclass_without_arg_constraints_warns():
    class Bare(D.Distribution):
        pass

    with pytest.warns(UserWarning, match="arg_constraints"):
        Bare()
    with pytest.raises(NotImplementedError, match="rsample"):
        Bare(validate_args=False).sample()
