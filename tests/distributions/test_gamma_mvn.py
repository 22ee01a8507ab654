"""Gamma, Chi2, Beta, Dirichlet and MultivariateNormal: densities, entropies, moments and
KL divergences against numpy closed forms (and PyTorch when installed); samples by moment
tests at fixed seeds (tolerances of ~5 standard errors)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import dtrain as dt
from dtrain.distributions import (
    Beta,
    Chi2,
    Dirichlet,
    Gamma,
    MultivariateNormal,
    constraints,
    kl_divergence,
)
from dtrain.runtime.gamma_functions import digamma as psi

lgamma = np.vectorize(math.lgamma)
A = np.array([0.3, 1.0, 2.5, 40.0])
B = np.array([1.0, 2.0, 0.5, 3.0])


def test_gamma_log_prob_entropy_moments(make, close):
    g = Gamma(make(A), make(B))
    x = np.array([0.2, 0.7, 3.0, 10.0])
    expected = A * np.log(B) + (A - 1) * np.log(x) - B * x - lgamma(A)
    close(g.log_prob(make(x)), expected, rtol=1e-13)
    close(g.entropy(), A - np.log(B) + lgamma(A) + (1 - A) * psi(A), rtol=1e-13)
    close(g.mean, A / B)
    close(g.variance, A / B**2)
    close(g.mode, np.maximum((A - 1) / B, 0))
    assert g.support is constraints.nonnegative and g.has_rsample
    assert g.batch_shape == (4,) and g.expand((3, 4)).batch_shape == (3, 4)
    assert Gamma(2.0, 1.0).batch_shape == () and Gamma(2.0, 1.0).sample().dtype == dt.float32


def test_gamma_log_prob_gradients(make):
    a, b = make(A, requires_grad=True), make(B, requires_grad=True)
    x = make([0.2, 0.7, 3.0, 10.0])
    Gamma(a, b).log_prob(x).sum().backward()
    np.testing.assert_allclose(
        a.grad.detach().cpu().numpy(), np.log(B) + np.log(x.detach().cpu().numpy()) - psi(A), 1e-12
    )
    np.testing.assert_allclose(
        b.grad.detach().cpu().numpy(), A / B - x.detach().cpu().numpy(), rtol=1e-12
    )


@pytest.mark.parametrize("concentration", [0.05, 0.4, 1.0, 3.0, 250.0])
def test_gamma_samples_have_the_right_moments(concentration, test_device):
    dt.manual_seed(0)
    n = 200_000
    rate = 2.0
    g = Gamma(dt.tensor(concentration, dtype=dt.float64, device=test_device), rate)
    s = g.sample((n,)).detach().cpu().numpy()
    mean, var = concentration / rate, concentration / rate**2
    assert s.shape == (n,) and np.all(s > 0)
    assert abs(s.mean() - mean) < 5 * math.sqrt(var / n)
    fourth = 3 * concentration * (concentration + 2) / rate**4  # E(x - mean)^4
    assert abs(s.var() - var) < 5 * math.sqrt((fourth - var**2) / n)
    # the log's mean is digamma(a) - log(rate): checks the small-value tail of a < 1
    logs = np.log(s)
    assert abs(
        logs.mean() - (psi(np.array(concentration)) - math.log(rate))
    ) < 5 * logs.std() / math.sqrt(n)


def test_chi2_is_gamma_of_half_df(make, close):
    df = np.array([1.0, 3.0, 7.5])
    c = Chi2(make(df))
    x = make([0.5, 2.0, 9.0])
    close(c.log_prob(x), Gamma(make(df / 2), 0.5).log_prob(x))
    close(c.mean, df)
    close(c.variance, 2 * df)
    assert c.expand((2, 3)).df.shape == (2, 3)
    with pytest.raises(ValueError, match="df"):
        Chi2(make([-1.0]))


def test_beta_and_dirichlet(make, close):
    beta = Beta(make(A), make(B))
    y = np.array([0.1, 0.5, 0.9, 0.99])
    lbeta = lgamma(A) + lgamma(B) - lgamma(A + B)
    close(beta.log_prob(make(y)), (A - 1) * np.log(y) + (B - 1) * np.log1p(-y) - lbeta)
    entropy = lbeta - (A - 1) * psi(A) - (B - 1) * psi(B) + (A + B - 2) * psi(A + B)
    close(beta.entropy(), entropy, rtol=1e-12)
    close(beta.mean, A / (A + B))
    close(beta.variance, A * B / ((A + B) ** 2 * (A + B + 1)))
    c = np.array([[0.5, 1.0, 2.0], [3.0, 4.0, 5.0]])
    d = Dirichlet(make(c))
    v = np.array([0.2, 0.3, 0.5])
    expected = ((c - 1) * np.log(v)).sum(-1) + lgamma(c.sum(-1)) - lgamma(c).sum(-1)
    close(d.log_prob(make(v)), expected, rtol=1e-13)
    close(d.mean, c / c.sum(-1, keepdims=True))
    close(d.mode[1], (c[1] - 1) / (c[1] - 1).sum())
    assert d.batch_shape == (2,) and d.event_shape == (3,)
    assert d.expand((4, 2)).batch_shape == (4, 2)
    with pytest.raises(ValueError, match="at least one-dimensional"):
        Dirichlet(make(1.0))
    with pytest.raises(ValueError, match="concentration"):
        Dirichlet(make([1.0, -1.0]))


def test_beta_and_dirichlet_samples(test_device):
    dt.manual_seed(1)
    n = 100_000
    c = np.array([0.3, 2.0, 5.0])
    s = Dirichlet(dt.tensor(c, device=test_device)).sample((n,)).detach().cpu().numpy()
    assert s.shape == (n, 3)
    np.testing.assert_allclose(s.sum(-1), 1.0, rtol=1e-6)
    total = c.sum()
    mean = c / total
    sd = np.sqrt(mean * (1 - mean) / (total + 1))
    assert np.all(np.abs(s.mean(0) - mean) < 5 * sd / math.sqrt(n))
    b = Beta(dt.tensor([0.5, 3.0], device=test_device), 2.0).sample((n,)).detach().cpu().numpy()
    mean = np.array([0.5 / 2.5, 3 / 5])
    sd = np.sqrt(mean * (1 - mean) / np.array([3.5, 6.0]))
    assert np.all((b >= 0) & (b <= 1)) and np.all(np.abs(b.mean(0) - mean) < 5 * sd / math.sqrt(n))


def _integrate_kl(logp, logq, grid):
    p = np.exp(logp(grid))
    return np.trapezoid(p * (logp(grid) - logq(grid)), grid)


def test_kl_gamma_and_beta_against_numerical_integration(make):
    def gamma_log(a, b):
        return lambda x: a * np.log(b) + (a - 1) * np.log(x) - b * x - math.lgamma(a)

    grid = np.linspace(1e-6, 60, 2_000_001)
    ours = kl_divergence(Gamma(make(2.5), make(1.5)), Gamma(make(4.0), make(0.7)))
    expected = _integrate_kl(gamma_log(2.5, 1.5), gamma_log(4.0, 0.7), grid)
    assert float(ours) == pytest.approx(expected, rel=1e-6)

    def beta_log(a, b):
        lbeta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
        return lambda x: (a - 1) * np.log(x) + (b - 1) * np.log1p(-x) - lbeta

    grid = np.linspace(1e-9, 1 - 1e-9, 2_000_001)
    ours = kl_divergence(Beta(make(2.0), make(3.0)), Beta(make(1.5), make(4.5)))
    expected = _integrate_kl(beta_log(2.0, 3.0), beta_log(1.5, 4.5), grid)
    assert float(ours) == pytest.approx(expected, rel=1e-6)
    c = make([[0.5, 1.0, 2.0]])
    assert float(kl_divergence(Dirichlet(c), Dirichlet(c))) == pytest.approx(0.0, abs=1e-14)
    # Beta(a, b) is the Dirichlet over (x, 1 - x)
    two = kl_divergence(Dirichlet(make([2.0, 3.0])), Dirichlet(make([1.5, 4.5])))
    assert float(two) == pytest.approx(float(ours), rel=1e-13)


def spd(*batch, n=3, seed=0):
    m = np.random.default_rng(seed).normal(size=batch + (n, n))
    return m @ np.swapaxes(m, -1, -2) + np.eye(n)


@pytest.mark.parametrize("given", ["covariance_matrix", "precision_matrix", "scale_tril"])
def test_mvn_log_prob_entropy_and_shapes(make, close, given):
    cov = spd(2)
    mu = np.array([0.5, -1.0, 2.0])
    arg = {"covariance_matrix": cov, "precision_matrix": np.linalg.inv(cov),
           "scale_tril": np.linalg.cholesky(cov)}[given]  # fmt: skip
    m = MultivariateNormal(make(mu), **{given: make(arg)})
    assert m.batch_shape == (2,) and m.event_shape == (3,)
    x = np.random.default_rng(1).normal(size=(5, 2, 3))
    diff = x - mu
    inv = np.linalg.inv(cov)
    maha = np.einsum("sbi,bij,sbj->sb", diff, inv, diff)
    logdet = np.linalg.slogdet(cov)[1]
    close(m.log_prob(make(x)), -0.5 * (3 * math.log(2 * math.pi) + maha + logdet), rtol=1e-12)
    close(m.entropy(), 0.5 * (3 * (1 + math.log(2 * math.pi)) + logdet), rtol=1e-12)
    close(m.covariance_matrix, cov, atol=1e-12)
    close(m.precision_matrix, inv, atol=1e-10)
    close(m.variance, np.diagonal(cov, axis1=-2, axis2=-1), atol=1e-12)
    close(m.mean, np.broadcast_to(mu, (2, 3)))
    assert m.rsample((4,)).shape == (4, 2, 3) and m.expand((5, 2)).batch_shape == (5, 2)


def test_mvn_rsample_moments_and_gradients(make, test_device):
    dt.manual_seed(2)
    cov = spd(n=2, seed=3)
    loc = make([1.0, -2.0], requires_grad=True)
    tril = make(np.linalg.cholesky(cov), requires_grad=True)
    m = MultivariateNormal(loc, scale_tril=tril)
    n = 200_000
    s = m.rsample((n,))
    values = s.detach().cpu().numpy()
    sd = np.sqrt(np.diag(cov))
    assert np.all(np.abs(values.mean(0) - [1.0, -2.0]) < 5 * sd / math.sqrt(n))
    np.testing.assert_allclose(np.cov(values.T), cov, atol=5 * 2 * cov.max() / math.sqrt(n))
    s.sum().backward()
    np.testing.assert_allclose(loc.grad.detach().cpu().numpy(), [n, n])
    assert tril.grad is not None and tril.grad.shape == (2, 2)


def test_mvn_kl_closed_form(make):
    c1, c2 = spd(2, seed=4), spd(seed=5)
    m1, m2 = np.array([0.0, 1.0, -1.0]), np.array([0.5, 0.0, 0.0])
    p = MultivariateNormal(make(m1), covariance_matrix=make(c1))
    q = MultivariateNormal(make(m2), covariance_matrix=make(c2))
    inv2 = np.linalg.inv(c2)
    d = m2 - m1
    expected = 0.5 * (
        np.trace(inv2 @ c1, axis1=-2, axis2=-1) + d @ inv2 @ d - 3
        + np.linalg.slogdet(c2)[1] - np.linalg.slogdet(c1)[1]
    )  # fmt: skip
    np.testing.assert_allclose(kl_divergence(p, q).detach().cpu().numpy(), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="different event shapes"):
        kl_divergence(p, MultivariateNormal(make([0.0, 0.0]), scale_tril=make(np.eye(2))))


def test_mvn_argument_checks(make):
    with pytest.raises(ValueError, match="Exactly one"):
        MultivariateNormal(make([0.0, 0.0]), covariance_matrix=make(np.eye(2)),
                           scale_tril=make(np.eye(2)))  # fmt: skip
    with pytest.raises(ValueError, match="Exactly one"):
        MultivariateNormal(make([0.0, 0.0]))
    with pytest.raises(ValueError, match="covariance_matrix"):
        MultivariateNormal(make([0.0, 0.0]), covariance_matrix=make([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="scale_tril"):
        MultivariateNormal(make([0.0, 0.0]), scale_tril=make([[1.0, 1.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        MultivariateNormal(make([0.0, 0.0]), scale_tril=make(np.eye(3)))
    assert bool(constraints.positive_definite.check(make(np.eye(2))))
    assert not bool(constraints.lower_cholesky.check(make(-np.eye(2))))


def test_against_pytorch(torch, make):
    td = torch.distributions
    a, b = torch.tensor(A), torch.tensor(B)
    x = np.array([0.2, 0.7, 3.0, 10.0])
    pairs = [
        (Gamma(make(A), make(B)), td.Gamma(a, b), x),
        (Chi2(make(A)), td.Chi2(a), x),
        (Beta(make(A), make(B)), td.Beta(a, b), x / 11),
        (
            Dirichlet(make([A, B])),
            td.Dirichlet(torch.stack([a, b])),
            np.array([0.1, 0.2, 0.3, 0.4]),
        ),
    ]
    for ours, theirs, value in pairs:
        expected = theirs.log_prob(torch.tensor(value)).detach().cpu().numpy()
        np.testing.assert_allclose(
            ours.log_prob(make(value)).detach().cpu().numpy(), expected, rtol=1e-12
        )
        np.testing.assert_allclose(
            ours.entropy().detach().cpu().numpy(),
            theirs.entropy().detach().cpu().numpy(),
            rtol=1e-12,
        )
        np.testing.assert_allclose(
            ours.mean.detach().cpu().numpy(), theirs.mean.detach().cpu().numpy(), rtol=1e-14
        )
        np.testing.assert_allclose(
            ours.variance.detach().cpu().numpy(), theirs.variance.detach().cpu().numpy(), rtol=1e-14
        )
        np.testing.assert_allclose(
            ours.mode.detach().cpu().numpy(), theirs.mode.detach().cpu().numpy(), rtol=1e-14
        )
    kl_pairs = [
        (Gamma(make(A), make(B)), Gamma(make(B), make(A)), td.Gamma(a, b), td.Gamma(b, a)),
        (Beta(make(A), make(B)), Beta(make(B), make(A)), td.Beta(a, b), td.Beta(b, a)),
        (Dirichlet(make([A, B])), Dirichlet(make([B, A])),
         td.Dirichlet(torch.stack([a, b])), td.Dirichlet(torch.stack([b, a]))),
    ]  # fmt: skip
    for p, q, tp, tq in kl_pairs:
        expected = td.kl_divergence(tp, tq).detach().cpu().numpy()
        np.testing.assert_allclose(kl_divergence(p, q).detach().cpu().numpy(), expected, 1e-12)
    cov, mu = spd(2), np.array([0.5, -1.0, 2.0])
    loc = make(mu, requires_grad=True)
    m = MultivariateNormal(loc, precision_matrix=make(np.linalg.inv(cov)))
    loc_t = torch.tensor(mu, requires_grad=True)
    tm = td.MultivariateNormal(loc_t, precision_matrix=torch.tensor(np.linalg.inv(cov)))
    value = np.random.default_rng(0).normal(size=(4, 2, 3))
    ours, theirs = m.log_prob(make(value)), tm.log_prob(torch.tensor(value))
    np.testing.assert_allclose(
        ours.detach().cpu().numpy(), theirs.detach().cpu().numpy(), rtol=1e-12
    )
    ours.sum().backward()
    theirs.sum().backward()
    np.testing.assert_allclose(
        loc.grad.detach().cpu().numpy(), loc_t.grad.detach().cpu().numpy(), rtol=1e-12
    )
    q = MultivariateNormal(make(mu * 0), scale_tril=make(np.linalg.cholesky(spd(seed=7))))
    tq = td.MultivariateNormal(
        torch.tensor(mu * 0), scale_tril=torch.tensor(np.linalg.cholesky(spd(seed=7)))
    )
    expected = td.kl_divergence(tm, tq).detach().cpu().numpy()
    np.testing.assert_allclose(kl_divergence(m, q).detach().cpu().numpy(), expected, rtol=1e-12)
