"""``spectral_norm`` / ``remove_spectral_norm`` (the hook-based form, as PyTorch's
``nn.utils.spectral_norm``): a weight divided by its largest singular value, estimated by
power iteration before every forward (Miyato et al., 2018).

The parameter ``name`` becomes ``name_orig``, with the power-iteration vectors in the buffers
``name_u`` and ``name_v`` (PyTorch's state-dict keys); ``module.name`` is a plain tensor,
``W / σ(W)``, differentiable with respect to ``name_orig``. In training mode each forward
first runs ``n_power_iterations`` steps, updating ``u`` and ``v`` in place; in eval mode they
are used as they are.
"""

from __future__ import annotations

from typing import Any

from dtrain._tensor.autograd.grad_mode import no_grad
from dtrain._tensor.nn.functional.distance import normalize
from dtrain._tensor.nn.module import Module
from dtrain._tensor.nn.modules.conv_transpose import _ConvTransposeNd
from dtrain._tensor.parameter import Parameter
from dtrain._tensor.tensor import Tensor


def weight_to_matrix(weight: Tensor, dim: int) -> Tensor:
    """``weight`` as a matrix whose rows run along ``dim`` (the output dim)."""
    if dim != 0:
        weight = weight.permute(dim, *(d for d in range(weight.ndim) if d != dim))
    return weight.reshape(weight.shape[0], -1)


def default_dim(module: Module) -> int:
    """The output dim of ``module``'s weight: 1 for a transposed convolution, else 0."""
    return 1 if isinstance(module, _ConvTransposeNd) else 0


def random_unit(like: Tensor, n: int, eps: float) -> Tensor:
    """A random unit vector of length ``n`` with ``like``'s dtype and device."""
    with no_grad():
        return normalize(like.new_empty(n).normal_(0, 1), dim=0, eps=eps)


def check_iterations(n_power_iterations: int) -> None:
    if n_power_iterations <= 0:
        raise ValueError(
            f"spectral_norm: n_power_iterations must be positive, got {n_power_iterations}"
        )


class _SpectralNormHook:
    """The forward pre-hook: ``module.name = W / σ(W)``."""

    def __init__(self, name: str, n_power_iterations: int, dim: int, eps: float) -> None:
        self.name, self.n_power_iterations, self.dim, self.eps = name, n_power_iterations, dim, eps
        self.handle: Any = None

    def compute_weight(self, module: Module, do_power_iteration: bool) -> Tensor:
        weight = getattr(module, self.name + "_orig")
        u = getattr(module, self.name + "_u")
        v = getattr(module, self.name + "_v")
        weight_mat = weight_to_matrix(weight, self.dim)
        if do_power_iteration:
            with no_grad():
                for _ in range(self.n_power_iterations):
                    # PyTorch's order (v first) and in-place updates of the buffers.
                    v.copy_(normalize(weight_mat.mT @ u, dim=0, eps=self.eps))
                    u.copy_(normalize(weight_mat @ v, dim=0, eps=self.eps))
                # Copies for the graph: the next step's in-place update must not reach it.
                u, v = u.clone(), v.clone()
        sigma = (u * (weight_mat @ v)).sum()
        return weight / sigma

    def __call__(self, module: Module, inputs: Any) -> None:
        setattr(module, self.name, self.compute_weight(module, module.training))


def _hooks(module: Module) -> dict:
    hooks = module.__dict__.get("_spectral_norm_hooks")
    if hooks is None:
        hooks = {}
        object.__setattr__(module, "_spectral_norm_hooks", hooks)
    return hooks


def spectral_norm(
    module: Module,
    name: str = "weight",
    n_power_iterations: int = 1,
    eps: float = 1e-12,
    dim: int | None = None,
) -> Module:
    """Divide ``module``'s parameter ``name`` by its spectral norm before every forward.

    Args:
        module: the module holding the parameter.
        name: the parameter's name.
        n_power_iterations: power-iteration steps per training-mode forward.
        eps: the floor of the norms in the iteration's normalisations.
        dim: the output dim (None: 1 for ConvTranspose, else 0).

    Returns:
        ``module``.

    Raises:
        RuntimeError: ``name`` already has a spectral norm.
        ValueError: ``name`` is not a parameter of ``module``, or n_power_iterations <= 0.
    """
    hooks = _hooks(module)
    if name in hooks:
        raise RuntimeError(f"spectral_norm: {name!r} of {type(module).__name__} already has one")
    check_iterations(n_power_iterations)
    weight = module._parameters.get(name)
    if weight is None:
        raise ValueError(
            f"spectral_norm: {type(module).__name__} has no parameter {name!r}; pass the name "
            "of one of its parameters"
        )
    dim = default_dim(module) if dim is None else dim
    if not -weight.ndim <= dim < weight.ndim:
        raise ValueError(f"spectral_norm: dim {dim} is out of range for {weight.ndim}-D {name!r}")
    hook = _SpectralNormHook(name, n_power_iterations, dim % weight.ndim, eps)
    height, width = weight_to_matrix(weight.detach(), hook.dim).shape
    del module._parameters[name]
    module.register_parameter(name + "_orig", weight)
    setattr(module, name, weight.detach())  # a plain attribute until the first forward
    module.register_buffer(name + "_u", random_unit(weight, height, eps))
    module.register_buffer(name + "_v", random_unit(weight, width, eps))
    hook.handle = module.register_forward_pre_hook(hook)
    hooks[name] = hook
    return module


def remove_spectral_norm(module: Module, name: str = "weight") -> Module:
    """Undo ``spectral_norm``: ``name`` is one parameter again, holding ``W / σ(W)`` with the
    current ``u`` and ``v`` (no further power iteration).

    Raises:
        ValueError: ``name`` of ``module`` has no spectral norm.
    """
    hook = _hooks(module).pop(name, None)
    if hook is None:
        raise ValueError(f"remove_spectral_norm: spectral_norm of {name!r} not found in {module}")
    hook.handle.remove()
    with no_grad():
        weight = hook.compute_weight(module, do_power_iteration=False).detach()
    delattr(module, name)
    for suffix in ("_u", "_v", "_orig"):
        delattr(module, name + suffix)
    module.register_parameter(name, Parameter(weight))
    return module


__all__ = ["remove_spectral_norm", "spectral_norm"]
