"""KL divergences between families (kl_cross.py) and within the newer families (kl_new.py):
every pair against PyTorch when it is installed, and against Monte-Carlo estimates
``E_p[log p - log q]`` (5-sigma bounds at fixed seeds) or dense closed forms without it."""

from __future__ import annotations

import numpy as np
import pytest

import dtrain as dt
import dtrain.distributions as D
from dtrain.distributions import kl_divergence

# Three batch entries per family; some pairs are infinite in one entry (support mismatch).
PARAMS = {
    "Bernoulli": lambda m, t: m.Bernoulli(probs=t([0.2, 0.6, 0.9])),
    "Beta": lambda m, t: m.Beta(t([0.8, 2.0, 5.0]), t([1.5, 3.0, 0.7])),
    "Binomial": lambda m, t: m.Binomial(5, probs=t([0.3, 0.5, 0.8])),
    "ContinuousBernoulli": lambda m, t: m.ContinuousBernoulli(probs=t([0.2, 0.4999, 0.8])),
    "Exponential": lambda m, t: m.Exponential(t([0.5, 1.0, 3.0])),
    "Gamma": lambda m, t: m.Gamma(t([0.8, 2.0, 5.0]), t([1.5, 0.7, 3.0])),
    "Gumbel": lambda m, t: m.Gumbel(t([0.3, -1.0, 2.0]), t([0.5, 1.0, 3.0])),
    "Laplace": lambda m, t: m.Laplace(t([0.3, -1.0, 2.0]), t([0.5, 1.0, 3.0])),
    "Normal": lambda m, t: m.Normal(t([0.3, -1.0, 2.0]), t([0.5, 1.0, 3.0])),
    "Pareto": lambda m, t: m.Pareto(t([0.05, 0.3, 2.0]), t([0.8, 4.5, 6.0])),
    "Poisson": lambda m, t: m.Poisson(t([0.5, 2.0, 7.0])),
    "Uniform": lambda m, t: m.Uniform(t([0.1, 0.3, -0.5]), t([0.6, 0.9, 2.0])),
}
PAIRS = [
    ("Bernoulli", "Poisson"),
    ("Beta", "ContinuousBernoulli"),
    ("Beta", "Pareto"),
    ("Beta", "Exponential"),
    ("Beta", "Gamma"),
    ("Beta", "Normal"),
    ("Beta", "Uniform"),
    ("ContinuousBernoulli", "ContinuousBernoulli"),
    ("ContinuousBernoulli", "Pareto"),
    ("ContinuousBernoulli", "Exponential"),
    ("ContinuousBernoulli", "Normal"),
    ("ContinuousBernoulli", "Uniform"),
    ("Exponential", "Beta"),
    ("Exponential", "ContinuousBernoulli"),
    ("Exponential", "Pareto"),
    ("Exponential", "Gamma"),
    ("Exponential", "Gumbel"),
    ("Gamma", "Beta"),
    ("Gamma", "ContinuousBernoulli"),
    ("Gamma", "Pareto"),
    ("Gamma", "Uniform"),
    ("Gamma", "Exponential"),
    ("Gamma", "Gumbel"),
    ("Gamma", "Normal"),
    ("Gumbel", "Beta"),
    ("Gumbel", "ContinuousBernoulli"),
    ("Gumbel", "Exponential"),
    ("Gumbel", "Gamma"),
    ("Gumbel", "Pareto"),
    ("Gumbel", "Uniform"),
    ("Gumbel", "Normal"),
    ("Laplace", "Beta"),
    ("Laplace", "ContinuousBernoulli"),
    ("Laplace", "Gamma"),
    ("Laplace", "Pareto"),
    ("Normal", "Beta"),
    ("Normal", "ContinuousBernoulli"),
    ("Normal", "Gamma"),
    ("Normal", "Pareto"),
    ("Normal", "Gumbel"),
    ("Pareto", "Pareto"),
    ("Pareto", "Beta"),
    ("Pareto", "ContinuousBernoulli"),
    ("Pareto", "Uniform"),
    ("Pareto", "Exponential"),
    ("Pareto", "Gamma"),
    ("Pareto", "Normal"),
    ("Poisson", "Bernoulli"),
    ("Poisson", "Binomial"),
    ("Uniform", "Beta"),
    ("Uniform", "ContinuousBernoulli"),
    ("Uniform", "Gamma"),
    ("Uniform", "Gumbel"),
    ("Uniform", "Pareto"),
]
# Pareto with alpha <= 1 (or <= 2 against a Normal) has an infinite KL by convention
# (PyTorch's), where E_p[log p - log q] diverges; infinities come from support mismatch.
NOT_MONTE_CARLO = {("Pareto", "Pareto")}  # checked against the dense form below


