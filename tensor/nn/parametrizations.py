"""``weight_norm`` and ``spectral_norm`` as parametrizations (PyTorch's
``torch.nn.utils.parametrizations``), registered through ``register_parametrization``.

State-dict keys are PyTorch's: ``parametrizations.weight.original0`` (``g``) and
``original1`` (``v``) for weight norm; ``parametrizations.weight.original`` and the
power-iteration buffers ``parametrizations.weight.0._u`` / ``_v`` for spectral norm.
``orthogonal`` is not offered (dtrain has no QR factorisation or matrix exponential).
"""

from __future__ import annotations

from dtrain._tensor.autograd.grad_mode import no_grad
from dtrain._tensor.nn.functional.distance import normalize
from dtrain._tensor.nn.module import Module
from dtrain._tensor.nn.parametrize import register_parametrization
from dtrain._tensor.nn.spectral_norm import (
    check_iterations,
    default_dim,
    random_unit,
    weight_to_matrix,
)
from dtrain._tensor.nn.weight_norm import norm_except_dim, weight_norm_dim
from dtrain._tensor.tensor import Tensor


class _WeightNorm(Module):
    """``weight = v · g / ‖v‖``, the norm over every dim but ``dim`` (None: the whole
    tensor); ``right_inverse`` splits a weight into ``(g, v)``."""

    def __init__(self, dim: int | None = 0) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, weight_g: Tensor, weight_v: Tensor) -> Tensor:
        return weight_v * (weight_g / norm_except_dim(weight_v, self.dim))

    def right_inverse(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        return norm_except_dim(weight, self.dim), weight


def weight_norm(module: Module, name: str = "weight", dim: int | None = 0) -> Module:
    """Reparametrise ``module.<name>`` as ``g · v / ‖v‖`` (Salimans & Kingma), with ``g`` in
    ``parametrizations.<name>.original0`` and ``v`` in ``original1``; the norm is over every
    dim but ``dim`` (None or -1: over the whole tensor, and ``g`` is 0-d, as PyTorch).

    Returns:
        ``module``.

    Raises:
        ValueError: ``name`` is not a parameter or buffer of ``module``, or ``dim`` is out of
            range.
    """
    weight = getattr(module, name, None)
    if not isinstance(weight, Tensor):
        raise ValueError(
            f"weight_norm: {type(module).__name__} has no parameter or buffer {name!r}"
        )
    dim = weight_norm_dim(dim, weight, name, "weight_norm")
    register_parametrization(module, name, _WeightNorm(dim), unsafe=True)
    return module


class _SpectralNorm(Module):
    """``weight / σ(weight)``, σ the largest singular value of ``weight`` seen as a matrix
    with rows along ``dim``, estimated by power iteration on the buffers ``_u`` and ``_v``
    (updated in place on every training-mode access). A 1-D weight is divided by its norm."""

    def __init__(
        self, weight: Tensor, n_power_iterations: int = 1, dim: int = 0, eps: float = 1e-12
    ) -> None:
        super().__init__()
        ndim = weight.ndim
        if not -ndim <= dim < ndim:
            raise IndexError(
                f"spectral_norm: dim {dim} is out of range for a {ndim}-D weight; use one in "
                f"[{-ndim}, {ndim - 1}]"
            )
        check_iterations(n_power_iterations)
        self.dim = dim % ndim
        self.eps = eps
        if ndim > 1:
            self.n_power_iterations = n_power_iterations
            with no_grad():
                weight_mat = weight_to_matrix(weight.detach(), self.dim)
            height, width = weight_mat.shape
            self.register_buffer("_u", random_unit(weight, height, eps))
            self.register_buffer("_v", random_unit(weight, width, eps))
            self._power_method(weight_mat, 15)  # as PyTorch: start from a good estimate

    def _power_method(self, weight_mat: Tensor, n_power_iterations: int) -> None:
        with no_grad():
            for _ in range(n_power_iterations):
                # PyTorch's order (u first) and in-place updates of the buffers.
                self._u.copy_(normalize(weight_mat @ self._v, dim=0, eps=self.eps))
                self._v.copy_(normalize(weight_mat.mT @ self._u, dim=0, eps=self.eps))

    def forward(self, weight: Tensor) -> Tensor:
        if weight.ndim == 1:
            return normalize(weight, dim=0, eps=self.eps)
        weight_mat = weight_to_matrix(weight, self.dim)
        if self.training:
            self._power_method(weight_mat, self.n_power_iterations)
        # Copies for the graph: the next access's in-place update must not reach it.
        u, v = self._u.clone(), self._v.clone()
        sigma = (u * (weight_mat @ v)).sum()
        return weight / sigma

    def right_inverse(self, value: Tensor) -> Tensor:
        return value


def spectral_norm(
    module: Module,
    name: str = "weight",
    n_power_iterations: int = 1,
    eps: float = 1e-12,
    dim: int | None = None,
) -> Module:
    """Reparametrise ``module.<name>`` as ``W / σ(W)`` (Miyato et al.), σ estimated by
    ``n_power_iterations`` power-iteration steps on every access in training mode (the
    vectors are kept in ``parametrizations.<name>.0._u`` / ``_v``; eval mode reuses them).

    Args:
        module: the module holding the tensor.
        name: the parameter's or buffer's name.
        n_power_iterations: power-iteration steps per training-mode access.
        eps: the floor of the norms in the iteration's normalisations.
        dim: the output dim (None: 1 for ConvTranspose, else 0).

    Returns:
        ``module``.

    Raises:
        ValueError: ``name`` is not a parameter or buffer, or n_power_iterations <= 0.
        IndexError: ``dim`` is out of range.
    """
    weight = getattr(module, name, None)
    if not isinstance(weight, Tensor):
        raise ValueError(
            f"spectral_norm: {type(module).__name__} has no parameter or buffer {name!r}"
        )
    dim = default_dim(module) if dim is None else dim
    register_parametrization(module, name, _SpectralNorm(weight, n_power_iterations, dim, eps))
    return module


__all__ = ["spectral_norm", "weight_norm"]
