"""Matrix constraints of ``torch.distributions.constraints``: ``lower_cholesky`` and
``positive_definite`` (public through ``dtrain.distributions.constraints``)."""

from __future__ import annotations

from dtrain._tensor.distributions.constraints import Constraint
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module


class _LowerCholesky(Constraint):
    """Lower-triangular square matrices with a positive diagonal."""

    event_dim = 2

    def check(self, value: Tensor) -> Tensor:
        lower = (value.tril() == value).reshape(value.shape[:-2] + (-1,)).all(-1)
        return lower & (value.diagonal(dim1=-2, dim2=-1) > 0).all(-1)


class _PositiveDefinite(Constraint):
    """Symmetric positive-definite matrices (the smallest eigenvalue above 0)."""

    event_dim = 2

    def check(self, value: Tensor) -> Tensor:
        array = value.detach()._array
        xp = get_array_module(array)
        symmetric = xp.isclose(array, xp.swapaxes(array, -1, -2), atol=1e-6)
        symmetric = symmetric.reshape(array.shape[:-2] + (-1,)).all(-1)
        finite = xp.isfinite(array).reshape(array.shape[:-2] + (-1,)).all(-1)
        safe = xp.where(finite[..., None, None], array, 0)
        smallest = xp.linalg.eigvalsh(safe)[..., 0]
        return wrap(symmetric & finite & (smallest > 0))


lower_cholesky = _LowerCholesky()
positive_definite = _PositiveDefinite()

__all__ = ["lower_cholesky", "positive_definite"]
