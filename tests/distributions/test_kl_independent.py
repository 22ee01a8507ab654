"""kl_divergence (closed forms, PyTorch, Monte Carlo, dispatch, register_kl) and
Independent."""

from __future__ import annotations

import numpy as np
import pytest

import dtrain as dt
import dtrain.distributions as D
from dtrain.autograd import gradcheck
from dtrain.distributions import kl_divergence, register_kl
from dtrain.distributions.kl import kl_divergence as kl_from_module

M1, S1 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 0.5, 2.0])
M2, S2 = np.array([0.5, 1.0, 1.0]), np.array([2.0, 0.5, 1.0])
P = np.array([[0.2, 0.3, 0.5], [0.0, 0.5, 0.5]])
Q = np.array([[0.3, 0.3, 0.4], [0.25, 0.25, 0.5]])


def test_normal_normal_closed_form(make, close):
    kl = kl_divergence(D.Normal(make(M1), make(S1)), D.Normal(make(M2), make(S2)))
    close(kl, np.log(S2 / S1) + (S1**2 + (M1 - M2) ** 2) / (2 * S2**2) - 0.5)
    assert kl_from_module is kl_divergence


def test_categorical_closed_form_with_zeros(make, close):
    kl = kl_divergence(D.Categorical(make(P)), D.Categorical(make(Q)))
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(P == 0, 0.0, P * np.log(P / Q))
    close(kl, terms.sum(-1))
    # q = 0 where p > 0: infinite
    inf = kl_divergence(D.Categorical(make(Q)), D.Categorical(make(P))).cpu().numpy()
    assert np.isinf(inf[1]) and np.isfinite(inf[0])
    one_hot = kl_divergence(D.OneHotCategorical(make(P)), D.OneHotCategorical(make(Q)))
    close(one_hot, kl)


def test_bernoulli_closed_form(make, close):
    p, q = np.array([0.1, 0.5, 0.9]), np.array([0.3, 0.5, 0.2])
    kl = kl_divergence(D.Bernoulli(make(p)), D.Bernoulli(make(q)))
    close(kl, p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q)), atol=1e-9)
    edge = kl_divergence(D.Bernoulli(make([0.0, 1.0, 0.5])), D.Bernoulli(make([0.5, 0.5, 1.0])))
    close(edge, [np.log(2), np.log(2), np.inf], atol=1e-9)


def test_uniform_closed_form(make, close):
    p = D.Uniform(make([0.0, 0.0]), make([1.0, 1.0]))
    q = D.Uniform(make([-1.0, 0.5]), make([2.0, 2.0]))
    close(kl_divergence(p, q), [np.log(3.0), np.inf])


