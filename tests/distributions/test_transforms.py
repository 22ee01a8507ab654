"""TransformedDistribution and the elementwise transforms: densities by the change of
variables against numpy (and PyTorch when installed), the SAC tanh-squashed Normal."""

from __future__ import annotations

import math

import numpy as np
import pytest

import dtrain as dt
from dtrain.distributions import Normal, TransformedDistribution
from dtrain.distributions.transforms import (
    AffineTransform,
    ComposeTransform,
    ExpTransform,
    SigmoidTransform,
    TanhTransform,
)


def normal_log_pdf(x, mu, sigma):
    return -((x - mu) ** 2) / (2 * sigma**2) - np.log(sigma) - 0.5 * math.log(2 * math.pi)


def test_tanh_squashed_normal_log_prob(make, close):
    mu, sigma = np.array([0.3, -1.0]), np.array([0.5, 2.0])
    d = TransformedDistribution(Normal(make(mu), make(sigma)), [TanhTransform()])
    y = np.array([0.2, -0.9])
    x = np.arctanh(y)
    expected = normal_log_pdf(x, mu, sigma) - np.log1p(-(y**2))
    close(d.log_prob(make(y)), expected, rtol=1e-12)
    assert d.batch_shape == (2,) and d.has_rsample


def test_cached_tanh_scores_the_sample_without_atanh(make):
    dt.manual_seed(0)
    loc = make([0.0, 5.0], requires_grad=True)
    d = TransformedDistribution(Normal(loc, make([1.0, 1.0])), [TanhTransform(cache_size=1)])
    action = d.rsample()
    log_prob = d.log_prob(action)
    assert bool(dt.isfinite(log_prob).all())  # atanh(tanh(5 + e)) would lose precision
    log_prob.sum().backward()
    assert loc.grad is not None


def test_compose_affine_exp_sigmoid(make, close):
    base = Normal(make([0.1, 0.4]), make([1.0, 0.5]))
    d = TransformedDistribution(base, ComposeTransform([AffineTransform(1.0, 2.0), ExpTransform()]))
    y = np.array([0.7, 3.0])
    x = (np.log(y) - 1.0) / 2.0
    expected = normal_log_pdf(x, np.array([0.1, 0.4]), np.array([1.0, 0.5])) - np.log(2 * y)
    close(d.log_prob(make(y)), expected, rtol=1e-12)
    s = TransformedDistribution(base, [SigmoidTransform()])
    p = np.array([0.2, 0.9])
    x = np.log(p / (1 - p))
    expected = normal_log_pdf(x, np.array([0.1, 0.4]), np.array([1.0, 0.5])) - np.log(p * (1 - p))
    close(s.log_prob(make(p)), expected, rtol=1e-12)
    dt.manual_seed(1)
    assert bool(((s.sample((100,)) > 0) & (s.sample((100,)) < 1)).all())


def test_cache_size_is_checked():
    with pytest.raises(ValueError, match="cache_size"):
        TanhTransform(cache_size=2)


def test_against_pytorch(torch, make):
    td = torch.distributions
    mu, sigma = np.array([0.3, -1.0]), np.array([0.5, 2.0])
    y = np.array([0.2, -0.9])
    ours = TransformedDistribution(
        Normal(make(mu), make(sigma)), [TanhTransform(), AffineTransform(0.5, 3.0)]
    ).log_prob(make(y * 3.0 + 0.5))
    theirs = td.TransformedDistribution(
        td.Normal(torch.tensor(mu), torch.tensor(sigma)),
        [td.transforms.TanhTransform(), td.transforms.AffineTransform(0.5, 3.0)],
    ).log_prob(torch.tensor(y * 3.0 + 0.5))
    np.testing.assert_allclose(ours.detach().cpu().numpy(), theirs.numpy(), rtol=1e-12)


def test_sigmoid_transform_keeps_its_samples_scoreable():
    # A wide base rounds many sigmoids to exactly 0 or 1; clamped off the ends (as
    # PyTorch's), their log_prob stays finite instead of NaN.
    from dtrain.distributions import Normal, TransformedDistribution
    from dtrain.distributions.transforms import SigmoidTransform

    dt.manual_seed(0)
    d = TransformedDistribution(Normal(dt.tensor(0.0), dt.tensor(20.0)), [SigmoidTransform()])
    samples = d.sample((2000,))
    assert bool(dt.isfinite(d.log_prob(samples)).all())
    ends = d.log_prob(dt.tensor([1.0, 0.0]))
    assert dt.allclose(ends, dt.tensor([11.7100, 73.8873]), atol=1e-3)  # PyTorch's values
