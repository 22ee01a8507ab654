"""``NAdam``, ``RAdam`` and ``Adamax``: Adam's relatives, with PyTorch's formulas and state
layout (``step``, ``exp_avg``, ``exp_avg_sq`` / ``exp_inf``, NAdam's ``mu_product``, a 0-d
float32 CPU tensor as in PyTorch), so state dicts load in either library."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from dtrain._tensor.optim._updates import decay_add_square_, effective_grad, lerp_
from dtrain._tensor.optim.optimizer import (
    Optimizer,
    bump_versions,
    check_lr,
    grads_and_states,
    scalar,
    zeros_like,
)
from dtrain._tensor.optim.rmsprop import refuse_unsupported
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module


def _check(name: str, eps: float, betas: tuple[float, float], weight_decay: float) -> None:
    if not eps >= 0.0:
        raise ValueError(f"{name}: invalid epsilon value: {eps}; eps must be >= 0")
    if len(betas) != 2:
        raise ValueError(f"{name}: invalid betas: {betas}; give two values (beta1, beta2)")
    for i, beta in enumerate(betas):
        if not 0.0 <= beta < 1.0:
            raise ValueError(
                f"{name}: invalid beta parameter at index {i}: {beta}; betas must be in [0, 1)"
            )
    if not weight_decay >= 0.0:
        raise ValueError(
            f"{name}: invalid weight_decay value: {weight_decay}; weight_decay must be >= 0"
        )


class _AdamFamily(Optimizer):
    """The loop the three share: per parameter with a gradient, bump ``step`` and call
    ``self._update(p, g, state, group, lr)`` on the raw arrays."""

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient; returns ``closure()``'s loss."""
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            params, grads, states = grads_and_states(self, group, self._init_state)
            if not params:
                continue
            lr = scalar(group["lr"])  # once per group: a host read for a CUDA tensor lr
            for p, g, state in zip(params, grads, states, strict=True):
                state["step"] += 1
                self._update(p._array, g, state, group, lr)
                bump_versions([state[k] for k in self._per_element_state if k in state])
            bump_versions(params)
        return loss

    def _init_state(self, state: dict[str, Any], param: Any) -> None:
        state["step"] = 0
        for name in self._per_element_state:
            state[name] = wrap(zeros_like(param))

    def _update(
        self, p: Any, g: Any, state: dict[str, Any], group: dict[str, Any], lr: float
    ) -> None:
        raise NotImplementedError

    def _grad(self, xp: Any, p: Any, g: Any, group: dict[str, Any], lr: float) -> Any:
        """The gradient after weight decay (L2, or decoupled: ``p *= 1 - lr * wd`` first)."""
        wd = group["weight_decay"]
        if wd != 0 and group.get("decoupled_weight_decay", False):
            p *= 1 - lr * wd
            wd = 0
        return effective_grad(xp, p, g, wd, group["maximize"], self._scratch)


