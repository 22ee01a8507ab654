"""Reparameterised Gamma, Chi2, Beta and Dirichlet draws: the implicit gradient against
finite differences of the gamma CDF (numpy series) and PyTorch's ``_standard_gamma_grad``,
and gradients of sample means against closed forms (fixed seeds, 5-sigma tolerances)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import dtrain as dt
from dtrain._tensor.distributions import gamma as gamma_module
from dtrain._tensor.distributions.gamma_grad import standard_gamma_grad
from dtrain.distributions import Beta, Chi2, Dirichlet, Gamma
from dtrain.runtime.gamma_functions import polygamma

ALPHAS = [0.01, 0.3, 1.0, 2.5, 7.0, 9.0, 30.0, 400.0]


def _gamma_cdf(a: float, x: np.ndarray) -> np.ndarray:
    """The regularised lower incomplete gamma ``P(a, x)`` by its power series
    ``x^a e^-x sum_n x^n / Gamma(a + n + 1)`` (converged to round-off for x < 500)."""
    n = np.arange(1500.0)
    log_terms = (
        a * np.log(x)[:, None]
        - x[:, None]
        + n * np.log(x)[:, None]
        - np.vectorize(math.lgamma)(a + n + 1)
    )
    top = log_terms.max(axis=1, keepdims=True)
    return np.exp(top[:, 0]) * np.exp(log_terms - top).sum(axis=1)


def _draws(a: float, n: int, seed: int) -> np.ndarray:
    dt.manual_seed(seed)
    return standard_gamma_array(np.full(n, a))


def standard_gamma_array(alpha: np.ndarray) -> np.ndarray:
    return gamma_module.standard_gamma(dt.tensor(alpha, dtype=dt.float64)).numpy()


@pytest.mark.parametrize("a", ALPHAS)
def test_standard_gamma_grad_matches_finite_differences_of_the_cdf(a):
    x = _draws(a, 40, seed=3)
    x = x[(x > 1e-30) & (x < 450)]  # the numpy series' range
    h = 1e-5 * a
    d_cdf_da = (_gamma_cdf(a + h, x) - _gamma_cdf(a - h, x)) / (2 * h)
    pdf = np.exp((a - 1) * np.log(x) - x - math.lgamma(a))
    exact = -d_cdf_da / pdf
    # PyTorch's piecewise approximation is good to ~4e-4 relative.
    np.testing.assert_allclose(standard_gamma_grad(np.full_like(x, a), x), exact, rtol=1e-3)


@pytest.mark.parametrize("a", ALPHAS)
def test_standard_gamma_grad_matches_torch(a, torch):
    x = _draws(a, 500, seed=4)
    alpha = np.full_like(x, a)
    expected = torch._standard_gamma_grad(torch.tensor(alpha), torch.tensor(x)).numpy()
    np.testing.assert_allclose(standard_gamma_grad(alpha, x), expected, rtol=1e-12)
    x32, a32 = x.astype(np.float32), alpha.astype(np.float32)
    ours = standard_gamma_grad(a32, x32)
    assert ours.dtype == np.float32
    expected = torch._standard_gamma_grad(torch.tensor(a32), torch.tensor(x32)).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-6)


def test_gamma_rsample_backward_against_torch_on_the_same_draws(make, torch):
    a = make([0.2, 1.5, 12.0], requires_grad=True)
    rate = make([0.5, 2.0, 3.0], requires_grad=True)
    dt.manual_seed(0)
    x = Gamma(a, rate).rsample((50,))
    weights = np.linspace(-1, 2, x.numel()).reshape(tuple(x.shape))
    (x * make(weights)).sum().backward()
    at, rt = (
        torch.tensor(v, dtype=torch.float64, requires_grad=True)
        for v in ([0.2, 1.5, 12.0], [0.5, 2.0, 3.0])
    )
    xs = torch.tensor(x.detach().cpu().numpy())
    g = (xs * rt.detach()).detach()  # the standard draws behind x
    value = _TorchGammaFrom(g).apply(at.expand(50, 3)) / rt
    (value * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(a.grad.cpu().numpy(), at.grad.numpy(), rtol=1e-9)
    np.testing.assert_allclose(rate.grad.cpu().numpy(), rt.grad.numpy(), rtol=1e-9)


class _TorchGammaFrom:
    """torch's ``_standard_gamma`` backward at given draws ``g``."""

    def __init__(self, g):
        import torch

        class Draw(torch.autograd.Function):
            @staticmethod
            def forward(ctx, alpha):
                ctx.save_for_backward(alpha)
                return g.clone()

            @staticmethod
            def backward(ctx, grad):
                (alpha,) = ctx.saved_tensors
                return grad * torch._standard_gamma_grad(alpha, g)

        self.apply = Draw.apply


