"""``MultiplicativeLR`` and ``CyclicLR``, as ``torch.optim.lr_scheduler`` computes them."""

from __future__ import annotations

import math
import types
from collections.abc import Callable
from typing import Any

from dtrain._tensor.optim.lr_scheduler import LRScheduler, set_group_lr
from dtrain._tensor.optim.one_cycle import _per_group
from dtrain._tensor.optim.optimizer import Optimizer, scalar


def _saved_callables(fns: list[Any]) -> list[Any]:
    # As PyTorch: a callable object's __dict__ is saved, a function or lambda is not.
    return [None if isinstance(fn, types.FunctionType) else fn.__dict__.copy() for fn in fns]


class MultiplicativeLR(LRScheduler):
    """Multiply each group's rate by ``lr_lambda(epoch)`` every epoch after the first.

    Args:
        optimizer: the optimizer whose learning rates this scheduler sets.
        lr_lambda: a function of the epoch, or one per param group.
        last_epoch: the index of the last epoch; -1 starts afresh.

    Raises:
        ValueError: a list of functions whose length differs from the number of groups.
        TypeError: a "function" that is not callable.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        lr_lambda: Callable[[int], float] | list[Callable[[int], float]],
        last_epoch: int = -1,
    ) -> None:
        self.optimizer = optimizer
        groups = len(optimizer.param_groups)
        if isinstance(lr_lambda, (list, tuple)):
            if len(lr_lambda) != groups:
                raise ValueError(f"Expected {groups} lr_lambdas, but got {len(lr_lambda)}")
            self.lr_lambdas = list(lr_lambda)
        else:
            self.lr_lambdas = [lr_lambda] * groups
        for fn in self.lr_lambdas:
            if not callable(fn):
                raise TypeError(f"lr_lambda should be a function, but got {type(fn).__name__}")
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        groups = self.optimizer.param_groups
        if self._is_initial:
            return [scalar(group["lr"]) for group in groups]
        return [
            scalar(group["lr"]) * fn(self.last_epoch)
            for fn, group in zip(self.lr_lambdas, groups, strict=True)
        ]

    def state_dict(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "lr_lambdas")}
        state["lr_lambdas"] = _saved_callables(self.lr_lambdas)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        saved = state.pop("lr_lambdas", None) or []
        super().load_state_dict(state)
        for fn, values in zip(self.lr_lambdas, saved):
            if values is not None:
                fn.__dict__.update(values)


class CyclicLR(LRScheduler):
    """Cycle the rate between ``base_lr`` and ``max_lr`` (cyclical learning rates, Smith
    2017); step it after every batch.

    Each cycle rises over ``step_size_up`` steps and falls over ``step_size_down``. The
    amplitude is scaled by ``mode``: ``"triangular"`` (constant), ``"triangular2"`` (halved
    each cycle), ``"exp_range"`` (``gamma ** step``), or by ``scale_fn(x)`` of the cycle
    number or the step (``scale_mode``). With ``cycle_momentum``, momentum (or Adam's beta1)
    goes the opposite way between ``max_momentum`` and ``base_momentum``.

    Args:
        optimizer: the optimizer whose learning rates this scheduler sets.
        base_lr: the lower bound, or one per param group (the groups' ``lr`` is set to it).
        max_lr: the upper bound, or one per param group.
        step_size_up: steps in the rising half of a cycle.
        step_size_down: steps in the falling half; ``step_size_up`` when None.
        mode: ``"triangular"``, ``"triangular2"`` or ``"exp_range"`` (ignored with
            ``scale_fn``).
        gamma: the base of ``"exp_range"``.
        scale_fn: a custom amplitude scale, ``0 <= scale_fn(x) <= 1``.
        scale_mode: ``"cycle"`` or ``"iterations"``: what ``scale_fn`` is a function of.
        cycle_momentum: cycle the momentum too.
        base_momentum: the lowest momentum, or one per group.
        max_momentum: the highest momentum, or one per group.
        last_epoch: the index of the last batch, to resume; -1 starts afresh.

    Raises:
        ValueError: an unknown ``mode`` without ``scale_fn``; ``cycle_momentum`` with an
            optimizer that has neither ``momentum`` nor ``betas``; per-group lists of the
            wrong length.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        base_lr: float | list[float],
        max_lr: float | list[float],
        step_size_up: int = 2000,
        step_size_down: int | None = None,
        mode: str = "triangular",
        gamma: float = 1.0,
        scale_fn: Callable[[float], float] | None = None,
        scale_mode: str = "cycle",
        cycle_momentum: bool = True,
        base_momentum: float | list[float] = 0.8,
        max_momentum: float | list[float] = 0.9,
        last_epoch: int = -1,
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self.optimizer = optimizer
        base_lrs = _per_group("base_lr", optimizer, base_lr)
        if last_epoch == -1:
            for lr, group in zip(base_lrs, optimizer.param_groups, strict=True):
                set_group_lr(group, lr)
        self.max_lrs = _per_group("max_lr", optimizer, max_lr)
        up = float(step_size_up)
        down = float(step_size_down) if step_size_down is not None else up
        self.total_size = up + down
        self.step_ratio = up / self.total_size
        if mode not in ("triangular", "triangular2", "exp_range") and scale_fn is None:
            raise ValueError(
                f"CyclicLR: mode={mode!r} is invalid and scale_fn is None; use 'triangular', "
                "'triangular2' or 'exp_range', or pass scale_fn"
            )
        if scale_mode not in ("cycle", "iterations"):
            raise ValueError(f"CyclicLR: scale_mode={scale_mode!r}; use 'cycle' or 'iterations'")
        self.mode = mode
        self.gamma = gamma
        self._scale_fn_custom = scale_fn
        self.scale_mode = scale_mode
        self._init_scale_mode()
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            defaults = optimizer.defaults
            if "momentum" not in defaults and "betas" not in defaults:
                raise ValueError(
                    "optimizer must support momentum or beta1 with `cycle_momentum` option "
                    f"enabled; {type(optimizer).__name__} has neither: pass "
                    "cycle_momentum=False"
                )
            self.use_beta1 = "betas" in defaults
            self.base_momentums = _per_group("base_momentum", optimizer, base_momentum)
            self.max_momentums = _per_group("max_momentum", optimizer, max_momentum)
            if last_epoch == -1:
                for high, low, group in zip(
                    self.max_momentums, self.base_momentums, optimizer.param_groups, strict=True
                ):
                    self._set_momentum(group, high)
                    group["max_momentum"] = high
                    group["base_momentum"] = low
        super().__init__(optimizer, last_epoch)
        self.base_lrs = base_lrs

    def _init_scale_mode(self) -> None:
        if self._scale_fn_custom is None:
            self.scale_mode = "iterations" if self.mode == "exp_range" else "cycle"

    def scale_fn(self, x: float) -> float:
        """The amplitude scale at ``x`` (the cycle number or the step, per ``scale_mode``)."""
        if self._scale_fn_custom is not None:
            return self._scale_fn_custom(x)
        if self.mode == "triangular":
            return 1.0
        if self.mode == "triangular2":
            return 1 / (2.0 ** (x - 1))
        return self.gamma**x

    def _set_momentum(self, group: dict[str, Any], value: float) -> None:
        if self.use_beta1:
            group["betas"] = (value, *group["betas"][1:])
        else:
            group["momentum"] = value

    def get_lr(self) -> list[float]:
        cycle = math.floor(1 + self.last_epoch / self.total_size)
        x = 1.0 + self.last_epoch / self.total_size - cycle
        if x <= self.step_ratio:
            scale_factor = x / self.step_ratio
        else:
            scale_factor = (x - 1) / (self.step_ratio - 1)
        scale = self.scale_fn(cycle if self.scale_mode == "cycle" else self.last_epoch)
        lrs = [
            base_lr + ((max_lr - base_lr) * scale_factor) * scale
            for base_lr, max_lr in zip(self.base_lrs, self.max_lrs, strict=True)
        ]
        if self.cycle_momentum:
            for low, high, group in zip(
                self.base_momentums, self.max_momentums, self.optimizer.param_groups, strict=True
            ):
                self._set_momentum(group, high - ((high - low) * scale_factor) * scale)
        return lrs

    def state_dict(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer",)}
        fn = state.pop("_scale_fn_custom")
        state["_scale_fn_custom"] = None if fn is None else _saved_callables([fn])[0]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        fn = state.pop("_scale_fn_custom", None)
        super().load_state_dict(state)
        if fn is not None and self._scale_fn_custom is not None:
            self._scale_fn_custom.__dict__.update(fn)
        self._init_scale_mode()


__all__ = ["CyclicLR", "MultiplicativeLR"]