PAIRS = {
    "Normal": (lambda m: D.Normal(m(M1), m(S1)), lambda m: D.Normal(m(M2), m(S2))),
    "Laplace": (lambda m: D.Laplace(m(M1), m(S1)), lambda m: D.Laplace(m(M2), m(S2))),
    "Exponential": (lambda m: D.Exponential(m(S1)), lambda m: D.Exponential(m(S2))),
    "LogNormal": (lambda m: D.LogNormal(m(M1), m(S1)), lambda m: D.LogNormal(m(M2), m(S2))),
    "Uniform": (
        lambda m: D.Uniform(m([0.0, 0.1]), m([1.0, 0.5])),
        lambda m: D.Uniform(m([-1.0, 0.0]), m([2.0, 1.0])),
    ),
    "Categorical": (lambda m: D.Categorical(m(P)), lambda m: D.Categorical(m(Q))),
    "Bernoulli": (lambda m: D.Bernoulli(m(P)), lambda m: D.Bernoulli(m(Q))),
    # pairs of different families
    "Normal-Laplace": (lambda m: D.Normal(m(M1), m(S1)), lambda m: D.Laplace(m(M2), m(S2))),
    "Laplace-Normal": (lambda m: D.Laplace(m(M1), m(S1)), lambda m: D.Normal(m(M2), m(S2))),
    "Exponential-Normal": (lambda m: D.Exponential(m(S1)), lambda m: D.Normal(m(M2), m(S2))),
    "Uniform-Normal": (
        lambda m: D.Uniform(m([0.0, -3.0, 1.0]), m([1.0, 0.5, 1.2])),
        lambda m: D.Normal(m(M2), m(S2)),
    ),
    "Uniform-Exponential": (
        lambda m: D.Uniform(m([0.0, 0.1, 2.0]), m([1.0, 0.5, 3.0])),
        lambda m: D.Exponential(m(S2)),
    ),
}
INFINITE = {
    # q has no mass where p has some: KL is inf, shaped as p's parameter (PyTorch's)
    "Normal-Exponential": (lambda m: D.Normal(m(M1), m(S1)), lambda m: D.Exponential(m(S2))),
    "Normal-Uniform": (
        lambda m: D.Normal(m(M1), m(S1)),
        lambda m: D.Uniform(m([-9.0] * 3), m([9.0] * 3)),
    ),
    "Laplace-Exponential": (lambda m: D.Laplace(m(M1), m(S1)), lambda m: D.Exponential(m(S2))),
    "Laplace-Uniform": (
        lambda m: D.Laplace(m(M1), m(S1)),
        lambda m: D.Uniform(m([-9.0] * 3), m([9.0] * 3)),
    ),
    "Exponential-Uniform": (
        lambda m: D.Exponential(m(S1)),
        lambda m: D.Uniform(m([0.0] * 3), m([9.0] * 3)),
    ),
    "Uniform-Exponential": (
        lambda m: D.Uniform(m([-0.5, -1.0, -2.0]), m([1.0, 0.5, 3.0])),
        lambda m: D.Exponential(m(S2)),
    ),
}


@pytest.mark.parametrize("name", sorted(INFINITE))
def test_kl_of_pairs_with_missing_mass_is_infinite(name, make):
    make_p, make_q = INFINITE[name]
    kl = kl_divergence(make_p(make), make_q(make))
    assert kl.shape == (3,) and kl.dtype == dt.float64
    assert np.isposinf(kl.cpu().numpy()).all()


@pytest.mark.parametrize("name", sorted(INFINITE))
def test_kl_of_pairs_with_missing_mass_matches_torch(name, torch, make, close):
    make_p, make_q = INFINITE[name]
    p, q = make_p(make), make_q(make)
    theirs = torch.distributions.kl_divergence(_as_torch(p, torch), _as_torch(q, torch))
    close(kl_divergence(p, q), theirs)


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_kl_matches_monte_carlo(name, make):
    """KL = E_p[log p(x) - log q(x)], estimated from 40000 draws of p (5 standard errors)."""
    make_p, make_q = PAIRS[name]
    p, q = make_p(make), make_q(make)
    dt.manual_seed(0)
    x = p.sample((40000,))
    diff = (p.log_prob(x) - q.log_prob(x)).cpu().numpy()
    estimate, error = diff.mean(0), diff.std(0) / np.sqrt(len(diff))
    exact = kl_divergence(p, q).cpu().numpy()
    assert np.all(np.abs(estimate - exact) <= 5 * error + 1e-12), (estimate, exact)


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_kl_matches_torch(name, torch, make, close):
    make_p, make_q = PAIRS[name]

    p, q = make_p(make), make_q(make)
    theirs = torch.distributions.kl_divergence(_as_torch(p, torch), _as_torch(q, torch))
    close(kl_divergence(p, q), theirs, atol=1e-9)


def _as_torch(dist, torch):
    """The PyTorch distribution with the same parameters."""
    name = type(dist).__name__
    fields = {
        "Normal": ("loc", "scale"),
        "Laplace": ("loc", "scale"),
        "LogNormal": ("loc", "scale"),
        "Exponential": ("rate",),
        "Uniform": ("low", "high"),
        "Categorical": ("probs",),
        "Bernoulli": ("probs",),
    }[name]
    args = [torch.tensor(getattr(dist, f).detach().cpu().numpy()) for f in fields]
    return getattr(torch.distributions, name)(*args)


