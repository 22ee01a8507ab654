"""Edge cases shared with PyTorch: Dirichlet/Beta modes with every concentration below 1,
AffineTransform parameters that broadcast the batch, a zero affine scale, and an MVN with a
singular ``scale_tril`` (validation off)."""

from __future__ import annotations

import numpy as np

import dtrain as dt
import dtrain.distributions as D
from dtrain.distributions.transforms import AffineTransform


def test_mode_with_every_concentration_below_one_is_the_first_corner(make, close):
    d = D.Dirichlet(make([[0.3, 0.5, 0.2], [2.0, 3.0, 1.0]]))
    close(d.mode, [[1.0, 0.0, 0.0], [1 / 3, 2 / 3, 0.0]])
    close(D.Beta(make([0.2, 3.0]), make([0.3, 2.0])).mode, [1.0, 2 / 3])


def test_mode_against_torch(make, close, torch):
    c = [[0.3, 0.5, 0.2], [2.0, 3.0, 1.0], [0.9, 1.5, 0.1]]
    close(D.Dirichlet(make(c)).mode, torch.distributions.Dirichlet(torch.tensor(c)).mode)
    a, b = [0.2, 3.0, 0.5], [0.3, 2.0, 1.0]
    expected = torch.distributions.Beta(torch.tensor(a), torch.tensor(b)).mode
    close(D.Beta(make(a), make(b)).mode, expected)


def _affine(make, scale_shape):
    scale = make(np.linspace(0.5, 2.0, int(np.prod(scale_shape))).reshape(scale_shape))
    base = D.Normal(make(np.zeros((2, 3))), make(np.ones((2, 3))))
    return D.TransformedDistribution(base, [AffineTransform(0.5, scale)]), scale


def test_affine_scale_with_more_dims_broadcasts_the_batch(make, close):
    d, scale = _affine(make, (4, 1, 1))
    assert d.batch_shape == (4, 2, 3) and d.base_dist.batch_shape == (4, 2, 3)
    assert d.sample((5,)).shape == (5, 4, 2, 3) and d.rsample().shape == (4, 2, 3)
    v = np.linspace(-1, 1, 6).reshape(2, 3)
    s = scale.cpu().numpy()
    expected = -(((v - 0.5) / s) ** 2) / 2 - np.log(s) - 0.5 * np.log(2 * np.pi)
    close(d.log_prob(make(v)), expected, rtol=1e-13)
    parts = [AffineTransform(0.0, scale[..., 0, :1]), D.transforms.ExpTransform()]  # (4, 1)
    composed = D.TransformedDistribution(
        D.Normal(make(np.zeros(3)), 1.0), [D.transforms.ComposeTransform(parts)]
    )
    assert composed.batch_shape == (4, 3) and composed.sample((2,)).shape == (2, 4, 3)
    same, _ = _affine(make, (3,))
    assert same.batch_shape == (2, 3) and same.base_dist.batch_shape == (2, 3)


def test_affine_shapes_against_torch(make, close, torch):
    d, scale = _affine(make, (4, 1, 1))
    t = torch.distributions
    ref = t.TransformedDistribution(
        t.Normal(torch.zeros(2, 3, dtype=torch.float64), torch.ones(2, 3, dtype=torch.float64)),
        [t.transforms.AffineTransform(0.5, torch.tensor(scale.cpu().numpy()))],
    )
    assert tuple(d.batch_shape) == tuple(ref.batch_shape)
    assert tuple(d.sample((5,)).shape) == tuple(ref.sample((5,)).shape)
    v = np.linspace(-1, 1, 6).reshape(2, 3)
    close(d.log_prob(make(v)), ref.log_prob(torch.tensor(v)))


def test_zero_affine_scale_has_minus_infinite_log_det(make):
    """PyTorch raises ``math domain error`` here; dtrain gives -inf."""
    t = AffineTransform(1.0, 0.0)
    x = make([1.0, 2.0])
    np.testing.assert_array_equal(t.log_abs_det_jacobian(x, t(x)).cpu().numpy(), [-np.inf, -np.inf])
    assert t.sign == 0


def test_mvn_with_a_singular_scale_tril_gives_a_value(make, torch):
    tril = [[1.0, 0.0], [0.5, 0.0]]
    x = [0.3, 0.2]
    ours = D.MultivariateNormal(make([0.0, 0.0]), scale_tril=make(tril), validate_args=False)
    ref = torch.distributions.MultivariateNormal(
        torch.zeros(2, dtype=torch.float64),
        scale_tril=torch.tensor(tril, dtype=torch.float64),
        validate_args=False,
    )
    np.testing.assert_array_equal(
        ours.log_prob(make(x)).cpu().numpy(),
        ref.log_prob(torch.tensor(x, dtype=torch.float64)).cpu().numpy(),
    )


def test_mvn_with_a_singular_scale_tril_does_not_raise(make):
    tril = make([[1.0, 0.0], [0.5, 0.0]])
    d = D.MultivariateNormal(make([0.0, 0.0]), scale_tril=tril, validate_args=False)
    value = d.log_prob(make([0.3, 0.2])).cpu().numpy()
    assert not np.isfinite(value)  # a zero pivot: inf/NaN, not an error
    assert dt.is_tensor(d.log_prob(make([0.3, 0.15])))
