"""MixtureSameFamily, LowRankMultivariateNormal and the relaxed (Gumbel-softmax)
distributions: densities against numpy (and PyTorch when installed), draws by moments at
fixed seeds (5-sigma bounds), reparameterised gradients by finite differences, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

import dtrain as dt
import dtrain.distributions as D
from dtrain._tensor import functions
from dtrain.autograd import gradcheck

RNG = np.random.default_rng(0)
LOGITS = RNG.normal(size=(2, 3))
LOC = RNG.normal(size=(2, 3, 4))
SCALE = RNG.uniform(0.5, 2.0, size=(2, 3, 4))


@pytest.fixture
def fixed_noise(monkeypatch):
    """Every draw the same numbers, so finite differences see the same noise at each
    evaluation (on CUDA too: the emulator's cupy.random cannot be reseeded)."""

    def draws(kind):
        def draw(shape, dtype=None, device=None, **_):
            rng = np.random.default_rng(1)
            values = rng.standard_normal(shape) if kind == "normal" else rng.random(shape)
            return dt.tensor(values, dtype=dtype, device=device)

        return draw

    monkeypatch.setattr(functions, "randn", draws("normal"))
    monkeypatch.setattr(functions, "rand", draws("uniform"))


def _mixture(make):
    components = D.Independent(D.Normal(make(LOC), make(SCALE)), 1)
    return D.MixtureSameFamily(D.Categorical(logits=make(LOGITS)), components)


def test_mixture_log_prob_mean_variance_against_numpy(make, close):
    mix = _mixture(make)
    assert mix.batch_shape == (2,) and mix.event_shape == (4,)
    x = RNG.normal(size=(5, 2, 4))
    weights = np.exp(LOGITS) / np.exp(LOGITS).sum(-1, keepdims=True)
    comp = (
        -0.5 * ((x[:, :, None] - LOC) / SCALE) ** 2 - np.log(SCALE * math.sqrt(2 * math.pi))
    ).sum(-1)
    close(mix.log_prob(make(x)), np.log((weights * np.exp(comp)).sum(-1)), rtol=1e-12)
    mean = (weights[..., None] * LOC).sum(1)
    close(mix.mean, mean, rtol=1e-12)
    second = (weights[..., None] * (SCALE**2 + LOC**2)).sum(1)
    close(mix.variance, second - mean**2, rtol=1e-10)
    dt.manual_seed(0)
    draws = mix.sample((40_000,)).cpu().numpy()
    assert draws.shape == (40_000, 2, 4)
    sigma = np.sqrt((second - mean**2) / 40_000)
    assert np.all(np.abs(draws.mean(0) - mean) < 5 * sigma)
    assert mix.expand((3, 2)).sample((2,)).shape == (2, 3, 2, 4)


@pytest.mark.parametrize("mixture_batch", [(), (1,)])
def test_mixture_broadcast_batch_draws_independent_components(make, mixture_batch):
    # A mixture whose Categorical broadcasts over the components' batch is one independent
    # mixture per batch entry: each entry picks its own component.
    probs = np.full(mixture_batch + (2,), 0.5)
    comp = D.Normal(make([[-100.0, 100.0]] * 3), make([[1e-3] * 2] * 3))
    mix = D.MixtureSameFamily(D.Categorical(probs=make(probs)), comp)
    dt.manual_seed(0)
    assert mix.sample().shape == (3,)
    draws = mix.sample((4000,)).cpu().numpy()
    assert draws.shape == (4000, 3)
    signs = np.sign(draws)
    # P(all three share a sign) is 1/4 for independent entries (sigma ~ 0.007).
    assert abs(np.mean(np.all(signs == signs[:, :1], axis=1)) - 0.25) < 0.04
    assert np.all(np.abs(np.abs(draws) - 100.0) < 0.01)


def test_mixture_of_scalars_cdf_and_gradients(make, close):
    def log_prob(logits, loc, scale):
        mix = D.MixtureSameFamily(D.Categorical(logits=logits), D.Normal(loc, scale))
        return mix.log_prob(make([0.3, -1.0, 2.0]).unsqueeze(-1))

    args = [make(v, requires_grad=True) for v in (LOGITS[0], LOC[0, :, 0], SCALE[0, :, 0])]
    assert gradcheck(log_prob, args)
    mix = D.MixtureSameFamily(D.Categorical(logits=args[0]), D.Normal(args[1], args[2]))
    weights = np.exp(LOGITS[0]) / np.exp(LOGITS[0]).sum()
    x = 0.4
    expected = sum(
        w * 0.5 * (1 + math.erf((x - m) / (s * math.sqrt(2))))
        for w, m, s in zip(weights, LOC[0, :, 0], SCALE[0, :, 0])
    )
    close(mix.cdf(make(x)), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="support"):
        D.MixtureSameFamily(D.Categorical(logits=args[0]), D.Exponential(make([1.0] * 3))).log_prob(
            make(-1.0)
        )


def test_mixture_argument_errors(make):
    with pytest.raises(ValueError, match="Categorical"):
        D.MixtureSameFamily(D.Normal(make(0.0), make(1.0)), D.Normal(make([0.0]), make([1.0])))
    with pytest.raises(ValueError, match="does not equal"):
        D.MixtureSameFamily(
            D.Categorical(logits=make([0.0, 1.0])), D.Normal(make([0.0] * 3), make([1.0] * 3))
        )
    with pytest.raises(ValueError, match="compatible"):
        components = D.Normal(make(np.zeros((4, 3))), make(np.ones((4, 3))))
        D.MixtureSameFamily(D.Categorical(logits=make(np.zeros((2, 3)))), components)
    with pytest.raises(ValueError, match="more dims"):
        components = D.Normal(make(np.zeros((4, 3))), make(np.ones((4, 3))))
        D.MixtureSameFamily(D.Categorical(logits=make(np.zeros((2, 4, 3)))), components)


def test_mixture_matches_torch(make, close, torch):
    tdist = torch.distributions
    t = torch.tensor
    theirs = tdist.MixtureSameFamily(
        tdist.Categorical(logits=t(LOGITS)), tdist.Independent(tdist.Normal(t(LOC), t(SCALE)), 1)
    )
    ours = _mixture(make)
    x = theirs.sample((6,))
    close(ours.log_prob(make(x.numpy())), theirs.log_prob(x), rtol=1e-12)
    close(ours.mean, theirs.mean, rtol=1e-12)
    close(ours.variance, theirs.variance, rtol=1e-10)


def _lowrank_params():
    rng = np.random.default_rng(1)
    return rng.normal(size=(2, 4)), rng.normal(size=(4, 2)), rng.uniform(0.5, 2.0, size=(2, 4))


def test_lowrank_against_the_dense_covariance(make, close):
    loc, w, d = _lowrank_params()
    lr = D.LowRankMultivariateNormal(make(loc), make(w), make(d))
    assert lr.batch_shape == (2,) and lr.event_shape == (4,)
    cov = w @ w.T + np.stack([np.diag(v) for v in d])
    close(lr.covariance_matrix, cov, rtol=1e-12)
    close(lr.precision_matrix, np.linalg.inv(cov), rtol=1e-10, atol=1e-12)
    close(lr.scale_tril, np.linalg.cholesky(cov), rtol=1e-10, atol=1e-12)
    close(lr.variance, np.diagonal(cov, axis1=-2, axis2=-1), rtol=1e-12)
    x = np.random.default_rng(2).normal(size=(3, 2, 4))
    diff = x - loc
    maha = np.einsum("sbi,bij,sbj->sb", diff, np.linalg.inv(cov), diff)
    logdet = np.linalg.slogdet(cov)[1]
    close(lr.log_prob(make(x)), -0.5 * (4 * np.log(2 * np.pi) + logdet + maha), rtol=1e-10)
    close(lr.entropy(), 0.5 * (4 * (1 + np.log(2 * np.pi)) + logdet), rtol=1e-12)
    dt.manual_seed(0)
    draws = lr.rsample((50_000,)).cpu().numpy()
    assert np.abs(np.cov(draws[:, 1].T) - cov[1]).max() < 0.15
    assert lr.expand((3, 2)).rsample().shape == (3, 2, 4)


def test_lowrank_rsample_and_log_prob_gradients(make, fixed_noise):
    loc, w, d = _lowrank_params()

    def draw(loc, w, d):
        return D.LowRankMultivariateNormal(loc, w, d).rsample((3,))

    def log_prob(loc, w, d):
        return D.LowRankMultivariateNormal(loc, w, d).log_prob(make(np.ones((2, 4))))

    args = [make(v, requires_grad=True) for v in (loc, w, d)]
    assert gradcheck(draw, args)
    assert gradcheck(log_prob, args)


def test_lowrank_argument_errors(make):
    with pytest.raises(ValueError, match="cov_factor"):
        D.LowRankMultivariateNormal(make(np.zeros(4)), make(np.zeros((3, 2))), make(np.ones(4)))
    with pytest.raises(ValueError, match="cov_diag"):
        D.LowRankMultivariateNormal(make(np.zeros(4)), make(np.zeros((4, 2))), make(np.ones(3)))
    with pytest.raises(ValueError, match="cov_diag"):
        D.LowRankMultivariateNormal(make(np.zeros(4)), make(np.zeros((4, 2))), make(-np.ones(4)))
    with pytest.raises(ValueError, match="Incompatible"):
        D.LowRankMultivariateNormal(
            make(np.zeros((3, 4))), make(np.zeros((2, 4, 2))), make(np.ones(4))
        )


def test_lowrank_matches_torch(make, close, torch):
    loc, w, d = _lowrank_params()
    t = torch.tensor
    ours = D.LowRankMultivariateNormal(make(loc), make(w), make(d))
    theirs = torch.distributions.LowRankMultivariateNormal(t(loc), t(w), t(d))
    x = theirs.sample((4,))
    close(ours.log_prob(make(x.numpy())), theirs.log_prob(x), rtol=1e-12)
    close(ours.entropy(), theirs.entropy(), rtol=1e-12)
    close(ours.precision_matrix, theirs.precision_matrix, rtol=1e-10, atol=1e-12)


def test_relaxed_bernoulli_density_and_draws(make, close):
    probs, temperature = np.array([0.2, 0.7]), 0.5
    rb = D.RelaxedBernoulli(make(temperature), make(probs))
    assert rb.has_rsample and rb.batch_shape == (2,)
    assert not D.LogitRelaxedBernoulli.has_rsample  # as PyTorch's (it still has rsample)
    y = np.array([0.3, 0.9])
    x = np.log(y / (1 - y))
    logits = np.log(probs / (1 - probs))
    diff = logits - x * temperature
    base = np.log(temperature) + diff - 2 * np.log1p(np.exp(diff))
    close(rb.log_prob(make(y)), base - np.log(y * (1 - y)), rtol=1e-10)
    dt.manual_seed(0)
    draws = rb.sample((50_000,)).cpu().numpy()
    assert ((draws > 0) & (draws < 1)).all()
    # P(Y > 1/2) = P(logit u + logits > 0) = probs, at any temperature
    np.testing.assert_allclose((draws > 0.5).mean(0), probs, atol=5 * 0.5 / 224)
    assert rb.expand((3, 2)).rsample().shape == (3, 2)


def test_relaxed_one_hot_density_normalises_and_draws(make, close):
    logits, temperature = np.array([0.3, -0.2, 1.0]), 0.7
    r = D.RelaxedOneHotCategorical(make(temperature), logits=make(logits))
    assert r.event_shape == (3,) and r.support is D.constraints.simplex
    # the density on the 2-simplex in coordinates (y1, y2): integrate on a grid
    h = 1 / 400
    g = np.arange(h / 2, 1, h)
    y1, y2 = np.meshgrid(g, g, indexing="ij")
    inside = y1 + y2 < 1
    y = np.stack([y1[inside], y2[inside], 1 - y1[inside] - y2[inside]], -1)
    lp = r.log_prob(make(y)).cpu().numpy()  # a density in (y1, y2), y3 = 1 - y1 - y2
    mass = (np.exp(lp) * h * h).sum()
    assert abs(mass - 1) < 0.05, mass  # a coarse grid near the corners
    # the Concrete density (Maddison et al. 2017, eq. 2)
    k, t = 3, temperature
    probs = np.exp(logits) / np.exp(logits).sum()
    expected = (
        math.lgamma(k) + (k - 1) * math.log(t)
        + (np.log(probs) - (t + 1) * np.log(y)).sum(-1)
        - k * np.log((probs * y ** (-t)).sum(-1))
    )  # fmt: skip
    close(lp, expected, rtol=1e-9)
    dt.manual_seed(0)
    draws = r.sample((50_000,)).cpu().numpy()
    np.testing.assert_allclose(draws.sum(-1), 1.0, rtol=1e-12)
    # the argmax of a Gumbel-softmax draw is Categorical(probs)
    counts = np.bincount(draws.argmax(-1), minlength=3) / 50_000
    assert np.all(np.abs(counts - probs) < 5 * np.sqrt(probs * (1 - probs) / 50_000))


def test_relaxed_rsample_gradients_by_finite_differences(make, fixed_noise):
    def bernoulli(logits, temperature):
        return D.RelaxedBernoulli(temperature, logits=logits).rsample((3,))

    def one_hot(logits, temperature):
        return D.RelaxedOneHotCategorical(temperature, logits=logits).rsample((3,))

    assert gradcheck(bernoulli, [make([0.3, -1.0], True), make(0.6, True)])
    assert gradcheck(one_hot, [make([0.3, -1.0, 0.5], True), make(0.6, True)])


def test_relaxed_match_torch(make, close, torch):
    tdist = torch.distributions
    t = torch.tensor
    logits = np.array([[0.3, -0.2, 1.0], [0.0, 2.0, -1.0]])
    ours = D.RelaxedOneHotCategorical(make(0.4), logits=make(logits))
    theirs = tdist.RelaxedOneHotCategorical(t(0.4, dtype=torch.float64), logits=t(logits))
    y = theirs.sample((4,))
    close(ours.log_prob(make(y.numpy())), theirs.log_prob(y), rtol=1e-10)
    exp_ours = D.ExpRelaxedCategorical(make(0.4), logits=make(logits))
    exp_theirs = tdist.relaxed_categorical.ExpRelaxedCategorical(
        t(0.4, dtype=torch.float64), logits=t(logits)
    )
    x = exp_theirs.sample((4,))
    close(exp_ours.log_prob(make(x.numpy())), exp_theirs.log_prob(x), rtol=1e-10)
    rb = D.RelaxedBernoulli(make(0.4), probs=make([0.2, 0.9]))
    rb_theirs = tdist.RelaxedBernoulli(
        t(0.4, dtype=torch.float64), probs=t([0.2, 0.9], dtype=torch.float64)
    )
    v = rb_theirs.sample((4,))
    close(rb.log_prob(make(v.numpy())), rb_theirs.log_prob(v), rtol=1e-10)


def _host_reads(counts) -> dict:
    return {k: v for k, v in counts.items() if k.startswith("host read")}


def test_new_families_read_nothing_back_with_validation_off(emulator):
    """``rsample``/``sample``, ``log_prob``, ``entropy`` and the KLs stay on the device."""
    cuda = "cuda"
    pos = dt.rand(3, device=cuda, dtype=dt.float64) + 0.5
    unit = dt.rand(3, device=cuda, dtype=dt.float64) * 0.8 + 0.1
    loc = dt.randn(2, 3, device=cuda, dtype=dt.float64)
    w = dt.randn(3, 2, device=cuda, dtype=dt.float64)
    off = {"validate_args": False}
    dists = [
        D.Weibull(pos, pos + 1, **off),
        D.Pareto(pos, pos + 2, **off),
        D.Kumaraswamy(pos, pos, **off),
        D.ContinuousBernoulli(unit, **off),
        D.LogisticNormal(loc, pos, **off),
        D.LowRankMultivariateNormal(loc, w, pos, **off),
        D.RelaxedBernoulli(pos, probs=unit, **off),
        D.RelaxedOneHotCategorical(pos[0], logits=loc, **off),
        D.MixtureSameFamily(
            D.Categorical(logits=loc, **off), D.Normal(loc, pos.expand(2, 3), **off), **off
        ),
    ]
    for dist in dists:
        with emulator.counting() as counts:
            x = dist.sample((5,)) if not dist.has_rsample else dist.rsample((5,))
            dist.log_prob(x)
        assert _host_reads(counts) == {}, type(dist).__name__
    with emulator.counting() as counts:
        D.Multinomial(4, probs=unit, **off).log_prob(dt.ones(3, device=cuda, dtype=dt.float64))
        dt.distributions.kl_divergence(dists[0 + 5], dists[5])
        dt.distributions.kl_divergence(D.Gamma(pos, pos, **off), D.Normal(pos, pos, **off))
        dt.distributions.kl_divergence(dists[1], dists[1])
        dists[3].entropy()
    assert _host_reads(counts) == {}
    # the counter does see reads: VonMises' rejection loop reads one flag per round
    with emulator.counting() as counts:
        D.VonMises(pos, pos, **off).sample((5,))
    assert _host_reads(counts)