class NAdam(_AdamFamily):
    """NAdam (Adam with Nesterov momentum), as ``torch.optim.NAdam``.

    Per parameter at step ``t`` (``mu_t = beta1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))``,
    ``P_t`` the product ``mu_1 … mu_t``)::

        m = lerp(m, g, 1 - beta1)         v = beta2 * v + (1 - beta2) * g * g
        d = sqrt(v / (1 - beta2**t)) + eps
        p = p - lr * (1 - mu_t) / (1 - P_t) * g / d - lr * mu_{t+1} / (1 - P_t * mu_{t+1}) * m / d

    Args:
        params: tensors or param-group dicts (see ``Optimizer``).
        lr: learning rate (2e-3): a float, or a one-element tensor read at each step.
        betas: decay rates of the first and second moment averages.
        eps: added to the denominator.
        weight_decay: L2 penalty (decoupled with ``decoupled_weight_decay``, NAdamW).
        momentum_decay: the ``psi`` of the momentum schedule (4e-3).
        decoupled_weight_decay: decay the parameters directly, as AdamW does.
        foreach: accepted for PyTorch compatibility; dtrain picks the update path itself.
        maximize: maximise the objective instead of minimising it.
        capturable, differentiable: only False.

    Raises:
        ValueError: a hyperparameter is out of range, or an unsupported option is on.
    """

    _per_element_state = ("exp_avg", "exp_avg_sq")

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum_decay: float = 4e-3,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
    ) -> None:
        check_lr(lr)
        _check("NAdam", eps, betas, weight_decay)
        if not momentum_decay >= 0.0:
            raise ValueError(
                f"NAdam: invalid momentum_decay value: {momentum_decay}; it must be >= 0"
            )
        refuse_unsupported("NAdam", capturable=capturable, differentiable=differentiable)
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "momentum_decay": momentum_decay,
            "decoupled_weight_decay": decoupled_weight_decay,
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
            "differentiable": differentiable,
        }
        super().__init__(params, defaults)

    def _init_state(self, state: dict[str, Any], param: Any) -> None:
        super()._init_state(state, param)
        state["mu_product"] = _mu_product(1.0)

    def _cast_state(self, param: Tensor, index: Any, name: str, value: Any) -> Any:
        # PyTorch's layout whatever was saved: a float32 0-d tensor on the CPU (not cast to
        # the parameter's dtype or device); a Python float from an older dtrain is accepted.
        if name == "mu_product":
            return _mu_product(float(value.item() if hasattr(value, "item") else value))
        return super()._cast_state(param, index, name, value)

    def _update(
        self, p: Any, g: Any, state: dict[str, Any], group: dict[str, Any], lr: float
    ) -> None:
        xp = get_array_module(p)
        beta1, beta2 = group["betas"]
        t = state["step"]
        g = self._grad(xp, p, g, group, lr)
        mu = beta1 * (1.0 - 0.5 * 0.96 ** (t * group["momentum_decay"]))
        mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * group["momentum_decay"]))
        product = state["mu_product"]
        product._array *= np.float32(mu)  # in float32, as PyTorch's tensor
        bump_versions([product])
        mu_product = float(product._array)
        m, v = state["exp_avg"]._array, state["exp_avg_sq"]._array
        tmp = self._scratch.get(p, 1)
        lerp_(xp, m, g, 1 - beta1, tmp)
        decay_add_square_(xp, v, g, beta2, tmp)
        denom = self._scratch.get(p, 2)
        xp.divide(v, 1 - beta2**t, out=denom)
        xp.sqrt(denom, out=denom)
        denom += group["eps"]
        xp.divide(g, denom, out=tmp)
        tmp *= -lr * (1.0 - mu) / (1.0 - mu_product)
        p += tmp
        xp.divide(m, denom, out=tmp)
        tmp *= -lr * mu_next / (1.0 - mu_product * mu_next)
        p += tmp


