"""``SGD``: stochastic gradient descent with momentum, dampening, Nesterov and weight decay."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dtrain._tensor.optim.optimizer import (
    Optimizer,
    Scratch,
    bump_versions,
    check_lr,
    copy_array,
    grads_and_states,
    scalar,
)
from dtrain._tensor.optim.sgd_plan import SGDPlan
from dtrain._tensor.optim.step_plan import plan_step
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module
from dtrain.runtime.kernels import multi_tensor
from dtrain.runtime.kernels.sgd import sgd_multi_tensor


class SGD(Optimizer):
    """Stochastic gradient descent, as ``torch.optim.SGD``.

    Per parameter, with ``g`` its gradient (negated when ``maximize``)::

        g = g + weight_decay * p
        b = g (first step)  or  b = momentum * b + (1 - dampening) * g
        g = g + momentum * b (nesterov)  or  g = b
        p = p - lr * g

    (the momentum lines only when ``momentum != 0``).

    Args:
        params: tensors or param-group dicts (see ``Optimizer``).
        lr: learning rate: a float, or a one-element tensor read at each step.
        momentum: momentum factor.
        dampening: dampening of the momentum.
        weight_decay: L2 penalty.
        nesterov: use Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
        maximize: maximise the objective instead of minimising it.
        foreach: accepted for PyTorch compatibility; dtrain picks the update path itself.
        fused: accepted for PyTorch compatibility; dtrain picks the update path itself.

    Raises:
        ValueError: a hyperparameter is out of range.
    """

    _per_element_state = ("momentum_buffer",)

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        check_lr(lr)
        if not momentum >= 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}; momentum must be >= 0")
        if not weight_decay >= 0.0:
            raise ValueError(
                f"Invalid weight_decay value: {weight_decay}; weight_decay must be >= 0"
            )
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(
                "Nesterov momentum requires a momentum and zero dampening, got "
                f"momentum={momentum} and dampening={dampening}"
            )
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
            "foreach": foreach,
            "fused": fused,
        }
        super().__init__(params, defaults)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient; returns ``closure()``'s loss."""
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            left = plan_step(self, group, SGDPlan)  # None: the kernel took the group's step
            if not left:
                continue  # stepped by its plan, or no gradients
            params, grads, states = grads_and_states(self, group, _no_init, left)
            momentum = group["momentum"]
            buffers = [None] * len(params)
            if momentum != 0:
                for i, state in enumerate(states):
                    buffer = state.get("momentum_buffer")
                    if buffer is not None:
                        buffers[i] = buffer._array
                        buffer._version[0] += 1
            sgd_update(
                [p._array for p in params],
                grads,
                buffers,
                lr=scalar(group["lr"]),
                momentum=momentum,
                dampening=group["dampening"],
                weight_decay=group["weight_decay"],
                nesterov=group["nesterov"],
                maximize=group["maximize"],
                scratch=self._scratch,
                keys=params,
            )
            if momentum != 0:
                for state, buffer in zip(states, buffers):
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = wrap(buffer)
            bump_versions(params)
        self._scratch.checks.sweep()  # let go of the arrays of parameters not stepped
        return loss


def _no_init(state: dict[str, Any], param: Any) -> None:
    """SGD keeps no state until its first momentum step."""


def _sgd_fused(
    params: list[Any],
    grads: list[Any],
    momentum_buffers: list[Any],
    checks: multi_tensor.PersistentChecks,
    keys: list[Any],
    **options: Any,
) -> set[int]:
    """Update the parameters the multi-tensor kernel takes (cupy, contiguous, one dtype per
    launch), one launch per (dtype, device, first momentum step or not); return their
    indices. New momentum buffers are allocated here and stored in ``momentum_buffers``.
    ``keys``: one per parameter, under which ``checks`` remembers its persistent arrays."""
    use_buffers = options["momentum"] != 0
    fusable = [
        i
        for i, p in enumerate(params)
        if checks.fusable(keys[i], (p, momentum_buffers[i] if use_buffers else None), grads[i])
    ]
    fusable = multi_tensor.once_each(fusable, params)  # a parameter listed twice
    for same_array in multi_tensor.grouped(fusable, params).values():
        first = [i for i in same_array if use_buffers and momentum_buffers[i] is None]
        later = [i for i in same_array if not (use_buffers and momentum_buffers[i] is None)]
        for i in first:
            with params[i].device:
                momentum_buffers[i] = get_array_module(params[i]).empty_like(params[i])
        for idx, is_first in ((first, True), (later, False)):
            if idx:
                sgd_multi_tensor(
                    [params[i] for i in idx],
                    [grads[i] for i in idx],
                    [momentum_buffers[i] for i in idx] if use_buffers else None,
                    first=is_first,
                    checked=True,  # picked with fusable and grouped by dtype and device above
                    **options,
                )
    return set(fusable)


def sgd_update(
    params: list[Any],
    grads: list[Any],
    momentum_buffers: list[Any],
    *,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
    scratch: Scratch,
    keys: list[Any] | None = None,
) -> None:
    """One SGD step on raw arrays, in place.

    ``momentum_buffers[i]`` is None before a parameter's first momentum step; it is then set
    to a new array (a copy of the gradient), as PyTorch does. cupy parameters go to the
    multi-tensor kernel (``dtrain.runtime.kernels.sgd``), the rest through xp below.
    ``keys``: one per parameter (the optimizer's parameter tensors), under which ``scratch``
    remembers the arrays it has checked; without them nothing is remembered.
    """
    checks = scratch.checks if keys is not None else multi_tensor.PersistentChecks()
    fused = _sgd_fused(
        params,
        grads,
        momentum_buffers,
        checks,
        range(len(params)) if keys is None else keys,
        lr=lr,
        momentum=momentum,
        dampening=dampening,
        weight_decay=weight_decay,
        nesterov=nesterov,
        maximize=maximize,
    )
    for i, p in enumerate(params):
        if i in fused:
            continue
        xp = get_array_module(p)
        g = grads[i]
        if weight_decay != 0:
            work = scratch.get(p, 0)
            xp.multiply(p, weight_decay, out=work)
            if maximize:
                xp.subtract(work, g, out=work)
            else:
                xp.add(work, g, out=work)
            g = work
        elif maximize:
            g = xp.negative(g, out=scratch.get(p, 0))
        if momentum != 0:
            buffer = momentum_buffers[i]
            if buffer is None:
                buffer = momentum_buffers[i] = copy_array(g)
            else:
                buffer *= momentum
                if dampening == 0:
                    buffer += g
                else:
                    damped = scratch.get(p, 1)
                    xp.multiply(g, 1 - dampening, out=damped)
                    buffer += damped
            if nesterov:
                step = scratch.get(p, 1)
                xp.multiply(buffer, momentum, out=step)
                step += g
                g = step
            else:
                g = buffer
        step = scratch.get(p, 1)
        xp.multiply(g, lr, out=step)
        p -= step
