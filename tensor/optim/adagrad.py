"""``Adagrad``: per-element learning rates from the sum of all past squared gradients."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dtrain._tensor.optim._updates import effective_grad
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
from dtrain._tensor.parameter import is_lazy
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module


class Adagrad(Optimizer):
    """Adagrad, as ``torch.optim.Adagrad``.

    Per parameter, at step ``t``, with ``g`` its gradient (negated when ``maximize``)::

        g = g + weight_decay * p
        s = s + g * g                   (s starts at initial_accumulator_value)
        p = p - lr / (1 + (t - 1) * lr_decay) * g / (sqrt(s) + eps)

    As in PyTorch, every parameter's state (``step`` 0 and ``sum``) is made when the
    optimizer is built (for a group added later, at its first step).

    Args:
        params: tensors or param-group dicts (see ``Optimizer``).
        lr: learning rate: a float, or a one-element tensor read at each step.
        lr_decay: learning-rate decay per step.
        weight_decay: L2 penalty.
        initial_accumulator_value: the starting value of the squared-gradient sum.
        eps: added to the denominator for numerical stability.
        foreach: accepted for PyTorch compatibility; dtrain picks the update path itself.
        maximize: maximise the objective instead of minimising it.
        differentiable: only False.
        fused: accepted for PyTorch compatibility; dtrain picks the update path itself.

    Raises:
        ValueError: a hyperparameter is out of range, or an unsupported option is on.
    """

    _per_element_state = ("sum",)

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        check_lr(lr)
        if not lr_decay >= 0.0:
            raise ValueError(f"Invalid lr_decay value: {lr_decay}; lr_decay must be >= 0")
        if not weight_decay >= 0.0:
            raise ValueError(
                f"Invalid weight_decay value: {weight_decay}; weight_decay must be >= 0"
            )
        if not initial_accumulator_value >= 0.0:
            raise ValueError(
                f"Invalid initial_accumulator_value value: {initial_accumulator_value}; it "
                "must be >= 0"
            )
        if not eps >= 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}; eps must be >= 0")
        refuse_unsupported("Adagrad", differentiable=differentiable)
        defaults = {
            "lr": lr,
            "lr_decay": lr_decay,
            "eps": eps,
            "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
            "fused": fused,
        }
        super().__init__(params, defaults)
        for group in self.param_groups:
            init = _initializer(group)
            for p in group["params"]:
                state = self.state[p]
                if not state and not is_lazy(p):  # a lazy one's state starts at its step
                    init(state, p._array)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient; returns ``closure()``'s loss."""
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            params, grads, states = grads_and_states(self, group, _initializer(group))
            if not params:
                continue
            sums, steps = [], []
            for state in states:
                state["step"] += 1
                steps.append(state["step"])
                sums.append(state["sum"]._array)
                state["sum"]._version[0] += 1
            adagrad_update(
                [p._array for p in params],
                grads,
                sums,
                steps,
                lr=scalar(group["lr"]),
                lr_decay=group["lr_decay"],
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                maximize=group["maximize"],
                scratch=self._scratch,
            )
            bump_versions(params)
        return loss


def _initializer(group: dict[str, Any]) -> Callable[[dict[str, Any], Any], None]:
    value = group["initial_accumulator_value"]

    def init(state: dict[str, Any], param: Any) -> None:
        state["step"] = 0
        array = zeros_like(param)
        array.fill(value)
        state["sum"] = wrap(array)

    return init


def adagrad_update(
    params: list[Any],
    grads: list[Any],
    state_sums: list[Any],
    steps: list[int],
    *,
    lr: float,
    lr_decay: float,
    weight_decay: float,
    eps: float,
    maximize: bool,
    scratch: Scratch,
) -> None:
    """One Adagrad step on raw arrays (numpy or cupy), in place; ``steps`` already count
    this step."""
    for i, p in enumerate(params):
        xp = get_array_module(p)
        g = effective_grad(xp, p, grads[i], weight_decay, maximize, scratch)
        clr = lr / (1 + (steps[i] - 1) * lr_decay)
        tmp = scratch.get(p, 1)
        xp.multiply(g, g, out=tmp)
        state_sums[i] += tmp
        std = scratch.get(p, 2)
        xp.sqrt(state_sums[i], out=std)
        std += eps
        xp.divide(g, std, out=tmp)
        tmp *= clr
        p -= tmp
