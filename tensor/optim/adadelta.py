"""``Adadelta``: steps scaled by the ratio of running RMS of past updates and gradients."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dtrain._tensor.optim._updates import decay_add_square_, effective_grad
from dtrain._tensor.optim.optimizer import (
    Optimizer,
    Scratch,
    bump_versions,
    check_lr,
    grads_and_states,
    scalar,
    zeros_like,
)
from dtrain._tensor.optim.rmsprop import refuse_unsupported
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module


def _init_state(state: dict[str, Any], param: Any) -> None:
    state["step"] = 0
    state["square_avg"] = wrap(zeros_like(param))
    state["acc_delta"] = wrap(zeros_like(param))


class Adadelta(Optimizer):
    """Adadelta, as ``torch.optim.Adadelta`` (``lr=1.0`` by default).

    Per parameter, with ``g`` its gradient (negated when ``maximize``)::

        g = g + weight_decay * p
        v = rho * v + (1 - rho) * g * g
        d = sqrt(u + eps) / sqrt(v + eps) * g
        u = rho * u + (1 - rho) * d * d
        p = p - lr * d

    Args:
        params: tensors or param-group dicts (see ``Optimizer``).
        lr: scales the update: a float, or a one-element tensor read at each step.
        rho: decay of the running averages, in [0, 1].
        eps: added inside the square roots for numerical stability.
        weight_decay: L2 penalty.
        foreach: accepted for PyTorch compatibility; dtrain picks the update path itself.
        capturable: only False (PyTorch's CUDA-graph option is not implemented here).
        maximize: maximise the objective instead of minimising it.
        differentiable: only False.

    Raises:
        ValueError: a hyperparameter is out of range, or an unsupported option is on.
    """

    _per_element_state = ("square_avg", "acc_delta")

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0,
        foreach: bool | None = None,
        *,
        capturable: bool = False,
        maximize: bool = False,
        differentiable: bool = False,
    ) -> None:
        check_lr(lr)
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"Invalid rho value: {rho}; rho must be in [0, 1]")
        if not eps >= 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}; eps must be >= 0")
        if not weight_decay >= 0.0:
            raise ValueError(
                f"Invalid weight_decay value: {weight_decay}; weight_decay must be >= 0"
            )
        refuse_unsupported("Adadelta", capturable=capturable, differentiable=differentiable)
        defaults = {
            "lr": lr,
            "rho": rho,
            "eps": eps,
            "weight_decay": weight_decay,
            "maximize": maximize,
            "capturable": capturable,
            "foreach": foreach,
            "differentiable": differentiable,
        }
        super().__init__(params, defaults)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient; returns ``closure()``'s loss."""
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            params, grads, states = grads_and_states(self, group, _init_state)
            if not params:
                continue
            square_avgs, acc_deltas = [], []
            for state in states:
                state["step"] += 1
                square_avgs.append(state["square_avg"]._array)
                acc_deltas.append(state["acc_delta"]._array)
                bump_versions([state["square_avg"], state["acc_delta"]])
            adadelta_update(
                [p._array for p in params],
                grads,
                square_avgs,
                acc_deltas,
                lr=scalar(group["lr"]),
                rho=group["rho"],
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                maximize=group["maximize"],
                scratch=self._scratch,
            )
            bump_versions(params)
        return loss


def adadelta_update(
    params: list[Any],
    grads: list[Any],
    square_avgs: list[Any],
    acc_deltas: list[Any],
    *,
    lr: float,
    rho: float,
    eps: float,
    weight_decay: float,
    maximize: bool,
    scratch: Scratch,
) -> None:
    """One Adadelta step on raw arrays (numpy or cupy), in place."""
    for i, p in enumerate(params):
        xp = get_array_module(p)
        g = effective_grad(xp, p, grads[i], weight_decay, maximize, scratch)
        tmp = scratch.get(p, 1)
        decay_add_square_(xp, square_avgs[i], g, rho, tmp)
        std = scratch.get(p, 2)
        xp.add(square_avgs[i], eps, out=std)
        xp.sqrt(std, out=std)
        delta = scratch.get(p, 3)
        xp.add(acc_deltas[i], eps, out=delta)
        xp.sqrt(delta, out=delta)
        delta /= std
        delta *= g
        decay_add_square_(xp, acc_deltas[i], delta, rho, tmp)
        xp.multiply(delta, lr, out=tmp)
        p -= tmp