def test_kl_gradients(make):
    m1, s1 = make(M1, requires_grad=True), make(S1, requires_grad=True)
    q = D.Normal(make(M2), make(S2))
    assert gradcheck(lambda m, s: kl_divergence(D.Normal(m, s), q), [m1, s1])
    logits = make(np.log(P + 0.1), requires_grad=True)
    assert gradcheck(
        lambda z: kl_divergence(D.Categorical(logits=z), D.Categorical(make(Q))), [logits]
    )
    laplace = D.Laplace(make(M2), make(S2))
    assert gradcheck(lambda m, s: kl_divergence(D.Normal(m, s), laplace), [m1, s1])
    assert gradcheck(lambda m, s: kl_divergence(D.Laplace(m, s), q), [m1, s1])


def test_kl_of_unregistered_pair_names_it(make):
    with pytest.raises(NotImplementedError, match=r"Normal.*Bernoulli"):
        kl_divergence(D.Normal(0.0, 1.0), D.Bernoulli(0.5))


def test_register_kl_and_most_specific_dispatch(make, close):
    class MyNormal(D.Normal):
        pass

    # a subclass uses its base class's registration ...
    close(
        kl_divergence(MyNormal(0.0, 1.0), D.Normal(1.0, 1.0)),
        kl_divergence(D.Normal(0.0, 1.0), D.Normal(1.0, 1.0)),
    )

    # ... until a more specific one is registered
    @register_kl(MyNormal, D.Normal)
    def _kl(p, q):
        return dt.tensor(42.0)

    assert kl_divergence(MyNormal(0.0, 1.0), D.Normal(1.0, 1.0)).item() == 42.0
    assert kl_divergence(D.Normal(0.0, 1.0), MyNormal(1.0, 1.0)).item() != 42.0
    with pytest.raises(TypeError, match="Distribution subclasses"):
        register_kl(int, D.Normal)


def test_independent_shapes_log_prob_entropy(make, close):
    loc = np.array([[0.0, 1.0, 2.0], [-1.0, 0.5, 0.0]])
    scale = np.array([[1.0, 2.0, 0.5], [0.3, 1.0, 1.5]])
    base = D.Normal(make(loc), make(scale))
    d = D.Independent(base, 1)
    assert d.batch_shape == (2,) and d.event_shape == (3,)
    assert d.has_rsample and d.sample((5,)).shape == (5, 2, 3)
    x = make(np.ones((2, 3)))
    close(d.log_prob(x), base.log_prob(x).cpu().numpy().sum(-1))
    close(d.entropy(), base.entropy().cpu().numpy().sum(-1))
    close(d.mean, loc)
    close(d.variance, scale**2)
    whole = D.Independent(base, 2)
    assert whole.batch_shape == () and whole.event_shape == (2, 3)
    close(whole.log_prob(x), base.log_prob(x).cpu().numpy().sum())
    assert d.expand((4, 2)).batch_shape == (4, 2)
    assert d.expand((4, 2)).log_prob(x).shape == (4, 2)
    kl = kl_divergence(d, D.Independent(D.Normal(make(loc + 1), make(scale)), 1))
    close(kl, kl_divergence(base, D.Normal(make(loc + 1), make(scale))).cpu().numpy().sum(-1))
    with pytest.raises(NotImplementedError, match="reinterpreted_batch_ndims"):
        kl_divergence(d, whole)
    with pytest.raises(ValueError, match="reinterpreted_batch_ndims"):
        D.Independent(base, 3)


def test_independent_matches_torch(torch, make, close):
    loc, scale = np.array([[0.0, 1.0], [2.0, 3.0]]), np.array([[1.0, 2.0], [0.5, 0.7]])
    ours = D.Independent(D.Normal(make(loc), make(scale)), 1)
    theirs = torch.distributions.Independent(
        torch.distributions.Normal(torch.tensor(loc), torch.tensor(scale)), 1
    )
    x = np.array([[0.5, 0.2], [1.0, 1.0]])
    close(ours.log_prob(make(x)), theirs.log_prob(torch.tensor(x)))
    close(ours.entropy(), theirs.entropy())
    assert tuple(ours.batch_shape) == tuple(theirs.batch_shape)
    assert tuple(ours.event_shape) == tuple(theirs.event_shape)
