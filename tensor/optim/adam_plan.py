"""``Adam``'s per-group plan for the multi-tensor CUDA kernel (see ``step_plan``), and the
state both of its paths fill in (first step, device step counts)."""

from __future__ import annotations

from itertools import repeat
from operator import is_, itemgetter, methodcaller
from typing import Any

import numpy as np

from dtrain._tensor.optim.optimizer import scalar, zeros_like
from dtrain._tensor.optim.step_plan import GroupPlan, Launches, array_of
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import device_id, get_array_module, is_cuda_array, on_device_of
from dtrain.runtime.kernels.adam import adam_launch

_step_of = itemgetter("step")


def init_state(state: dict[str, Any], param: Any) -> None:
    """Adam's state before a parameter's first step."""
    state["step"] = 0
    state["exp_avg"] = wrap(zeros_like(param))
    state["exp_avg_sq"] = wrap(zeros_like(param))


def device_step(state: dict[str, Any], param: Any) -> Any:
    """The parameter's step count as a float32 device scalar (made from the host count the
    first time, or after ``load_state_dict`` turned it back into a number)."""
    step = state["step"]
    if not is_cuda_array(getattr(step, "_array", None)):
        with on_device_of(param):
            array = get_array_module(param).full((), float(step), dtype="float32")
        state["step"] = step = wrap(array)
    return step._array


def _device_step_fits(step: Any, param: Any) -> bool:
    """Whether a capturable step scalar can sit in the kernel's step row."""
    return (
        is_cuda_array(step)
        and step.dtype == np.float32
        and step.size == 1
        and step.flags.c_contiguous
        and device_id(step) == device_id(param)
    )


class AdamPlan(GroupPlan):
    """``Adam``'s ``GroupPlan``: the parameters, their moments (and AMSGrad's maxima, and
    capturable device steps) packed once. Host step counts: one per unit (its parameters
    share one), checked against the states each step and written back after it."""

    def __init__(
        self,
        params: list[Tensor],
        states: list[dict],
        amsgrad: bool,
        capturable: bool,
        device_steps: bool,
    ) -> None:
        super().__init__(params)
        moments = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")[: 3 if amsgrad else 2]
        self.flags = (amsgrad, capturable)
        self.states = states
        names = moments + ("step",) if device_steps else moments  # the state tensors read
        self.getters = [methodcaller("get", name) for name in names]
        self.tensors = [[state[name] for state in states] for name in names]
        self.state_arrays = [list(map(array_of, row)) for row in self.tensors]
        self.moments = len(moments)
        self.bumped = [t for row in self.tensors[: len(moments)] for t in row] + self.params
        self.counts: list[list] = []  # per unit (host steps): [its states, their step]

    @classmethod
    def build(cls, optimizer: Any, group: dict, params: list[Tensor]) -> AdamPlan:
        """The plan for ``params`` (refused where one of them cannot take the kernel).
        Fills in their state as the general path would (first step, AMSGrad's maxima,
        device steps), then checks them, then packs."""
        amsgrad, capturable = group["amsgrad"], group.get("capturable", False)
        states = []
        all_state = optimizer.state
        for p in params:
            array = p._array
            state = all_state[p]
            if not state:
                init_state(state, array)
            if amsgrad and "max_exp_avg_sq" not in state:
                state["max_exp_avg_sq"] = wrap(zeros_like(array))
            if capturable and is_cuda_array(array):
                device_step(state, array)
            states.append(state)
        # capturable: a CPU parameter mixed in keeps its step on the host (refused below)
        device_steps = capturable and all(isinstance(s["step"], Tensor) for s in states)
        plan = cls(params, states, amsgrad, capturable, device_steps)
        if capturable != device_steps or not plan._fits(optimizer._scratch.checks):
            return plan.refuse()
        steps = None if capturable else list(map(_step_of, states))
        plan.add_units(plan._rows, steps)  # host steps of one value share a launch
        if steps is not None:
            for idx, _ in plan.units:
                unit = states if idx is None else [states[i] for i in idx]
                plan.counts.append([unit, steps[0 if idx is None else idx[0]]])
        return plan

    def _fits(self, checks: Any) -> bool:
        """Whether every parameter and its state can take the kernel."""
        if len(set(map(id, self.arrays))) != len(self.arrays):
            return False  # an array stepped twice (a parameter listed twice, or two over one)
        capturable = self.flags[1]
        if not capturable and {type(s["step"]) for s in self.states} - {int, float}:
            return False  # a step count that is no number: the general path's business
        moments = self.state_arrays[: self.moments]
        for i, (p, array) in enumerate(zip(self.params, self.arrays)):
            persistent = (array, *(row[i] for row in moments), None)[:4]
            if not checks.persistent(p, persistent):
                return False
            if capturable and not _device_step_fits(self.state_arrays[-1][i], array):
                return False
        return True

    def _rows(self, idx: list[int]) -> list:
        """The kernel's rows: param, grad (fresh), exp_avg, exp_avg_sq, max, step."""
        amsgrad, capturable = self.flags
        state_rows = [[row[i] for i in idx] for row in self.state_arrays]
        return [
            [self.arrays[i] for i in idx],
            None,
            *state_rows[:2],
            state_rows[2] if amsgrad else None,
            state_rows[-1] if capturable else None,
        ]

    def matches(self, params: list[Tensor], all_state: dict, group: dict) -> bool:
        """Whether this plan still describes ``params`` (the group's with a gradient), their
        arrays and their state, under ``group``'s options (host steps: as counted here)."""
        if not self.same_params(params):
            return False
        if (group["amsgrad"], group.get("capturable", False)) != self.flags:
            return False
        states = list(map(all_state.get, params))
        if not all(map(is_, states, self.states)):
            return False
        for get, tensors, arrays in zip(self.getters, self.tensors, self.state_arrays):
            now = list(map(get, states))
            if not all(map(is_, now, tensors)) or not all(map(is_, map(array_of, now), arrays)):
                return False
        for unit, step in self.counts:  # host steps (a refused plan counts none)
            if list(map(_step_of, unit)) != [step] * len(unit):
                break
        else:
            return True
        return False

    def launch(self, group: dict, launches: Launches) -> None:
        """One step of the group's parameters over ``launches``."""
        for count in self.counts:  # host steps, counted first as the general path does
            count[1] = step = count[1] + 1
            for state in count[0]:
                state["step"] = step
        beta1, beta2 = group["betas"]
        lr = scalar(group["lr"])
        counts = self.counts or repeat(None)  # capturable: steps counted on the device
        for (_, lists, packed), count in zip(launches, counts):
            adam_launch(
                packed,
                lists.name,
                lists.first,
                step=None if count is None else count[1],
                lr=lr,
                beta1=beta1,
                beta2=beta2,
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                amsgrad=self.flags[0],
                maximize=group["maximize"],
                decoupled_weight_decay=group["decoupled_weight_decay"],
            )


__all__ = ["AdamPlan", "device_step", "init_state"]
