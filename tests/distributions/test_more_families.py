"""Gumbel, Cauchy, HalfNormal, HalfCauchy, StudentT, Poisson, Geometric and Binomial:
densities, moments and KLs against numpy closed forms (and PyTorch when installed), samples
by moment and chi-square tests at fixed seeds (5-sigma tolerances), gradients by finite
differences in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest

import dtrain as dt
import dtrain.distributions as D
from dtrain._tensor import functions
from dtrain._tensor.autograd.gradcheck import gradcheck

lgamma = np.vectorize(math.lgamma)
EULER = 0.5772156649015329
LOC = np.array([0.3, -1.0, 2.0])
SCALE = np.array([0.5, 1.0, 3.0])
X = np.array([0.1, -2.0, 5.0])
POS = np.array([0.2, 1.5, 7.0])
DF = np.array([0.5, 2.5, 10.0])


def test_gumbel_closed_forms(make, close):
    g = D.Gumbel(make(LOC), make(SCALE))
    z = (X - LOC) / SCALE
    close(g.log_prob(make(X)), -(z + np.exp(-z)) - np.log(SCALE), rtol=1e-13)
    close(g.cdf(make(X)), np.exp(-np.exp(-z)), rtol=1e-13)
    close(g.icdf(g.cdf(make(X))), X, rtol=1e-10)
    close(g.mean, LOC + EULER * SCALE)
    close(g.variance, (math.pi * SCALE) ** 2 / 6)
    close(g.entropy(), np.log(SCALE) + 1 + EULER)
    assert g.has_rsample and g.expand((2, 3)).batch_shape == (2, 3)


def test_cauchy_and_half_cauchy_closed_forms(make, close):
    c = D.Cauchy(make(LOC), make(SCALE))
    z = (X - LOC) / SCALE
    close(c.log_prob(make(X)), -np.log(np.pi * SCALE * (1 + z**2)), rtol=1e-13)
    close(c.cdf(make(X)), np.arctan(z) / np.pi + 0.5, rtol=1e-13)
    close(c.icdf(make([0.25, 0.5, 0.75])), LOC + SCALE * np.array([-1.0, 0.0, 1.0]), atol=1e-12)
    close(c.entropy(), np.log(4 * np.pi * SCALE))
    assert np.all(np.isnan(c.mean.cpu().numpy())) and np.all(np.isinf(c.variance.cpu().numpy()))
    h = D.HalfCauchy(make(SCALE))
    expected = np.log(2 / (np.pi * SCALE * (1 + (POS / SCALE) ** 2)))
    close(h.log_prob(make(POS)), expected, rtol=1e-13)
    close(h.cdf(make(POS)), 2 / np.pi * np.arctan(POS / SCALE), rtol=1e-13)
    close(h.icdf(h.cdf(make(POS))), POS, rtol=1e-10)
    close(h.entropy(), np.log(2 * np.pi * SCALE))
    assert D.HalfCauchy(make(SCALE), validate_args=False).log_prob(make(-1.0)).cpu().numpy()[0] == (
        -np.inf
    )


def test_half_normal_closed_forms(make, close):
    h = D.HalfNormal(make(SCALE))
    expected = 0.5 * np.log(2 / np.pi) - np.log(SCALE) - POS**2 / (2 * SCALE**2)
    close(h.log_prob(make(POS)), expected, rtol=1e-13)
    close(h.mean, SCALE * math.sqrt(2 / math.pi))
    close(h.variance, SCALE**2 * (1 - 2 / math.pi))
    close(h.entropy(), 0.5 * np.log(np.pi * SCALE**2 / 2) + 0.5)
    close(h.icdf(h.cdf(make(POS))), POS, rtol=1e-10)
    with pytest.raises(ValueError, match="support"):
        h.log_prob(make([-1.0, 1.0, 1.0]))


def test_student_t_closed_forms(make, close):
    t = D.StudentT(make(DF), make(LOC), make(SCALE))
    y = (X - LOC) / SCALE
    norm = lgamma((DF + 1) / 2) - lgamma(DF / 2) - 0.5 * np.log(DF * np.pi) - np.log(SCALE)
    close(t.log_prob(make(X)), norm - (DF + 1) / 2 * np.log1p(y**2 / DF), rtol=1e-13)
    close(t.mean, [np.nan, LOC[1], LOC[2]])
    close(t.variance, [np.nan, SCALE[1] ** 2 * 2.5 / 0.5, SCALE[2] ** 2 * 10 / 8])
    assert D.StudentT(make(1.5)).variance.cpu().numpy() == np.inf


def test_poisson_geometric_binomial_closed_forms(make, close):
    rate, k = np.array([0.5, 2.0, 30.0]), np.array([0.0, 3.0, 25.0])
    p = D.Poisson(make(rate))
    close(p.log_prob(make(k)), k * np.log(rate) - rate - lgamma(k + 1), rtol=1e-13)
    close(D.Poisson(make(0.0)).log_prob(make(0.0)), 0.0)
    close(p.mode, np.floor(rate))
    probs = np.array([0.2, 0.7, 1.0])
    g = D.Geometric(make(probs))
    close(g.log_prob(make([0.0, 2.0, 0.0])), [np.log(0.2), 2 * np.log(0.3) + np.log(0.7), 0.0])
    close(g.mean, 1 / probs - 1)
    p2 = probs[:2]
    close(g.entropy()[:2], -(p2 * np.log(p2) + (1 - p2) * np.log1p(-p2)) / p2, rtol=1e-12)
    with pytest.raises(ValueError, match="positive"):
        D.Geometric(make([0.0, 0.5]))
    n, q = np.array([5.0, 10.0, 10.0]), np.array([0.2, 0.7, 0.5])
    b = D.Binomial(make(n), make(q))
    k = np.array([0.0, 3.0, 10.0])
    log_choose = lgamma(n + 1) - lgamma(k + 1) - lgamma(n - k + 1)
    close(b.log_prob(make(k)), log_choose + k * np.log(q) + (n - k) * np.log1p(-q), rtol=1e-12)
    close(b.mode, np.minimum(np.floor((n + 1) * q), n))
    b10 = D.Binomial(10, make(q))
    ks = np.arange(11.0)[:, None]
    pmf = np.exp(
        lgamma(11) - lgamma(ks + 1) - lgamma(11 - ks) + ks * np.log(q) + (10 - ks) * np.log1p(-q)
    )
    close(b10.entropy(), -(pmf * np.log(pmf)).sum(0), rtol=1e-12)
    assert b10.enumerate_support().shape == (11, 3)
    with pytest.raises(NotImplementedError, match="inhomogeneous"):
        b.entropy()
    with pytest.raises(ValueError, match="support"):
        b.log_prob(make([6.0, 1.0, 1.0]))


def test_kl_closed_forms(make, close):
    """KLs against numerical sums/integrals of p log(p / q)."""
    grid = np.linspace(-60, 60, 2_000_001)
    pairs = [
        (D.Gumbel(make(0.3), make(1.2)), D.Gumbel(make(-0.5), make(2.0))),
        (D.Cauchy(make(0.3), make(1.2)), D.Cauchy(make(-0.5), make(2.0))),
        (D.HalfNormal(make(1.2)), D.HalfNormal(make(0.7))),
    ]
    for p, q in pairs:
        x = grid if not isinstance(p, D.HalfNormal) else grid[grid >= 0]
        lp, lq = p.log_prob(make(x)).cpu().numpy(), q.log_prob(make(x)).cpu().numpy()
        expected = np.trapezoid(np.exp(lp) * (lp - lq), x)
        if isinstance(p, D.Cauchy):  # heavy tails: x = 0.3 + 1.2 tan(theta), p dx = dtheta / pi
            theta = np.linspace(-np.pi / 2, np.pi / 2, 2_000_001)[1:-1]
            x = 0.3 + 1.2 * np.tan(theta)
            lp, lq = p.log_prob(make(x)).cpu().numpy(), q.log_prob(make(x)).cpu().numpy()
            expected = np.trapezoid(lp - lq, theta) / np.pi  # the open ends cost ~4e-6
        tol = 2e-5 if isinstance(p, D.Cauchy) else 1e-6
        assert float(D.kl_divergence(p, q)) == pytest.approx(expected, rel=tol)
    ks = make(np.arange(400.0))
    for p, q in [
        (D.Poisson(make(3.0)), D.Poisson(make(5.5))),
        (D.Geometric(make(0.3)), D.Geometric(make(0.6))),
        (D.Binomial(20, make(0.3)), D.Binomial(20, make(0.6))),
    ]:
        k = ks if not isinstance(p, D.Binomial) else make(np.arange(21.0))
        lp, lq = p.log_prob(k).cpu().numpy(), q.log_prob(k).cpu().numpy()
        expected = (np.exp(lp) * (lp - lq)).sum()
        assert float(D.kl_divergence(p, q)) == pytest.approx(expected, rel=1e-10)
    close(
        D.kl_divergence(D.Binomial(make([5.0, 10.0]), 0.3), D.Binomial(make([5.0, 8.0]), 0.4))[1],
        np.inf,
    )
    with pytest.raises(NotImplementedError, match="total_count"):
        D.kl_divergence(D.Binomial(make([5.0]), 0.3), D.Binomial(make([6.0]), 0.4))


RATE = [0.0, 0.5, 30.0]
LOGITS = [-1.0, 0.5, 3.0]


def _torch_pairs(make, torch):
    TD_GEOMETRIC, TD_BINOMIAL = torch.distributions.Geometric, torch.distributions.Binomial  # noqa: N806

    def t(v):
        return torch.tensor(np.asarray(v, dtype=np.float64))

    return [
        (D.Gumbel(make(LOC), make(SCALE)), torch.distributions.Gumbel(t(LOC), t(SCALE)), X),
        (D.Cauchy(make(LOC), make(SCALE)), torch.distributions.Cauchy(t(LOC), t(SCALE)), X),
        (D.HalfNormal(make(SCALE)), torch.distributions.HalfNormal(t(SCALE)), POS),
        (D.HalfCauchy(make(SCALE)), torch.distributions.HalfCauchy(t(SCALE)), POS),
        (
            D.StudentT(make(DF), make(LOC), make(SCALE)),
            torch.distributions.StudentT(t(DF), t(LOC), t(SCALE)),
            X,
        ),
        (D.Poisson(make(RATE)), torch.distributions.Poisson(t(RATE)), [0.0, 3, 25]),
        (D.Geometric(logits=make(LOGITS)), TD_GEOMETRIC(logits=t(LOGITS)), [0.0, 2, 7]),
        (D.Binomial(10, logits=make(LOGITS)), TD_BINOMIAL(10, logits=t(LOGITS)), [0.0, 2, 10]),
    ]


def test_against_torch(make, close, torch):
    for ours, ref, value in _torch_pairs(make, torch):
        close(ours.log_prob(make(value)), ref.log_prob(torch.tensor(value, dtype=torch.float64)))
        for attr in ("mean", "mode", "variance"):
            close(getattr(ours, attr), getattr(ref, attr))
        if not isinstance(ours, D.Poisson):
            close(ours.entropy(), ref.entropy())
        assert tuple(ours.sample((2,)).shape) == tuple(ref.sample((2,)).shape)


def test_kl_against_torch(make, close, torch):
    def t(v):
        return torch.tensor(np.asarray(v, dtype=np.float64))

    a, b, c, e = [0.3, -1.0], [1.0, 2.0], [1.0, 0.0], [0.5, 3.0]
    for name, p_args, q_args in [
        ("Gumbel", (a, b), (c, e)),
        ("Cauchy", (a, b), (c, e)),
        ("HalfNormal", (b,), (e,)),
        ("Poisson", (b,), (e,)),
        ("Geometric", ([0.2, 0.9],), ([0.5, 0.1],)),
        ("Binomial", ([5.0, 10.0], [0.2, 0.5]), ([5.0, 8.0], [0.4, 0.3])),
    ]:
        ours = D.kl_divergence(
            getattr(D, name)(*map(make, p_args)), getattr(D, name)(*map(make, q_args))
        )
        ref = torch.distributions.kl_divergence(
            getattr(torch.distributions, name)(*map(t, p_args)),
            getattr(torch.distributions, name)(*map(t, q_args)),
        )
        close(ours, ref)


@pytest.mark.parametrize(
    "build, mean, var",
    [
        (lambda d: D.Gumbel(d(0.5), d(2.0)), 0.5 + 2 * EULER, (2 * math.pi) ** 2 / 6),
        (lambda d: D.HalfNormal(d(1.5)), 1.5 * math.sqrt(2 / math.pi), 1.5**2 * (1 - 2 / math.pi)),
        (lambda d: D.StudentT(d(9.0), d(1.0), d(2.0)), 1.0, 4 * 9 / 7),
        (lambda d: D.Poisson(d(0.7)), 0.7, 0.7),
        (lambda d: D.Poisson(d(250.0)), 250.0, 250.0),
        (lambda d: D.Geometric(d(0.3)), 1 / 0.3 - 1, (1 / 0.3 - 1) / 0.3),
        (lambda d: D.Binomial(d(12.0), d(0.3)), 3.6, 12 * 0.21),
        (lambda d: D.Binomial(d(500.0), d(0.8)), 400.0, 80.0),
    ],
)
def test_sample_moments(build, mean, var, make):
    dt.manual_seed(5)
    n = 200_000
    s = build(make).sample((n,)).detach().cpu().numpy()
    assert s.shape == (n,)
    assert abs(s.mean() - mean) < 5 * math.sqrt(var / n)
    # the variance's standard error, from the sample's fourth central moment
    fourth = ((s - s.mean()) ** 4).mean()
    assert abs(s.var() - var) < 5 * math.sqrt((fourth - s.var() ** 2) / n)


def test_cauchy_samples_by_quantiles(make):
    dt.manual_seed(6)
    n = 200_000
    s = D.HalfCauchy(make(2.0)).sample((n,)).cpu().numpy()
    c = D.Cauchy(make(1.0), make(2.0)).sample((n,)).cpu().numpy()
    for q in (0.1, 0.5, 0.9):  # P(X < x_q) = q: a binomial proportion
        sd = math.sqrt(q * (1 - q) / n)
        assert abs((s < 2 * math.tan(math.pi * q / 2)).mean() - q) < 5 * sd
        assert abs((c < 1 + 2 * math.tan(math.pi * (q - 0.5))).mean() - q) < 5 * sd


def _binomial_pmf(n: int, p: float, k: np.ndarray) -> np.ndarray:
    log_choose = lgamma(n + 1) - lgamma(k + 1) - lgamma(n - k + 1)
    return np.exp(log_choose + k * np.log(p) + (n - k) * np.log1p(-p))


def _poisson_pmf(rate: float, k: np.ndarray) -> np.ndarray:
    return np.exp(k * np.log(rate) - rate - lgamma(k + 1))


@pytest.mark.parametrize(
    "dist, pmf, top",
    [
        (lambda d: D.Poisson(d(3.0)), lambda k: _poisson_pmf(3.0, k), 60),
        (lambda d: D.Poisson(d(40.0)), lambda k: _poisson_pmf(40.0, k), 150),
        (lambda d: D.Binomial(d(60.0), d(0.35)), lambda k: _binomial_pmf(60, 0.35, k), 60),
        (lambda d: D.Binomial(d(30.0), d(0.9)), lambda k: _binomial_pmf(30, 0.9, k), 30),
        (lambda d: D.Geometric(d(0.2)), lambda k: 0.2 * 0.8**k, 150),
    ],
)
def test_discrete_samples_by_chi_square(dist, pmf, top, make):
    """Pearson's statistic over the cells with >= 20 expected counts stays within 5 sigma
    of its mean (``dof``, standard deviation ``sqrt(2 dof)``)."""
    dt.manual_seed(7)
    n = 200_000
    s = dist(make).sample((n,)).cpu().numpy()
    ks = np.arange(top + 1.0)
    expected = pmf(ks) * n
    counts = (s[:, None] == ks).sum(0)
    cells = expected >= 20
    statistic = ((counts[cells] - expected[cells]) ** 2 / expected[cells]).sum()
    dof = cells.sum() - 1
    assert abs(statistic - dof) < 5 * math.sqrt(2 * dof)
    assert np.all(s == np.floor(s)) and s.min() >= 0 and s.max() <= top


@pytest.fixture
def fixed_noise(monkeypatch):
    def draws(kind):
        def draw(shape, dtype=None, device=None, **_):
            rng = np.random.default_rng(1)
            values = rng.standard_normal(shape) if kind == "normal" else rng.random(shape)
            return dt.tensor(values, dtype=dtype, device=device)

        return draw

    monkeypatch.setattr(functions, "randn", draws("normal"))
    monkeypatch.setattr(functions, "rand", draws("uniform"))


@pytest.mark.parametrize(
    "build, params",
    [
        (D.Gumbel, (LOC, SCALE)),
        (D.Cauchy, (LOC, SCALE)),
        (D.HalfNormal, (SCALE,)),
        (D.HalfCauchy, (SCALE,)),
        (lambda loc, scale: D.StudentT(df_like(loc), loc, scale), (LOC, SCALE)),
    ],
)
def test_rsample_log_prob_entropy_gradients(build, params, make, fixed_noise):
    leaves = [make(p, requires_grad=True) for p in params]
    assert gradcheck(lambda *a: build(*a).rsample((4,)), leaves)
    value = make(POS)
    assert gradcheck(lambda *a: build(*a).log_prob(value), leaves)
    assert gradcheck(lambda *a: build(*a).entropy(), leaves)


def df_like(loc: dt.Tensor) -> dt.Tensor:
    """A constant ``df``: its gradient goes through the gamma draws' approximate implicit
    derivative, which finite differences of the rejection sampler do not follow."""
    return dt.tensor(DF, dtype=dt.float64, device=loc.device)


def test_discrete_log_prob_gradients(make):
    value = make([0.0, 2.0, 7.0])
    assert gradcheck(lambda r: D.Poisson(r).log_prob(value), [make([0.5, 2.0, 9.0], True)])
    assert gradcheck(
        lambda p: D.Geometric(p).log_prob(value) + D.Geometric(p).entropy(),
        [make([0.2, 0.5, 0.9], True)],
    )
    assert gradcheck(
        lambda lg: D.Binomial(10, logits=lg).log_prob(value) + D.Binomial(10, logits=lg).entropy(),
        [make([-1.0, 0.3, 2.0], True)],
    )
