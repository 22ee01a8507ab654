"""Normal, LogNormal, Laplace, Exponential and Uniform: densities, moments and entropies
against numpy closed forms (and PyTorch), sample statistics, and gradients of rsample and
log_prob by finite differences."""

from __future__ import annotations

import math

import numpy as np
import pytest

import dtrain as dt
import dtrain.distributions as D
from dtrain._tensor import functions
from dtrain.autograd import gradcheck

LOC = np.array([[-1.0, 0.0, 2.5], [0.3, -0.7, 1.0]])
SCALE = np.array([[0.5, 1.0, 2.0], [1.5, 0.8, 0.3]])
X = np.array([[0.2, -1.0, 3.0], [0.1, 0.4, 1.2]])
erf = np.vectorize(math.erf)


def normal_logpdf(x, m, s):
    return -((x - m) ** 2) / (2 * s**2) - np.log(s) - 0.5 * np.log(2 * np.pi)


# name -> (constructor from (loc/low/rate...) tensors, numpy params, log_prob, mean, variance,
# entropy, excess kurtosis (for the sample-variance tolerance), a point in the support)
CASES = {
    "Normal": (
        lambda a, b: D.Normal(a, b),
        (LOC, SCALE),
        lambda x, m, s: normal_logpdf(x, m, s),
        lambda m, s: m,
        lambda m, s: s**2,
        lambda m, s: 0.5 * np.log(2 * np.pi * np.e * s**2),
        0.0,
        X,
    ),
    "Laplace": (
        lambda a, b: D.Laplace(a, b),
        (LOC, SCALE),
        lambda x, m, b: -np.log(2 * b) - np.abs(x - m) / b,
        lambda m, b: m,
        lambda m, b: 2 * b**2,
        lambda m, b: 1 + np.log(2 * b),
        3.0,
        X,
    ),
    "LogNormal": (
        lambda a, b: D.LogNormal(a, b),
        (LOC / 4, SCALE / 4),
        lambda x, m, s: normal_logpdf(np.log(x), m, s) - np.log(x),
        lambda m, s: np.exp(m + s**2 / 2),
        lambda m, s: (np.exp(s**2) - 1) * np.exp(2 * m + s**2),
        lambda m, s: 0.5 + 0.5 * np.log(2 * np.pi * s**2) + m,
        None,
        np.abs(X) + 0.1,
    ),
    "Exponential": (
        lambda r: D.Exponential(r),
        (SCALE,),
        lambda x, r: np.log(r) - r * x,
        lambda r: 1 / r,
        lambda r: 1 / r**2,
        lambda r: 1 - np.log(r),
        6.0,
        np.abs(X),
    ),
    "Uniform": (
        lambda lo, hi: D.Uniform(lo, hi),
        (LOC, LOC + SCALE * 3),
        lambda x, lo, hi: -np.log(hi - lo) * np.ones_like(x),
        lambda lo, hi: (lo + hi) / 2,
        lambda lo, hi: (hi - lo) ** 2 / 12,
        lambda lo, hi: np.log(hi - lo),
        -1.2,
        LOC + SCALE * 1.5,
    ),
}
NAMES = sorted(CASES)


@pytest.mark.parametrize("name", NAMES)
def test_log_prob_moments_entropy_match_closed_forms(name, make, close):
    build, params, logpdf, mean, var, entropy, _, x = CASES[name]
    d = build(*[make(p) for p in params])
    assert d.batch_shape == (2, 3) and d.event_shape == ()
    close(d.log_prob(make(x)), logpdf(x, *params))
    close(d.mean, mean(*params))
    close(d.variance, var(*params))
    close(d.stddev, np.sqrt(var(*params)))
    close(d.entropy(), entropy(*params))
    assert d.log_prob(make(x)).device == make(x).device


@pytest.mark.parametrize("name", NAMES)
def test_matches_torch(name, torch, make, close):
    build, params, _, _, _, _, _, x = CASES[name]
    ours = build(*[make(p) for p in params])
    theirs = getattr(torch.distributions, name)(*[torch.tensor(p) for p in params])
    close(ours.log_prob(make(x)), theirs.log_prob(torch.tensor(x)))
    close(ours.entropy(), theirs.entropy())
    close(ours.mean, theirs.mean)
    close(ours.variance, theirs.variance)
    close(ours.mode, theirs.mode)
    if name != "LogNormal":
        close(ours.cdf(make(x)), theirs.cdf(torch.tensor(x)))
        q = np.array([[0.1, 0.5, 0.9], [0.25, 0.6, 0.99]])
        close(ours.icdf(make(q)), theirs.icdf(torch.tensor(q)))