class RAdam(_AdamFamily):
    """RAdam (rectified Adam), as ``torch.optim.RAdam``.

    Per parameter at step ``t`` (``rho_inf = 2 / (1 - beta2) - 1``,
    ``rho_t = rho_inf - 2 t beta2**t / (1 - beta2**t)``)::

        m = lerp(m, g, 1 - beta1)         v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1**t)
        rho_t > 5:  p = p - lr * m_hat * r_t * sqrt(1 - beta2**t) / (sqrt(v) + eps)
        otherwise:  p = p - lr * m_hat
        r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))

    Args:
        params: tensors or param-group dicts (see ``Optimizer``).
        lr: learning rate (1e-3): a float, or a one-element tensor read at each step.
        betas: decay rates of the first and second moment averages.
        eps: added to the denominator.
        weight_decay: L2 penalty (decoupled with ``decoupled_weight_decay``).
        decoupled_weight_decay: decay the parameters directly, as AdamW does.
        foreach: accepted for PyTorch compatibility; dtrain picks the update path itself.
        maximize: maximise the objective instead of minimising it.
        capturable, differentiable: only False.

    Raises:
        ValueError: a hyperparameter is out of range, or an unsupported option is on.
    """

    _per_element_state = ("exp_avg", "exp_avg_sq")

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
    ) -> None:
        check_lr(lr)
        _check("RAdam", eps, betas, weight_decay)
        refuse_unsupported("RAdam", capturable=capturable, differentiable=differentiable)
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "decoupled_weight_decay": decoupled_weight_decay,
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
            "differentiable": differentiable,
        }
        super().__init__(params, defaults)

    def _update(
        self, p: Any, g: Any, state: dict[str, Any], group: dict[str, Any], lr: float
    ) -> None:
        xp = get_array_module(p)
        beta1, beta2 = group["betas"]
        t = state["step"]
        g = self._grad(xp, p, g, group, lr)
        m, v = state["exp_avg"]._array, state["exp_avg_sq"]._array
        tmp = self._scratch.get(p, 1)
        lerp_(xp, m, g, 1 - beta1, tmp)
        decay_add_square_(xp, v, g, beta2, tmp)
        bias_correction1 = 1 - beta1**t
        bias_correction2 = 1 - beta2**t
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 * t * (beta2**t) / bias_correction2
        xp.divide(m, bias_correction1, out=tmp)  # m_hat
        tmp *= lr
        if rho_t > 5.0:
            rect = math.sqrt(
                (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
            )
            adaptive = self._scratch.get(p, 2)
            xp.sqrt(v, out=adaptive)
            adaptive += group["eps"]
            xp.divide(bias_correction2**0.5, adaptive, out=adaptive)
            tmp *= adaptive
            tmp *= rect
        p -= tmp


class Adamax(_AdamFamily):
    """Adamax (Adam with the infinity norm), as ``torch.optim.Adamax``.

    Per parameter at step ``t``::

        g = g + weight_decay * p
        m = lerp(m, g, 1 - beta1)         u = max(beta2 * u, |g| + eps)
        p = p - lr / (1 - beta1**t) * m / u

    Args:
        params: tensors or param-group dicts (see ``Optimizer``).
        lr: learning rate (2e-3): a float, or a one-element tensor read at each step.
        betas: decay rates of the first moment and of the infinity norm.
        eps: added to ``|g|``.
        weight_decay: L2 penalty.
        foreach: accepted for PyTorch compatibility; dtrain picks the update path itself.
        maximize: maximise the objective instead of minimising it.
        capturable, differentiable: only False.

    Raises:
        ValueError: a hyperparameter is out of range, or an unsupported option is on.
    """

    _per_element_state = ("exp_avg", "exp_inf")

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        capturable: bool = False,
    ) -> None:
        check_lr(lr)
        _check("Adamax", eps, betas, weight_decay)
        refuse_unsupported("Adamax", capturable=capturable, differentiable=differentiable)
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
            "capturable": capturable,
        }
        super().__init__(params, defaults)

    def _update(
        self, p: Any, g: Any, state: dict[str, Any], group: dict[str, Any], lr: float
    ) -> None:
        xp = get_array_module(p)
        beta1, beta2 = group["betas"]
        g = self._grad(xp, p, g, group, lr)
        m, u = state["exp_avg"]._array, state["exp_inf"]._array
        tmp = self._scratch.get(p, 1)
        lerp_(xp, m, g, 1 - beta1, tmp)
        u *= beta2
        xp.abs(g, out=tmp)
        tmp += group["eps"]
        xp.maximum(u, tmp, out=u)
        clr = lr / (1 - beta1 ** state["step"])
        xp.divide(m, u, out=tmp)
        tmp *= -clr
        p += tmp


def _mu_product(value: float) -> Tensor:
    """NAdam's running product of the momentum coefficients, held as PyTorch holds it."""
    return wrap(np.array(value, dtype=np.float32))


__all__ = ["Adamax", "NAdam", "RAdam"]