def _pair_ids(pair: tuple[str, str]) -> str:
    return f"{pair[0]}-{pair[1]}"


@pytest.mark.parametrize("pair", PAIRS, ids=_pair_ids)
def test_kl_matches_torch(pair, make, close, torch):
    p_name, q_name = pair

    def t(values):
        return torch.tensor(values, dtype=torch.float64)

    ours = kl_divergence(PARAMS[p_name](D, make), PARAMS[q_name](D, make))
    theirs = torch.distributions.kl_divergence(
        PARAMS[p_name](torch.distributions, t), PARAMS[q_name](torch.distributions, t)
    )
    close(ours, theirs, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("pair", [p for p in PAIRS if p not in NOT_MONTE_CARLO], ids=_pair_ids)
def test_kl_matches_monte_carlo(pair, make):
    p_name, q_name = pair
    p = PARAMS[p_name](D, make)
    q = PARAMS[q_name](D, make)
    q._validate_args = False  # p's draws may fall outside q's support: -inf there
    kl = kl_divergence(p, q).cpu().numpy()
    dt.manual_seed(0)
    n = 100_000
    x = p.sample((n,))
    with np.errstate(all="ignore"):
        ratio = (p.log_prob(x) - q.log_prob(x)).cpu().numpy()
    inside = q.support.check(x).cpu().numpy()
    for i in range(3):
        if np.isinf(kl[i]):
            outside = np.isinf(ratio[:, i]).any() or not inside[:, i].all()
            heavy = p_name == "Pareto" and q_name in ("Exponential", "Gamma", "Normal")
            assert outside or heavy, f"{pair}[{i}]: inf KL but q covers p's draws"
            continue
        assert np.isfinite(ratio[:, i]).all(), f"{pair}[{i}]: finite KL, infinite log ratio"
        estimate, sigma = ratio[:, i].mean(), ratio[:, i].std() / np.sqrt(n)
        assert abs(estimate - kl[i]) < 5 * sigma + 1e-9, (pair, i, estimate, kl[i], sigma)


def test_pareto_pareto_closed_form(make, close):
    p = D.Pareto(make([1.0, 2.0, 0.5]), make([2.0, 3.0, 1.5]))
    q = D.Pareto(make([0.5, 1.0, 1.0]), make([1.0, 4.0, 2.0]))
    sp, ap, sq, aq = (
        np.array(v) for v in ([1.0, 2.0, 0.5], [2.0, 3.0, 1.5], [0.5, 1, 1], [1, 4, 2])
    )
    # E_p[log p - log q] with log x - log sp ~ Exponential(ap)
    expected = (
        np.log(ap / aq) + ap * np.log(sp) - aq * np.log(sq) - (ap - aq) * (np.log(sp) + 1 / ap)
    )
    expected[2] = np.inf  # q starts above p
    close(kl_divergence(p, q), expected, rtol=1e-12)


def test_uniform_beta_at_the_unit_interval_ends(make, close):
    """Where PyTorch's ``x log x`` gives NaN at 0 and 1, dtrain gives the finite limit."""
    p = D.Uniform(make([0.0, 0.5]), make([0.5, 1.0]))
    q = D.Beta(make([2.0, 0.7]), make([3.0, 1.5]))
    kl = kl_divergence(p, q).cpu().numpy()
    dt.manual_seed(1)
    x = p.sample((200_000,))
    ratio = (p.log_prob(x) - q.log_prob(x)).cpu().numpy()
    sigma = ratio.std(0) / np.sqrt(len(ratio))
    assert np.all(np.abs(ratio.mean(0) - kl) < 5 * sigma)


def test_continuous_bernoulli_and_unit_uniform_are_finite(make):
    """KL(CB || U(0, 1)) is ``-H(CB)``, KL(U(0, 1) || CB) is finite (PyTorch: inf)."""
    cb = D.ContinuousBernoulli(make([0.2, 0.7]))
    u = D.Uniform(make([0.0, 0.0]), make([1.0, 1.0]))
    np.testing.assert_allclose(kl_divergence(cb, u).cpu().numpy(), -cb.entropy().cpu().numpy())
    assert np.isfinite(kl_divergence(u, cb).cpu().numpy()).all()


def _lowrank(make, seed: int, batch: tuple = (2,), n: int = 4, m: int = 2):
    rng = np.random.default_rng(seed)
    loc, w = rng.normal(size=batch + (n,)), rng.normal(size=batch + (n, m))
    d = rng.uniform(0.5, 2.0, size=batch + (n,))
    return loc, w, d


def test_lowrank_kls_equal_the_dense_mvn_kl(make, close):
    loc1, w1, d1 = _lowrank(make, 0)
    loc2, w2, d2 = _lowrank(make, 1)
    lr1 = D.LowRankMultivariateNormal(make(loc1), make(w1), make(d1))
    lr2 = D.LowRankMultivariateNormal(make(loc2), make(w2), make(d2))
    cov1 = w1 @ np.swapaxes(w1, -1, -2) + np.stack([np.diag(v) for v in d1])
    cov2 = w2 @ np.swapaxes(w2, -1, -2) + np.stack([np.diag(v) for v in d2])
    mvn1 = D.MultivariateNormal(make(loc1), covariance_matrix=make(cov1))
    mvn2 = D.MultivariateNormal(make(loc2), covariance_matrix=make(cov2))
    dense = kl_divergence(mvn1, mvn2)
    close(kl_divergence(lr1, lr2), dense, rtol=1e-10)
    close(kl_divergence(mvn1, lr2), dense, rtol=1e-10)
    close(kl_divergence(lr1, mvn2), dense, rtol=1e-10)
    # numpy closed form
    inv2 = np.linalg.inv(cov2)
    diff = loc2 - loc1
    expected = 0.5 * (
        np.trace(inv2 @ cov1, axis1=-2, axis2=-1)
        + np.einsum("bi,bij,bj->b", diff, inv2, diff)
        - 4
        + np.linalg.slogdet(cov2)[1]
        - np.linalg.slogdet(cov1)[1]
    )
    close(dense, expected, rtol=1e-10)
    with pytest.raises(ValueError, match="event shapes"):
        kl_divergence(lr1, D.MultivariateNormal(make(np.zeros(3)), make(np.eye(3))))


def test_lowrank_mvn_kl_with_a_batched_cov_diag_only(make, close):
    """p's ``cov_diag`` has a batch dim that its ``cov_factor`` lacks (PyTorch raises)."""
    rng = np.random.default_rng(4)
    loc, w, d = rng.normal(size=3), rng.normal(size=(3, 2)), rng.uniform(0.5, 2, size=(4, 3))
    lr = D.LowRankMultivariateNormal(make(loc), make(w), make(d))
    q = D.MultivariateNormal(make(np.zeros(3)), make(np.diag([1.0, 2.0, 0.5])))
    dense = D.MultivariateNormal(make(loc), make(w @ w.T + np.stack([np.diag(v) for v in d])))
    close(kl_divergence(lr, q), kl_divergence(dense, q), rtol=1e-10)


def test_lowrank_kls_match_torch(make, close, torch):
    loc1, w1, d1 = _lowrank(make, 0)
    loc2, w2, d2 = _lowrank(make, 1, batch=())
    tdist = torch.distributions
    t = torch.tensor
    ours1 = D.LowRankMultivariateNormal(make(loc1), make(w1), make(d1))
    ours2 = D.LowRankMultivariateNormal(make(loc2), make(w2), make(d2))
    theirs1 = tdist.LowRankMultivariateNormal(t(loc1), t(w1), t(d1))
    theirs2 = tdist.LowRankMultivariateNormal(t(loc2), t(w2), t(d2))
    tril = np.tril(np.random.default_rng(3).normal(size=(4, 4)), -1) + np.diag([1.0, 2, 0.5, 1])
    mvn = D.MultivariateNormal(make(loc2), scale_tril=make(tril))
    tmvn = tdist.MultivariateNormal(t(loc2), scale_tril=t(tril))
    kl = torch.distributions.kl_divergence
    close(kl_divergence(ours1, ours2), kl(theirs1, theirs2), rtol=1e-10)
    close(kl_divergence(ours2, ours1), kl(theirs2, theirs1), rtol=1e-10)
    close(kl_divergence(mvn, ours1), kl(tmvn, theirs1), rtol=1e-10)
    close(kl_divergence(ours1, mvn), kl(theirs1, tmvn), rtol=1e-10)


def test_cross_kl_gradients_by_finite_differences(make):
    from dtrain.autograd import gradcheck

    def gamma_normal(a, r, loc, s):
        return kl_divergence(D.Gamma(a, r), D.Normal(loc, s))

    args = [make(v, requires_grad=True) for v in ([0.8, 3.0], [1.5, 0.5], [0.2, -1.0], [1.0, 2])]
    assert gradcheck(gamma_normal, args)

    def cb_cb(p, q):
        return kl_divergence(D.ContinuousBernoulli(p), D.ContinuousBernoulli(q))

    assert gradcheck(cb_cb, [make([0.2, 0.8], requires_grad=True), make([0.6, 0.3], True)])


def test_logistic_normal_kl_equals_the_base_normals_kl(make, close):
    """Both sides share the stick-breaking map, so the KL is that of the base Normals:
    checked against numpy and a Monte-Carlo estimate on the simplex."""
    loc_p, scale_p = np.array([0.3, -0.5, 1.0]), np.array([1.0, 0.5, 2.0])
    loc_q, scale_q = np.array([[0.0, 0.2, 0.4]] * 2), np.array([[0.8, 1.5, 1.0], [1, 1, 3]])
    p = D.LogisticNormal(make(loc_p), make(scale_p))
    q = D.LogisticNormal(make(loc_q), make(scale_q))
    kl = kl_divergence(p, q)
    ratio2 = (scale_p / scale_q) ** 2
    expected = 0.5 * (ratio2 + ((loc_p - loc_q) / scale_q) ** 2 - 1 - np.log(ratio2)).sum(-1)
    close(kl, expected, rtol=1e-12)
    dt.manual_seed(0)
    x = p.sample((100_000,)).unsqueeze(1)  # one draw for both of q's batch entries
    ratio = (p.log_prob(x) - q.log_prob(x)).cpu().numpy()
    assert ratio.shape == (100_000, 2)
    sigma = ratio.std(0) / np.sqrt(len(ratio))
    assert np.all(np.abs(ratio.mean(0) - expected) < 5 * sigma)
    with pytest.raises(NotImplementedError, match="event shapes"):
        kl_divergence(p, D.LogisticNormal(make([0.0] * 4), make([1.0] * 4)))


def test_logistic_normal_kl_matches_torch(make, close, torch):
    loc_p, scale_p = np.array([0.3, -0.5, 1.0]), np.array([1.0, 0.5, 2.0])
    loc_q, scale_q = np.array([[0.0, 0.2, 0.4]] * 2), np.array([[0.8, 1.5, 1.0], [1, 1, 3]])
    ours = kl_divergence(
        D.LogisticNormal(make(loc_p), make(scale_p)), D.LogisticNormal(make(loc_q), make(scale_q))
    )
    t, tdist = torch.tensor, torch.distributions
    theirs = tdist.kl_divergence(
        tdist.LogisticNormal(t(loc_p), t(scale_p)), tdist.LogisticNormal(t(loc_q), t(scale_q))
    )
    close(ours, theirs, rtol=1e-12)