def test_cdf_icdf_closed_forms(make, close):
    d = D.Normal(make(LOC), make(SCALE))
    close(d.cdf(make(X)), 0.5 * (1 + erf((X - LOC) / (SCALE * np.sqrt(2)))))
    close(d.icdf(d.cdf(make(X))), X, atol=1e-8)
    e = D.Exponential(make(SCALE))
    close(e.cdf(make(np.abs(X))), 1 - np.exp(-SCALE * np.abs(X)))
    u = D.Uniform(make(LOC), make(LOC + 2))
    close(u.cdf(make(LOC + 0.5)), np.full(LOC.shape, 0.25))
    lap = D.Laplace(make(LOC), make(SCALE))
    close(lap.icdf(lap.cdf(make(X))), X, atol=1e-8)


@pytest.mark.parametrize("name", NAMES)
def test_sample_statistics(name, make):
    build, params, _, mean, var, _, kurtosis, _ = CASES[name]
    d = build(*[make(p) for p in params])
    dt.manual_seed(0)
    n = 20000
    samples = d.sample((n,))
    assert samples.shape == (n, 2, 3) and samples.dtype == dt.float64
    assert samples.device == make(0.0).device and not samples.requires_grad
    s = samples.cpu().numpy()
    assert d.support.check(samples).all()
    sd = np.sqrt(var(*params))
    # 5 standard errors: the mean's is sd / sqrt(n), the variance's sd**2 sqrt((k + 2) / n).
    assert np.all(np.abs(s.mean(0) - mean(*params)) < 5 * sd / np.sqrt(n))
    if kurtosis is not None:
        assert np.all(np.abs(s.var(0) - sd**2) < 5 * sd**2 * np.sqrt((kurtosis + 2) / n))


def test_sample_is_seeded_and_float32_by_default():
    d = D.Normal(0.0, 1.0)
    dt.manual_seed(3)
    a = d.sample((5,))
    dt.manual_seed(3)
    b = d.sample((5,))
    assert a.dtype == dt.float32 and a.shape == (5,)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert d.batch_shape == () and d.sample().shape == ()


@pytest.fixture
def fixed_noise(monkeypatch):
    """Make every draw the same numbers, so finite differences see the same noise at each
    evaluation (on CUDA too: the emulator's cupy.random cannot be reseeded)."""

    def draws(kind):
        def draw(shape, dtype=None, device=None, **_):
            rng = np.random.default_rng(1)
            values = rng.standard_normal(shape) if kind == "normal" else rng.random(shape)
            return dt.tensor(values, dtype=dtype, device=device)

        return draw

    monkeypatch.setattr(functions, "randn", draws("normal"))
    monkeypatch.setattr(functions, "rand", draws("uniform"))


@pytest.mark.parametrize("name", NAMES)
def test_rsample_gradient_by_finite_differences(name, make, fixed_noise):
    build, params, *_ = CASES[name]
    leaves = [make(p, requires_grad=True) for p in params]

    def draw(*args):
        return build(*args).rsample((4,))

    assert build(*leaves).has_rsample
    assert gradcheck(draw, leaves)


@pytest.mark.parametrize("name", NAMES)
def test_log_prob_and_entropy_gradients_by_finite_differences(name, make):
    build, params, *_, x = CASES[name]
    leaves = [make(p, requires_grad=True) for p in params]
    value = make(x)
    if name != "Uniform":  # its log_prob's gradient is the entropy's, checked below
        assert gradcheck(lambda *a: build(*a).log_prob(value), leaves)
    assert gradcheck(lambda *a: build(*a).entropy(), leaves)


def test_rsample_carries_gradient_and_sample_does_not(make, fixed_noise):
    loc = make([0.5, -0.5], requires_grad=True)
    scale = make([1.0, 2.0], requires_grad=True)
    d = D.Normal(loc, scale)
    r = d.rsample((3,))
    r.sum().backward()
    np.testing.assert_allclose(loc.grad.cpu().numpy(), [3.0, 3.0])
    eps = (d.sample((3,)) - loc.detach()) / scale.detach()
    np.testing.assert_allclose(scale.grad.cpu().numpy(), eps.sum(0).cpu().numpy())
    assert not d.sample().requires_grad


def test_scalar_and_broadcast_parameters(make, close):
    d = D.Normal(make([0.0, 1.0, 2.0]), 2.0)
    assert d.batch_shape == (3,) and d.scale.shape == (3,)
    assert d.scale.dtype == dt.float64
    x = np.array([[0.0], [1.0]])
    close(d.log_prob(make(x)), normal_logpdf(x, np.array([0.0, 1.0, 2.0]), 2.0))


def test_expand(make, close):
    d = D.Laplace(make([0.0, 1.0]), make([1.0, 2.0]))
    e = d.expand((4, 2))
    assert e.batch_shape == (4, 2) and e.sample((3,)).shape == (3, 4, 2)
    close(
        e.log_prob(make([0.5, 0.5])), np.broadcast_to(to_np(d.log_prob(make([0.5, 0.5]))), (4, 2))
    )
    assert D.Uniform(0.0, 1.0).expand((3,)).batch_shape == (3,)
    assert D.LogNormal(0.0, 1.0).expand((2,)).rsample().shape == (2,)
    assert D.Exponential(make([1.0])).expand((5, 1)).mean.shape == (5, 1)


def to_np(t):
    return t.detach().cpu().numpy()
