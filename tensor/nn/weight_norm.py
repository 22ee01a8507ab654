"""``weight_norm`` / ``remove_weight_norm``: a weight split into magnitude ``g`` and
direction ``v`` (Salimans & Kingma), recomputed before every forward by a pre-hook.

As PyTorch's ``nn.utils.weight_norm``: the parameter ``name`` is replaced by ``name_g`` and
``name_v`` (state-dict keys included) and ``module.name`` becomes a plain tensor,
``v · g / ‖v‖``, differentiable with respect to both.
"""

from __future__ import annotations

from typing import Any

from dtrain._tensor.autograd.grad_mode import no_grad
from dtrain._tensor.nn.module import Module
from dtrain._tensor.parameter import Parameter
from dtrain._tensor.tensor import Tensor


def norm_except_dim(v: Tensor, dim: int | None) -> Tensor:
    """The 2-norm of ``v`` over every dim but ``dim``, kept as size-1 dims; for None, over
    the whole tensor, a 0-d tensor (PyTorch's ``weight_g`` shape then)."""
    if dim is None:
        return (v * v).sum().sqrt()
    axes = tuple(a for a in range(v.ndim) if a != dim)
    return (v * v).sum(axes, keepdim=True).sqrt()


def weight_norm_dim(dim: int | None, weight: Tensor, name: str, where: str) -> int | None:
    """``dim`` in ``[0, ndim)``, or None for the whole tensor (also for -1, as PyTorch: not
    the last dim)."""
    if dim is None or dim == -1:
        return None
    if not -weight.ndim <= dim < weight.ndim:
        raise ValueError(
            f"{where}: dim {dim} is out of range for {weight.ndim}-D {name!r}; use one in "
            f"[{-weight.ndim}, {weight.ndim - 1}] or None for the whole tensor"
        )
    return dim % weight.ndim


class _WeightNorm:
    """The forward pre-hook: ``module.name = v · g / ‖v‖``."""

    def __init__(self, name: str, dim: int | None) -> None:
        self.name, self.dim = name, dim
        self.handle: Any = None

    def compute_weight(self, module: Module) -> Tensor:
        g = getattr(module, self.name + "_g")
        v = getattr(module, self.name + "_v")
        return v * (g / norm_except_dim(v, self.dim))

    def __call__(self, module: Module, inputs: Any) -> None:
        setattr(module, self.name, self.compute_weight(module))


def _hooks(module: Module) -> dict:
    hooks = module.__dict__.get("_weight_norm_hooks")
    if hooks is None:
        hooks = {}
        object.__setattr__(module, "_weight_norm_hooks", hooks)
    return hooks


def weight_norm(module: Module, name: str = "weight", dim: int | None = 0) -> Module:
    """Reparameterise ``module``'s parameter ``name`` as ``g · v / ‖v‖``; the norm is over
    every dim but ``dim`` (``None`` or -1, as PyTorch: over the whole tensor, and ``g`` is
    0-d). Returns ``module``.

    Raises:
        ValueError: ``name`` is not a parameter of ``module``, or is already normalised.
    """
    hooks = _hooks(module)
    if name in hooks:
        raise ValueError(f"weight_norm: {name!r} of {type(module).__name__} is already normalised")
    weight = module._parameters.get(name)
    if weight is None:
        raise ValueError(
            f"weight_norm: {type(module).__name__} has no parameter {name!r}; pass the name of "
            "one of its parameters"
        )
    dim = weight_norm_dim(dim, weight, name, "weight_norm")
    hook = _WeightNorm(name, dim)
    del module._parameters[name]
    with no_grad():
        g = norm_except_dim(weight.detach(), dim)
    module.register_parameter(name + "_g", Parameter(g))
    module.register_parameter(name + "_v", Parameter(weight.detach()))
    setattr(module, name, hook.compute_weight(module))
    hook.handle = module.register_forward_pre_hook(hook)
    hooks[name] = hook
    return module


def remove_weight_norm(module: Module, name: str = "weight") -> Module:
    """Undo ``weight_norm``: ``name`` is one parameter again, holding ``g · v / ‖v‖``.

    Raises:
        ValueError: ``name`` of ``module`` is not weight-normalised.
    """
    hook = _hooks(module).pop(name, None)
    if hook is None:
        raise ValueError(f"remove_weight_norm: weight_norm of {name!r} not found in {module}")
    hook.handle.remove()
    with no_grad():
        weight = hook.compute_weight(module).detach()
    delattr(module, name)
    del module._parameters[name + "_g"]
    del module._parameters[name + "_v"]
    module.register_parameter(name, Parameter(weight))
    return module


__all__ = ["remove_weight_norm", "weight_norm"]
