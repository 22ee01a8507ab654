"""``RMSprop``: gradients divided by a running root mean square, with optional momentum and
centering."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dtrain._tensor.optim._updates import decay_add_square_, effective_grad, lerp_
from dtrain._tensor.optim.optimizer import (
    Optimizer,
    Scratch,
    bump_versions,
    check_lr,
    grads_and_states,
    scalar,
    zeros_like,
)
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module


def refuse_unsupported(name: str, **flags: bool) -> None:
    """Raise for PyTorch options dtrain does not implement, when they are switched on."""
    for flag, value in flags.items():
        if value:
            raise ValueError(
                f"{name}: {flag}=True is not supported by dtrain; leave it False (CUDA "
                "graph capture of a step is available with Adam/AdamW(capturable=True))"
            )


class RMSprop(Optimizer):
    """RMSprop, as ``torch.optim.RMSprop``.

    Per parameter, with ``g`` its gradient (negated when ``maximize``)::

        g = g + weight_decay * p
        v = alpha * v + (1 - alpha) * g * g
        avg = sqrt(v - m * m) + eps, with m = lerp(m, g, 1 - alpha)   (centered)
        avg = sqrt(v) + eps                                            (otherwise)
        b = momentum * b + g / avg;  p = p - lr * b                    (momentum > 0)
        p = p - lr * g / avg                                           (otherwise)

    Args:
        params: tensors or param-group dicts (see ``Optimizer``).
        lr: learning rate: a float, or a one-element tensor read at each step.
        alpha: smoothing constant of the squared-gradient average.
        eps: added to the denominator for numerical stability.
        weight_decay: L2 penalty.
        momentum: momentum factor.
        centered: normalise by an estimate of the gradient's variance.
        capturable: only False (PyTorch's CUDA-graph option is not implemented here).
        foreach: accepted for PyTorch compatibility; dtrain picks the update path itself.
        maximize: maximise the objective instead of minimising it.
        differentiable: only False.

    Raises:
        ValueError: a hyperparameter is out of range, or an unsupported option is on.
    """

    _per_element_state = ("square_avg", "momentum_buffer", "grad_avg")

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
    ) -> None:
        check_lr(lr)
        if not eps >= 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}; eps must be >= 0")
        if not momentum >= 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}; momentum must be >= 0")
        if not weight_decay >= 0.0:
            raise ValueError(
                f"Invalid weight_decay value: {weight_decay}; weight_decay must be >= 0"
            )
        if not alpha >= 0.0:
            raise ValueError(f"Invalid alpha value: {alpha}; alpha must be >= 0")
        refuse_unsupported("RMSprop", capturable=capturable, differentiable=differentiable)
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "alpha": alpha,
            "eps": eps,
            "centered": centered,
            "weight_decay": weight_decay,
            "capturable": capturable,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
        }
        super().__init__(params, defaults)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient; returns ``closure()``'s loss."""
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            momentum, centered = group["momentum"], group["centered"]
            params, grads, states = grads_and_states(self, group, _init_state)
            if not params:
                continue
            square_avgs, grad_avgs, buffers = [], [], []
            for p, state in zip(params, states):
                state["step"] += 1
                tensors = [state["square_avg"]]
                # Made on first use: a group may switch momentum or centering on later.
                if momentum > 0:
                    tensors.append(_state_zeros(state, "momentum_buffer", p._array))
                    buffers.append(tensors[-1]._array)
                if centered:
                    tensors.append(_state_zeros(state, "grad_avg", p._array))
                    grad_avgs.append(tensors[-1]._array)
                square_avgs.append(tensors[0]._array)
                bump_versions(tensors)
            rmsprop_update(
                [p._array for p in params],
                grads,
                square_avgs,
                grad_avgs,
                buffers,
                lr=scalar(group["lr"]),
                alpha=group["alpha"],
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                momentum=momentum,
                centered=centered,
                maximize=group["maximize"],
                scratch=self._scratch,
            )
            bump_versions(params)
        return loss


def _init_state(state: dict[str, Any], param: Any) -> None:
    state["step"] = 0
    state["square_avg"] = wrap(zeros_like(param))


def _state_zeros(state: dict[str, Any], name: str, param: Any) -> Tensor:
    tensor = state.get(name)
    if tensor is None:
        tensor = state[name] = wrap(zeros_like(param))
    return tensor


def rmsprop_update(
    params: list[Any],
    grads: list[Any],
    square_avgs: list[Any],
    grad_avgs: list[Any],
    momentum_buffers: list[Any],
    *,
    lr: float,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    centered: bool,
    maximize: bool,
    scratch: Scratch,
) -> None:
    """One RMSprop step on raw arrays (numpy or cupy), in place. ``grad_avgs`` is used
    when ``centered`` and ``momentum_buffers`` when ``momentum > 0`` (else they may be
    empty)."""
    for i, p in enumerate(params):
        xp = get_array_module(p)
        g = effective_grad(xp, p, grads[i], weight_decay, maximize, scratch)
        tmp = scratch.get(p, 1)
        decay_add_square_(xp, square_avgs[i], g, alpha, tmp)
        avg = scratch.get(p, 2)
        if centered:
            m = grad_avgs[i]
            lerp_(xp, m, g, 1 - alpha, tmp)
            xp.multiply(m, m, out=avg)
            xp.subtract(square_avgs[i], avg, out=avg)
            xp.sqrt(avg, out=avg)
        else:
            xp.sqrt(square_avgs[i], out=avg)
        avg += eps
        xp.divide(g, avg, out=tmp)
        if momentum > 0:
            buffer = momentum_buffers[i]
            buffer *= momentum
            buffer += tmp
            xp.multiply(buffer, lr, out=tmp)
        else:
            tmp *= lr
        p -= tmp
