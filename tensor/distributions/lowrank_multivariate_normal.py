"""``LowRankMultivariateNormal(loc, cov_factor, cov_diag)``: a Gaussian whose covariance is
``W W^T + diag(D)``, handled through the ``m x m`` capacitance matrix (Woodbury), as
PyTorch's."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from dtrain._tensor import functions as fn
from dtrain._tensor.distributions import constraints
from dtrain._tensor.distributions.distribution import Distribution, as_size, standard_normal
from dtrain._tensor.distributions.multivariate_normal import batch_mahalanobis
from dtrain._tensor.distributions.utils import lazy_property
from dtrain._tensor.ops.linalg import cholesky, cholesky_unchecked, solve_triangular
from dtrain._tensor.size import Size
from dtrain._tensor.tensor import Tensor


def batch_mv(matrix: Tensor, vector: Tensor) -> Tensor:
    """``matrix @ vector`` over the last dims, batch dims broadcast."""
    return (matrix @ vector.unsqueeze(-1)).squeeze(-1)


def _with_identity(matrix: Tensor) -> Tensor:
    n = matrix.shape[-1]
    return matrix + fn.eye(n, dtype=matrix.dtype, device=matrix.device)


def capacitance_tril(w: Tensor, d: Tensor, check: bool = True) -> Tensor:
    """The lower Cholesky factor of ``I + W^T D^-1 W``."""
    wt_dinv = w.mT / d.unsqueeze(-2)
    k = _with_identity(wt_dinv @ w)
    return cholesky(k) if check else cholesky_unchecked(k)


def lowrank_logdet(w: Tensor, d: Tensor, cap_tril: Tensor) -> Tensor:
    """``log det(W W^T + D)`` by the matrix determinant lemma."""
    return 2 * cap_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1) + d.log().sum(-1)


def lowrank_mahalanobis(w: Tensor, d: Tensor, x: Tensor, cap_tril: Tensor) -> Tensor:
    """``x^T (W W^T + D)^-1 x`` by the Woodbury identity."""
    wt_dinv = w.mT / d.unsqueeze(-2)
    wt_dinv_x = batch_mv(wt_dinv, x)
    return (x.pow(2) / d).sum(-1) - batch_mahalanobis(cap_tril, wt_dinv_x)


def batch_trace_xxt(matrix: Tensor) -> Tensor:
    """``trace(X X^T)``: the sum of squares over the last two dims."""
    return matrix.pow(2).sum((-2, -1))


class LowRankMultivariateNormal(Distribution):
    """The Gaussian with mean ``loc`` ``(..., n)`` and covariance
    ``cov_factor @ cov_factor.mT + diag(cov_diag)`` (``cov_factor`` ``(..., n, m)``,
    ``cov_diag`` ``(..., n)``, batch dims broadcast); ``rsample`` is
    ``loc + W eps_W + sqrt(D) eps_D``, reparameterised."""

    arg_constraints: ClassVar[dict] = {
        "loc": constraints.real_vector,
        "cov_factor": constraints.independent(constraints.real, 2),
        "cov_diag": constraints.independent(constraints.positive, 1),
    }
    support = constraints.real_vector
    has_rsample = True

    def __init__(
        self,
        loc: Tensor,
        cov_factor: Tensor,
        cov_diag: Tensor,
        validate_args: bool | None = None,
    ) -> None:
        if not isinstance(loc, Tensor) or loc.ndim < 1:
            raise ValueError(f"loc must be at least one-dimensional, got {loc!r}")
        n = loc.shape[-1]
        if not isinstance(cov_factor, Tensor) or cov_factor.ndim < 2:
            raise ValueError(
                "cov_factor must be at least two-dimensional, with optional leading batch "
                f"dimensions; got {cov_factor!r}"
            )
        if cov_factor.shape[-2] != n:
            raise ValueError(
                f"cov_factor must be a batch of matrices with shape {n} x m, got "
                f"{tuple(cov_factor.shape)}"
            )
        if not isinstance(cov_diag, Tensor) or tuple(cov_diag.shape[-1:]) != (n,):
            raise ValueError(
                f"cov_diag must be a batch of vectors with shape ({n},), got "
                f"{getattr(cov_diag, 'shape', cov_diag)!r}"
            )
        m = cov_factor.shape[-1]
        try:
            batch = np.broadcast_shapes(
                tuple(loc.shape[:-1]), tuple(cov_factor.shape[:-2]), tuple(cov_diag.shape[:-1])
            )
        except ValueError:
            raise ValueError(
                f"Incompatible batch shapes: loc {tuple(loc.shape)}, cov_factor "
                f"{tuple(cov_factor.shape)}, cov_diag {tuple(cov_diag.shape)}"
            ) from None
        batch_shape = Size(batch)
        self.loc = loc.expand(batch_shape + (n,))
        self.cov_factor = cov_factor.expand(batch_shape + (n, m))
        self.cov_diag = cov_diag.expand(batch_shape + (n,))
        self._unbroadcasted_cov_factor = cov_factor
        self._unbroadcasted_cov_diag = cov_diag
        super().__init__(batch_shape, (n,), validate_args=validate_args)
        self._capacitance_tril = capacitance_tril(
            cov_factor, cov_diag, check=bool(self._validate_args)
        )

    def expand(self, batch_shape: Any, _instance: Any = None) -> LowRankMultivariateNormal:
        new = self._get_checked_instance(LowRankMultivariateNormal, _instance)
        batch_shape = as_size(batch_shape, "batch_shape")
        loc_shape = batch_shape + self.event_shape
        new.loc = self.loc.expand(loc_shape)
        new.cov_diag = self.cov_diag.expand(loc_shape)
        new.cov_factor = self.cov_factor.expand(loc_shape + self.cov_factor.shape[-1:])
        new._unbroadcasted_cov_factor = self._unbroadcasted_cov_factor
        new._unbroadcasted_cov_diag = self._unbroadcasted_cov_diag
        new._capacitance_tril = self._capacitance_tril
        Distribution.__init__(new, batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def mean(self) -> Tensor:
        return self.loc

    @property
    def mode(self) -> Tensor:
        return self.loc

    @lazy_property
    def variance(self) -> Tensor:  # type: ignore[override]
        w, d = self._unbroadcasted_cov_factor, self._unbroadcasted_cov_diag
        return (w.pow(2).sum(-1) + d).expand(self._batch_shape + self._event_shape)

    @lazy_property
    def scale_tril(self) -> Tensor:
        """The lower Cholesky factor of the covariance."""
        n = self._event_shape[0]
        d_sqrt = self._unbroadcasted_cov_diag.sqrt().unsqueeze(-1)
        dinvsqrt_w = self._unbroadcasted_cov_factor / d_sqrt
        k = _with_identity(dinvsqrt_w @ dinvsqrt_w.mT)
        return (d_sqrt * cholesky_unchecked(k)).expand(self._batch_shape + (n, n))

    @lazy_property
    def covariance_matrix(self) -> Tensor:
        """``W W^T + diag(D)``."""
        n = self._event_shape[0]
        w = self._unbroadcasted_cov_factor
        cov = w @ w.mT + fn.diag_embed(self._unbroadcasted_cov_diag)
        return cov.expand(self._batch_shape + (n, n))

    @lazy_property
    def precision_matrix(self) -> Tensor:
        """``D^-1 - A^T A`` (Woodbury), ``A = C^-1 W^T D^-1``."""
        n = self._event_shape[0]
        w, d = self._unbroadcasted_cov_factor, self._unbroadcasted_cov_diag
        wt_dinv = w.mT / d.unsqueeze(-2)
        a = solve_triangular(self._capacitance_tril, wt_dinv, upper=False)
        precision = fn.diag_embed(d.reciprocal()) - a.mT @ a
        return precision.expand(self._batch_shape + (n, n))

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        shape = self._extended_shape(sample_shape)
        eps_w = standard_normal(shape[:-1] + self.cov_factor.shape[-1:], self.loc)
        eps_d = standard_normal(shape, self.loc)
        return (
            self.loc
            + batch_mv(self._unbroadcasted_cov_factor, eps_w)
            + self._unbroadcasted_cov_diag.sqrt() * eps_d
        )

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        w, d = self._unbroadcasted_cov_factor, self._unbroadcasted_cov_diag
        m = lowrank_mahalanobis(w, d, value - self.loc, self._capacitance_tril)
        log_det = lowrank_logdet(w, d, self._capacitance_tril)
        return -0.5 * (self._event_shape[0] * math.log(2 * math.pi) + log_det + m)

    def entropy(self) -> Tensor:
        w, d = self._unbroadcasted_cov_factor, self._unbroadcasted_cov_diag
        log_det = lowrank_logdet(w, d, self._capacitance_tril)
        h = 0.5 * (self._event_shape[0] * (1.0 + math.log(2 * math.pi)) + log_det)
        return h.expand(self._batch_shape) if len(self._batch_shape) else h


__all__ = ["LowRankMultivariateNormal"]