@pytest.mark.parametrize("a", [0.1, 0.7, 3.0, 25.0])
def test_gamma_rsample_gradients_of_moments(a, test_device):
    """d/da E[x] = 1 / rate, d/da E[x^2] = (2a + 1) / rate^2, d/da E[log x] = trigamma(a)
    and d/drate E[x] = -a / rate^2, from batches of draws."""
    rate = 1.5
    batches, n = 40, 5000
    grads = []
    for seed in range(batches):
        dt.manual_seed(seed)
        alpha = dt.tensor(a, dtype=dt.float64, device=test_device, requires_grad=True)
        r = dt.tensor(rate, dtype=dt.float64, device=test_device, requires_grad=True)
        x = Gamma(alpha, r).rsample((n,))
        row = []
        for statistic in (x, x * x, x.log()):
            da, dr = dt.autograd.grad(statistic.mean(), (alpha, r), retain_graph=True)
            row += [float(da), float(dr)]
        grads.append(row)
    grads = np.array(grads)
    mean, err = grads.mean(0), grads.std(0, ddof=1) / math.sqrt(batches)
    expected = [
        1 / rate,
        -a / rate**2,
        (2 * a + 1) / rate**2,
        -2 * a * (a + 1) / rate**3,
        float(polygamma(1, np.array(a))),
        -1 / rate,
    ]
    assert np.all(np.abs(mean - expected) < 5 * err + 1e-12), (mean, expected, err)


def test_rsample_flags_shapes_and_dtypes(make):
    assert Gamma.has_rsample and Chi2.has_rsample and Beta.has_rsample and Dirichlet.has_rsample
    a = make([0.5, 2.0], requires_grad=True)
    x = Gamma(a, 1.0).rsample((3,))
    assert x.shape == (3, 2) and x.requires_grad and x.dtype == dt.float64
    assert Gamma(2.0, 1.0).rsample().dtype == dt.float32
    assert not Gamma(a, 1.0).sample((3,)).requires_grad
    df = make([3.0], requires_grad=True)
    Chi2(df).rsample((4,)).sum().backward()
    assert df.grad is not None and float(df.grad.sum()) > 0  # more df, larger draws
    d = Dirichlet(make([[0.5, 1.0, 2.0]], requires_grad=True)).rsample((6,))
    assert d.shape == (6, 1, 3) and d.requires_grad
    np.testing.assert_allclose(d.detach().cpu().numpy().sum(-1), 1.0, rtol=1e-12)
    b = Beta(make(0.5, requires_grad=True), 2.0).rsample((5,))
    assert b.shape == (5,) and b.requires_grad


def test_beta_and_dirichlet_rsample_gradients_of_moments(test_device):
    """d/dc_j E[x_0] and d/dc_j E[x_0^2] of Dirichlet(c), and the same for Beta, against
    the closed forms: gradients through normalised gamma draws are unbiased."""
    c = np.array([0.6, 2.0, 3.5])
    total = c.sum()
    batches, n = 40, 4000
    dirichlet_grads, beta_grads = [], []
    for seed in range(batches):
        dt.manual_seed(seed)
        conc = dt.tensor(c, dtype=dt.float64, device=test_device, requires_grad=True)
        x = Dirichlet(conc).rsample((n,))[:, 0]
        g1 = dt.autograd.grad(x.mean(), conc, retain_graph=True)[0]
        g2 = dt.autograd.grad((x * x).mean(), conc)[0]
        dirichlet_grads.append(np.concatenate([g1.cpu().numpy(), g2.cpu().numpy()]))
        a = dt.tensor(c[0], dtype=dt.float64, device=test_device, requires_grad=True)
        b = dt.tensor(c[1:].sum(), dtype=dt.float64, device=test_device, requires_grad=True)
        y = Beta(a, b).rsample((n,))
        beta_grads.append([float(v) for v in dt.autograd.grad((y * y).mean(), (a, b))])
    # E[x0] = c0 / T; E[x0^2] = c0 (c0 + 1) / (T (T + 1))
    d_mean = np.array([1 / total - c[0] / total**2, -c[0] / total**2, -c[0] / total**2])
    second = c[0] * (c[0] + 1) / (total * (total + 1))
    d_second = -second * (2 * total + 1) / (total * (total + 1)) * np.ones(3)
    d_second[0] += (2 * c[0] + 1) / (total * (total + 1))
    for grads, expected in (
        (np.array(dirichlet_grads), np.concatenate([d_mean, d_second])),
        (np.array(beta_grads), d_second[:2]),
    ):
        mean, err = grads.mean(0), grads.std(0, ddof=1) / math.sqrt(batches)
        assert np.all(np.abs(mean - expected) < 5 * err), (mean, expected, err)


def test_dirichlet_rsample_gradient_agrees_with_torch_in_expectation(test_device, torch):
    """PyTorch's ``_dirichlet_grad`` is another per-draw gradient with the same mean."""
    c = [0.6, 2.0, 3.5]
    ct = torch.tensor(c, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(0)
    xt = torch.distributions.Dirichlet(ct).rsample((200_000,))[:, 0]
    (xt * xt).mean().backward()
    dt.manual_seed(0)
    conc = dt.tensor(c, dtype=dt.float64, device=test_device, requires_grad=True)
    x = Dirichlet(conc).rsample((200_000,))[:, 0]
    (x * x).mean().backward()
    # Both estimate the same gradient; their sampling errors are ~3e-4 here.
    np.testing.assert_allclose(conc.grad.cpu().numpy(), ct.grad.numpy(), atol=3e-3)
