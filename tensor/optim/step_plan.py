"""Per-group plans of the optimizers' multi-tensor CUDA steps (``Adam``'s and ``SGD``'s).

A ``GroupPlan`` is built from the persistent arrays of the parameters that had a gradient
(the parameters' and their optimizer state's), packs them once in ``CachedLists``, and is
used while those stay the same objects (checked by identity each step), so that a steady
step checks and packs only its fresh gradients. A group that cannot take the kernel (a
strided parameter, a CPU one mixed in, a parameter listed twice...) keeps a refused plan,
checked the same way, so that it goes to the general path without being built again.
``multi_tensor.PersistentChecks`` keeps the plans (``plan``/``keep_plan``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from operator import attrgetter, is_
from typing import Any

from dtrain._tensor.tensor import Tensor
from dtrain.runtime.backend import is_cuda_array
from dtrain.runtime.kernels.multi_tensor import CachedLists, grouped

array_of = attrgetter("_array")  # a tensor's array: map(array_of, tensors) walks in C

#: The launches of one step: per unit, its indices (None: all), lists and filled structs.
Launches = list[tuple[list[int] | None, CachedLists, list]]


class GroupPlan(ABC):
    """What an optimizer keeps per param group for the multi-tensor kernels: its parameters
    and their arrays, one ``CachedLists`` per launch group (``units``), and ``refused`` where
    one of them cannot take the kernel (no units: the general path steps the group)."""

    refused = False

    def __init__(self, params: list[Tensor]) -> None:
        self.params = list(params)  # a copy: the group's own list may be edited in place
        self.arrays = list(map(array_of, self.params))
        self.units: list[tuple[list[int] | None, CachedLists]] = []
        self.bumped: list[Tensor] = self.params  # marked as changed in place by each step

    @classmethod
    @abstractmethod
    def build(cls, optimizer: Any, group: dict, params: list[Tensor]) -> GroupPlan | None:
        """The plan for ``params`` (``group``'s with a gradient, the first a CUDA one); a
        refused one where one of them cannot take the kernel, None where the general path
        must take this step but the next may fit (e.g. a first momentum step)."""

    @abstractmethod
    def matches(self, params: list[Tensor], all_state: dict, group: dict) -> bool:
        """Whether the plan still describes ``params``, their arrays and their state (the
        same objects), under ``group``'s options."""

    @abstractmethod
    def launch(self, group: dict, launches: Launches) -> None:
        """Launch the kernels of one step over ``launches`` (``fill``'s), with ``group``'s
        hyperparameters read now, and count what the host counts."""

    def refuse(self) -> GroupPlan:
        """This plan, marked as refused (kept so that the next steps need not build it)."""
        self.refused = True
        return self

    def add_units(self, rows: Callable[[list[int]], list], steps: list | None = None) -> None:
        """One ``CachedLists`` per (dtype, device) of the parameters (and value of
        ``steps``, where given): ``rows(indices)`` gives its kernel rows, the gradients'
        (row 1) None."""
        for same in grouped(range(len(self.params)), self.arrays).values():
            by_step: dict[Any, list[int]] = {}
            for i in same:
                by_step.setdefault(None if steps is None else steps[i], []).append(i)
            for idx in by_step.values():
                whole = len(idx) == len(self.params)
                self.units.append((None if whole else idx, CachedLists(rows(idx), fresh=1)))

    def same_params(self, params: list[Tensor]) -> bool:
        """Whether ``params`` are this plan's parameters, with the same arrays."""
        mine = self.params
        return (
            len(params) == len(mine)
            and all(map(is_, params, mine))
            and all(map(is_, map(array_of, params), self.arrays))
        )

    def fill(self, grads: list[Any]) -> Launches | None:
        """The launches of this step: each unit with its structs, ``grads`` (one array per
        parameter) written in; None where one of them cannot take the kernel."""
        launches = []
        for idx, lists in self.units:
            packed = lists.fill(grads if idx is None else [grads[i] for i in idx])
            if packed is None:
                return None
            launches.append((idx, lists, packed))
        return launches

    def bump(self) -> None:
        """Mark what the step changed in place (a backward that saved it will refuse)."""
        for t in self.bumped:
            t._version[0] += 1


def plan_step(optimizer: Any, group: dict[str, Any], plan_type: type[GroupPlan]) -> list | None:
    """Step ``group`` by its plan (of ``plan_type``), built anew where the last one no longer
    matches. Returns None where the plan took the step, else the group's parameters that
    have a gradient, for the general path (a CPU group, a refused plan, or a gradient the
    kernel cannot take)."""
    all_params = group["params"]
    grads = [g._array for p in all_params if (g := p.grad) is not None]
    if len(grads) == len(all_params):
        params = all_params  # the steady case: no second list
    else:
        params = [p for p in all_params if p.grad is not None]
    if not grads or not is_cuda_array(params[0]._array):
        return params  # nothing to step, or a CPU group: no plan at all
    checks = optimizer._scratch.checks
    plan = checks.plan(group)
    if plan is None or not plan.matches(params, optimizer.state, group):
        plan = plan_type.build(optimizer, group, params)
        checks.keep_plan(group, plan)
    if plan is None or plan.refused:
        return params
    launches = plan.fill(grads)
    if launches is None:
        return params
    plan.launch(group, launches)
    plan.bump()
    checks.saw(params)
    return None


__all__ = ["GroupPlan", "Launches", "array_of", "plan_step"]
