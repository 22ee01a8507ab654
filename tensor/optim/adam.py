"""``Adam`` and ``AdamW``: adaptive moment estimation, with L2 or decoupled weight decay."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dtrain._tensor.optim.optimizer import (
    Optimizer,
    Scratch,
    bump_versions,
    grads_and_states,
    zeros_like,
)
from dtrain._tensor.tensor import wrap
from dtrain.runtime.backend import get_array_module


def _init_state(state: dict[str, Any], param: Any) -> None:
    state["step"] = 0
    state["exp_avg"] = wrap(zeros_like(param))
    state["exp_avg_sq"] = wrap(zeros_like(param))


class Adam(Optimizer):
    """Adam, as ``torch.optim.Adam``.

    Per parameter, at step ``t``, with ``g`` its gradient (negated when ``maximize``)::

        g = g + weight_decay * p          (or, decoupled: p = p * (1 - lr * weight_decay))
        m = lerp(m, g, 1 - beta1)         v = beta2 * v + (1 - beta2) * g * g
        v_max = max(v_max, v)             (amsgrad; then v_max replaces v below)
        p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    Args:
        params: tensors or param-group dicts (see ``Optimizer``).
        lr: learning rate.
        betas: decay rates of the first and second moment averages.
        eps: added to the denominator for numerical stability.
        weight_decay: L2 penalty (or decoupled decay, see ``decoupled_weight_decay``).
        amsgrad: use the maximum of past second moments (AMSGrad).
        maximize: maximise the objective instead of minimising it.
        foreach: accepted for PyTorch compatibility; dtrain picks the update path itself.
        fused: accepted for PyTorch compatibility; dtrain picks the update path itself.
        decoupled_weight_decay: decay the parameters directly, as ``AdamW`` does.

    Raises:
        ValueError: a hyperparameter is out of range.
    """

    _per_element_state = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
    ) -> None:
        if not lr >= 0.0:
            raise ValueError(f"Invalid learning rate: {lr}; lr must be >= 0")
        if not eps >= 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}; eps must be >= 0")
        if len(betas) != 2:
            raise ValueError(f"Invalid betas: {betas}; give two values (beta1, beta2)")
        for i, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(
                    f"Invalid beta parameter at index {i}: {beta}; betas must be in [0, 1)"
                )
        if not weight_decay >= 0.0:
            raise ValueError(
                f"Invalid weight_decay value: {weight_decay}; weight_decay must be >= 0"
            )
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
            "foreach": foreach,
            "fused": fused,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        super().__init__(params, defaults)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient; returns ``closure()``'s loss."""
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            params, grads, states = grads_and_states(self, group, _init_state)
            if not params:
                continue
            amsgrad = group["amsgrad"]
            exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps = [], [], [], []
            for p, state in zip(params, states):
                state["step"] += 1
                steps.append(state["step"])
                tensors = [state["exp_avg"], state["exp_avg_sq"]]
                if amsgrad:
                    if "max_exp_avg_sq" not in state:
                        state["max_exp_avg_sq"] = wrap(zeros_like(p._array))
                    tensors.append(state["max_exp_avg_sq"])
                    max_exp_avg_sqs.append(tensors[2]._array)
                exp_avgs.append(tensors[0]._array)
                exp_avg_sqs.append(tensors[1]._array)
                bump_versions(tensors)
            beta1, beta2 = group["betas"]
            adam_update(
                [p._array for p in params],
                grads,
                exp_avgs,
                exp_avg_sqs,
                max_exp_avg_sqs,
                steps,
                amsgrad=amsgrad,
                beta1=beta1,
                beta2=beta2,
                lr=group["lr"],
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                maximize=group["maximize"],
                decoupled_weight_decay=group["decoupled_weight_decay"],
                scratch=self._scratch,
            )
            bump_versions(params)
        return loss


class AdamW(Adam):
    """AdamW, as ``torch.optim.AdamW``: Adam with decoupled weight decay
    (``p = p * (1 - lr * weight_decay)`` before the Adam step), ``weight_decay=1e-2``.

    Args: as ``Adam``, without ``decoupled_weight_decay`` (always on).
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            maximize=maximize,
            foreach=foreach,
            fused=fused,
            decoupled_weight_decay=True,
        )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As ``Optimizer.load_state_dict``; weight decay stays decoupled."""
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True


def adam_update(
    params: list[Any],
    grads: list[Any],
    exp_avgs: list[Any],
    exp_avg_sqs: list[Any],
    max_exp_avg_sqs: list[Any],
    steps: list[int],
    *,
    amsgrad: bool,
    beta1: float,
    beta2: float,
    lr: float,
    weight_decay: float,
    eps: float,
    maximize: bool,
    decoupled_weight_decay: bool,
    scratch: Scratch,
) -> None:
    """One Adam(W) step on raw arrays, in place (the hook a fused kernel replaces).

    ``steps`` holds each parameter's step number, already counting this step.
    """
    for i, p in enumerate(params):
        xp = get_array_module(p)
        g = grads[i]
        m, v = exp_avgs[i], exp_avg_sqs[i]
        if weight_decay != 0 and decoupled_weight_decay:
            p *= 1 - lr * weight_decay
        if weight_decay != 0 and not decoupled_weight_decay:
            work = scratch.get(p, 1)
            xp.multiply(p, weight_decay, out=work)
            if maximize:
                xp.subtract(work, g, out=work)
            else:
                xp.add(work, g, out=work)
            g = work
        elif maximize:
            g = xp.negative(g, out=scratch.get(p, 1))

        tmp = scratch.get(p, 0)
        # m.lerp_(g, 1 - beta1), in PyTorch's two-sided form (exact at both ends)
        weight = 1 - beta1
        xp.subtract(g, m, out=tmp)
        if weight < 0.5:
            tmp *= weight
            m += tmp
        else:
            tmp *= 1 - weight
            xp.subtract(g, tmp, out=m)
        # v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        v *= beta2
        xp.multiply(g, 1 - beta2, out=tmp)
        tmp *= g
        v += tmp

        step = steps[i]
        bias_correction1 = 1 - beta1**step
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        step_size = lr / bias_correction1
        if amsgrad:
            v_max = max_exp_avg_sqs[i]
            xp.maximum(v_max, v, out=v_max)
            v = v_max
        # p.addcdiv_(m, sqrt(v) / bias_correction2_sqrt + eps, value=-step_size)
        denom = tmp
        xp.sqrt(v, out=denom)
        denom /= bias_correction2_sqrt
        denom += eps
        update = scratch.get(p, 1)  # g is no longer needed, so its slot is free
        xp.multiply(m, step_size, out=update)
        update /= denom
        p -= update
