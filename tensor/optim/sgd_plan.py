"""``SGD``'s per-group plan for the multi-tensor CUDA kernel (see ``step_plan``)."""

from __future__ import annotations

from operator import is_, methodcaller
from typing import Any

from dtrain._tensor.optim.optimizer import scalar
from dtrain._tensor.optim.step_plan import GroupPlan, Launches, array_of
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.kernels.sgd import sgd_launch

_buffer_of = methodcaller("get", "momentum_buffer")


class SGDPlan(GroupPlan):
    """``SGD``'s ``GroupPlan``: the parameters and (with momentum) their buffers packed
    once. None where a parameter has no momentum buffer yet: its first momentum step takes
    the general path, which makes the buffer."""

    def __init__(self, params: list[Tensor], states: list[dict] | None) -> None:
        super().__init__(params)
        self.states = states  # None without momentum: no state is read
        self.buffers = None if states is None else list(map(_buffer_of, states))
        self.buffer_arrays = None if states is None else list(map(array_of, self.buffers))
        if states is not None:
            self.bumped = self.buffers + self.params

    @classmethod
    def build(cls, optimizer: Any, group: dict, params: list[Tensor]) -> SGDPlan | None:
        """The plan for ``params`` (refused where one of them cannot take the kernel), or
        None where one has no momentum buffer yet."""
        states = None
        if group["momentum"] != 0:
            states = list(map(optimizer.state.get, params))
            if not all(state and isinstance(_buffer_of(state), Tensor) for state in states):
                return None
        plan = cls(params, states)
        if len(set(map(id, plan.arrays))) != len(plan.arrays):
            return plan.refuse()  # an array stepped twice (listed twice, or two over one)
        checks = optimizer._scratch.checks
        buffers = plan.buffer_arrays or [None] * len(params)
        for p, array, buffer in zip(plan.params, plan.arrays, buffers):
            if not checks.persistent(p, (array, buffer)):
                return plan.refuse()
        # the kernel's rows: param, grad (fresh), momentum buffer
        plan.add_units(lambda idx: [[plan.arrays[i] for i in idx], None, [buffers[i] for i in idx]])
        return plan

    def matches(self, params: list[Tensor], all_state: dict, group: dict) -> bool:
        """Whether this plan still describes ``params`` (the group's with a gradient), their
        arrays and their momentum buffers, under ``group``'s options."""
        if not self.same_params(params):
            return False
        if (group["momentum"] != 0) != (self.states is not None):
            return False
        if self.states is None:
            return True
        states = list(map(all_state.get, params))
        if not all(map(is_, states, self.states)):
            return False
        buffers = list(map(_buffer_of, states))
        return all(map(is_, buffers, self.buffers)) and all(
            map(is_, map(array_of, buffers), self.buffer_arrays)
        )

    def launch(self, group: dict, launches: Launches) -> None:
        """One step of the group's parameters over ``launches``."""
        lr = scalar(group["lr"])
        for _, lists, packed in launches:
            sgd_launch(
                packed,
                lists.name,
                lists.first,
                first=False,
                lr=lr,
                momentum=group["momentum"],
                dampening=group["dampening"],
                weight_decay=group["weight_decay"],
                nesterov=group["nesterov"],
                maximize=group["maximize"],
            )


__all__ = ["SGDPlan"]
