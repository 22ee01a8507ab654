"""``Adam`` and ``AdamW``: adaptive moment estimation, with L2 or decoupled weight decay."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dtrain._tensor.optim.adam_plan import AdamPlan, device_step, init_state
from dtrain._tensor.optim.optimizer import (
    Optimizer,
    Scratch,
    bump_versions,
    check_lr,
    grads_and_states,
    scalar,
    zeros_like,
)
from dtrain._tensor.optim.step_plan import plan_step
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module, is_cuda_array
from dtrain.runtime.kernels import multi_tensor
from dtrain.runtime.kernels.adam import adam_multi_tensor


class Adam(Optimizer):
    """Adam, as ``torch.optim.Adam``.

    Per parameter, at step ``t``, with ``g`` its gradient (negated when ``maximize``)::

        g = g + weight_decay * p          (or, decoupled: p = p * (1 - lr * weight_decay))
        m = lerp(m, g, 1 - beta1)         v = beta2 * v + (1 - beta2) * g * g
        v_max = max(v_max, v)             (amsgrad; then v_max replaces v below)
        p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    Args:
        params: tensors or param-group dicts (see ``Optimizer``).
        lr: learning rate: a float, or a one-element tensor read at each step.
        betas: decay rates of the first and second moment averages.
        eps: added to the denominator for numerical stability.
        weight_decay: L2 penalty (or decoupled decay, see ``decoupled_weight_decay``).
        amsgrad: use the maximum of past second moments (AMSGrad).
        maximize: maximise the objective instead of minimising it.
        foreach: accepted for PyTorch compatibility; dtrain picks the update path itself.
        fused: accepted for PyTorch compatibility; dtrain picks the update path itself.
        decoupled_weight_decay: decay the parameters directly, as ``AdamW`` does.
        capturable: keep each CUDA parameter's step count on the device (a float32 scalar
            the fused kernel increments), so a CUDA graph of ``step()`` replays correctly.
            Capture after one eager step; ``lr`` and the betas are fixed at capture.

    Raises:
        ValueError: a hyperparameter is out of range.
    """

    _per_element_state = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
        capturable: bool = False,
    ) -> None:
        check_lr(lr)
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
            "capturable": capturable,
        }
        super().__init__(params, defaults)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient; returns ``closure()``'s loss."""
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            left = plan_step(self, group, AdamPlan)  # None: the kernel took the group's step
            if not left:
                continue  # stepped by its plan, or no gradients
            params, grads, states = grads_and_states(self, group, init_state, left)
            amsgrad = group["amsgrad"]
            capturable = group.get("capturable", False)
            exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps = [], [], [], []
            for p, state in zip(params, states):
                if capturable and is_cuda_array(p._array):
                    steps.append(device_step(state, p._array))  # counted on the device
                else:
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
                lr=scalar(group["lr"]),
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                maximize=group["maximize"],
                decoupled_weight_decay=group["decoupled_weight_decay"],
                scratch=self._scratch,
                keys=params,
            )
            bump_versions(params)
        self._scratch.checks.sweep()  # let go of the arrays of parameters not stepped
        return loss


class AdamW(Adam):
    """AdamW, as ``torch.optim.AdamW``: Adam with decoupled weight decay
    (``p = p * (1 - lr * weight_decay)`` before the Adam step), ``weight_decay=1e-2``.

    Args: as ``Adam``, without ``decoupled_weight_decay`` (always on).
    """

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
        capturable: bool = False,
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
            capturable=capturable,
        )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As ``Optimizer.load_state_dict``; weight decay stays decoupled."""
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True


def _adam_fused(
    params: list[Any],
    grads: list[Any],
    exp_avgs: list[Any],
    exp_avg_sqs: list[Any],
    max_exp_avg_sqs: list[Any],
    steps: list[Any],
    *,
    amsgrad: bool,
    checks: multi_tensor.PersistentChecks,
    keys: list[Any],
    **options: Any,
) -> set[int]:
    """Update the parameters the multi-tensor kernel takes (cupy, contiguous, one dtype per
    launch), one launch per (dtype, device, step); return their indices. ``keys``: one per
    parameter, under which ``checks`` remembers its persistent arrays."""
    fusable = [
        i
        for i, p in enumerate(params)
        if checks.fusable(
            keys[i],
            (p, exp_avgs[i], exp_avg_sqs[i], max_exp_avg_sqs[i] if amsgrad else None),
            grads[i],
        )
    ]
    fusable = multi_tensor.once_each(fusable, params)  # a parameter listed twice
    for same_array in multi_tensor.grouped(fusable, params).values():
        by_step: dict[Any, list[int]] = {}
        for i in same_array:  # device steps (capturable) share one launch; host steps by value
            by_step.setdefault(None if is_cuda_array(steps[i]) else steps[i], []).append(i)
        for step, idx in by_step.items():
            adam_multi_tensor(
                [params[i] for i in idx],
                [grads[i] for i in idx],
                [exp_avgs[i] for i in idx],
                [exp_avg_sqs[i] for i in idx],
                [max_exp_avg_sqs[i] for i in idx] if amsgrad else None,
                step=step,
                steps=[steps[i] for i in idx] if step is None else None,
                amsgrad=amsgrad,
                checked=True,  # picked with fusable and grouped by dtype and device above
                **options,
            )
    return set(fusable)


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
    keys: list[Any] | None = None,
) -> None:
    """One Adam(W) step on raw arrays, in place. ``keys``: one per parameter (the
    optimizer's parameter tensors), under which ``scratch`` remembers the arrays it has
    checked; without them nothing is remembered.

    ``steps`` holds each parameter's step number, already counting this step, or (capturable
    CUDA parameters) a float32 device scalar that this step increments. cupy parameters go
    to the multi-tensor kernel (``dtrain.runtime.kernels.adam``), the rest through xp below.
    """
    fused = _adam_fused(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        max_exp_avg_sqs,
        steps,
        amsgrad=amsgrad,
        checks=scratch.checks if keys is not None else multi_tensor.PersistentChecks(),
        keys=range(len(params)) if keys is None else keys,
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        weight_decay=weight_decay,
        maximize=maximize,
        decoupled_weight_decay=decoupled_weight_decay,
    )
    for i, p in enumerate(params):
        if i in fused:
            continue
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
        if is_cuda_array(step):  # a capturable step the kernel could not take: count it here
            step += 1
            step = float(step)
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
