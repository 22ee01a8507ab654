"""Learning-rate schedulers, as ``torch.optim.lr_scheduler`` names and computes them.

Each scheduler sets ``group["lr"]`` of its optimizer's groups on ``step()``. As in PyTorch,
``step()`` updates the current learning rates by each scheduler's recursive rule (so
schedulers can be chained on one optimizer, and outside changes to ``group["lr"]`` carry on),
while ``step(epoch)`` and ``SequentialLR``'s switch-over use the closed form from the base
rates. Both give PyTorch's values. State dicts hold only numbers, lists and dicts (JSON-ready).

A group whose ``lr`` is a one-element tensor keeps that tensor: schedulers fill it in place
(as PyTorch); ``initial_lr``, ``base_lrs`` and ``get_last_lr()`` hold plain floats (PyTorch
keeps tensor copies there).

More schedulers live in ``lr_scheduler_extra`` (ExponentialLR, ConstantLR, PolynomialLR,
CosineAnnealingWarmRestarts, ChainedScheduler), ``one_cycle`` and ``plateau``.
"""

from __future__ import annotations

import math
import types
import warnings
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from dtrain._tensor.optim.optimizer import Optimizer, scalar
from dtrain._tensor.tensor import Tensor


def set_group_lr(group: dict[str, Any], value: Any, key: str = "lr") -> None:
    """Set ``group[key]``: a tensor there is filled in place (so it is never replaced)."""
    current = group[key]
    if isinstance(current, Tensor):
        current.fill_(scalar(value))
    else:
        group[key] = scalar(value)


def group_lrs(optimizer: Optimizer) -> list[float]:
    """Every group's current ``lr`` as a float."""
    return [scalar(group["lr"]) for group in optimizer.param_groups]


class LRScheduler:
    """Base class of the schedulers; subclasses define ``get_lr`` (and a closed form).

    Args:
        optimizer: the optimizer whose learning rates this scheduler sets.
        last_epoch: the index of the last epoch; -1 (the default) starts afresh and stores
            each group's ``lr`` as its ``initial_lr``. Other values resume, and need
            ``initial_lr`` in every group (load the optimizer's state dict first).

    Raises:
        TypeError: ``optimizer`` is not an ``Optimizer``.
        KeyError: resuming (``last_epoch != -1``) but a group has no ``initial_lr``.
    """

    _is_initial: bool = False

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", scalar(group["lr"]))
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(
                        f"param 'initial_lr' is not specified in param_groups[{i}] when "
                        f"resuming a scheduler with last_epoch={last_epoch}; load the "
                        "optimizer's state dict first, or use last_epoch=-1 for a fresh run"
                    )
        self.base_lrs: list[float] = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._initial_step()

    def _initial_step(self) -> None:
        """Reset the step count and take the first step (epoch 0 when starting afresh)."""
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def get_lr(self) -> list[float]:
        """The learning rates for ``last_epoch`` (use ``get_last_lr()`` to read them)."""
        raise NotImplementedError

    def _get_closed_form_lr(self) -> list[float]:
        return self.get_lr()

    def get_last_lr(self) -> list[float]:
        """The learning rates the last ``step()`` set, one per param group."""
        return self._last_lr

    def step(self, epoch: int | None = None) -> None:
        """Advance one epoch (call it after ``optimizer.step()``) and set the new rates.

        Args:
            epoch: deprecated in PyTorch, kept for porting: jump to this epoch (closed form).
        """
        self._step_count += 1
        if epoch is not None:
            warnings.warn(
                "The epoch parameter in `scheduler.step()` is deprecated, as in PyTorch; call "
                "`scheduler.step()` without it",
                UserWarning,
                stacklevel=2,
            )
        self._update_lr(epoch)

    def _update_lr(self, epoch: int | None = None) -> None:
        if epoch is None:
            self.last_epoch += 1
            values = self.get_lr()
        else:
            self.last_epoch = epoch
            values = self._get_closed_form_lr()
        for group, lr in zip(self.optimizer.param_groups, values):
            set_group_lr(group, lr)
        self._last_lr = group_lrs(self.optimizer)

    def state_dict(self) -> dict[str, Any]:
        """Everything but the optimizer: numbers and lists (JSON-ready)."""
        return {key: value for key, value in self.__dict__.items() if key != "optimizer"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a ``state_dict()``.

        Raises:
            ValueError: it was saved for a different number of param groups.
        """
        base_lrs = state_dict.get("base_lrs")
        groups = len(self.optimizer.param_groups)
        if base_lrs is not None and len(base_lrs) != groups:
            raise ValueError(
                f"loaded scheduler state has {len(base_lrs)} base learning rates but the "
                f"optimizer has {groups} param groups; build the optimizer as for the save"
            )
        self.__dict__.update(state_dict)


class _LRScheduler(LRScheduler):
    """The old name of ``LRScheduler``, kept (as PyTorch keeps it) for code that subclasses it."""


def _check_positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


class LambdaLR(LRScheduler):
    """``lr = base_lr * lr_lambda(epoch)``, with one function or one per param group.

    The state dict leaves functions out (they cannot be saved); a callable object's
    ``__dict__`` is saved, as in PyTorch.

    Raises:
        ValueError: a list of functions whose length differs from the number of groups.
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
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return [
            base_lr * lmbda(self.last_epoch)
            for lmbda, base_lr in zip(self.lr_lambdas, self.base_lrs)
        ]

    def state_dict(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "lr_lambdas")}
        state["lr_lambdas"] = [
            None if isinstance(fn, types.FunctionType) else fn.__dict__.copy()
            for fn in self.lr_lambdas
        ]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        lr_lambdas = state.pop("lr_lambdas", None) or []
        super().load_state_dict(state)
        for fn, saved in zip(self.lr_lambdas, lr_lambdas):
            if saved is not None:
                fn.__dict__.update(saved)


class StepLR(LRScheduler):
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs:
    ``lr = base_lr * gamma ** (epoch // step_size)``.

    Raises:
        ValueError: ``step_size`` is not a positive integer.
    """

    def __init__(
        self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1
    ) -> None:
        _check_positive_int("StepLR step_size", step_size)
        self.step_size = step_size
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        groups = self.optimizer.param_groups
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return [group["lr"] for group in groups]
        return [group["lr"] * self.gamma for group in groups]

    def _get_closed_form_lr(self) -> list[float]:
        factor = self.gamma ** (self.last_epoch // self.step_size)
        return [base_lr * factor for base_lr in self.base_lrs]


class MultiStepLR(LRScheduler):
    """Multiply the learning rate by ``gamma`` at each milestone epoch:
    ``lr = base_lr * gamma ** (number of milestones <= epoch)``.

    The state dict holds the milestones as a sorted list (PyTorch keeps a ``Counter``, whose
    integer keys JSON would turn into strings); both forms load.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        milestones: Iterable[int],
        gamma: float = 0.1,
        last_epoch: int = -1,
    ) -> None:
        self.milestones = Counter(milestones)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        groups = self.optimizer.param_groups
        if self.last_epoch not in self.milestones:
            return [group["lr"] for group in groups]
        factor = self.gamma ** self.milestones[self.last_epoch]
        return [group["lr"] * factor for group in groups]

    def _get_closed_form_lr(self) -> list[float]:
        milestones = sorted(self.milestones.elements())
        factor = self.gamma ** bisect_right(milestones, self.last_epoch)
        return [base_lr * factor for base_lr in self.base_lrs]

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["milestones"] = sorted(self.milestones.elements())
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        milestones = state.pop("milestones", None)
        super().load_state_dict(state)
        if isinstance(milestones, dict):  # a Counter, or one that went through JSON
            self.milestones = Counter({int(k): int(n) for k, n in milestones.items()})
        elif milestones is not None:
            self.milestones = Counter(int(m) for m in milestones)


class LinearLR(LRScheduler):
    """Scale the learning rate by a factor that goes linearly from ``start_factor`` to
    ``end_factor`` over ``total_iters`` epochs, then stays:
    ``lr = base_lr * (start + (end - start) * min(epoch, total_iters) / total_iters)``.

    Raises:
        ValueError: ``start_factor`` not in (0, 1], ``end_factor`` not in [0, 1], or
            ``total_iters`` not a positive integer.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        start_factor: float = 1.0 / 3,
        end_factor: float = 1.0,
        total_iters: int = 5,
        last_epoch: int = -1,
    ) -> None:
        if not 0 < start_factor <= 1.0:
            raise ValueError(
                "Starting multiplicative factor expected to be greater than 0 and less or "
                f"equal to 1, got start_factor={start_factor}"
            )
        if not 0 <= end_factor <= 1.0:
            raise ValueError(
                f"Ending multiplicative factor expected to be between 0 and 1, got "
                f"end_factor={end_factor}"
            )
        _check_positive_int("LinearLR total_iters", total_iters)
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        groups = self.optimizer.param_groups
        if self.last_epoch == 0:
            return [group["lr"] * self.start_factor for group in groups]
        if self._is_initial or self.last_epoch > self.total_iters:
            return [group["lr"] for group in groups]
        delta = self.end_factor - self.start_factor
        factor = 1.0 + delta / (
            self.total_iters * self.start_factor + (self.last_epoch - 1) * delta
        )
        return [group["lr"] * factor for group in groups]

    def _get_closed_form_lr(self) -> list[float]:
        return [
            base_lr
            * (
                self.start_factor
                + (self.end_factor - self.start_factor)
                * min(self.total_iters, self.last_epoch)
                / self.total_iters
            )
            for base_lr in self.base_lrs
        ]


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing from the base rate to ``eta_min`` over ``T_max`` epochs (and back up
    over the next ``T_max``, as PyTorch's schedule continues):
    ``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2``.

    Raises:
        ValueError: ``T_max`` is not a positive integer.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        T_max: int,  # noqa: N803 - PyTorch's name
        eta_min: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        _check_positive_int("CosineAnnealingLR T_max", T_max)
        self.T_max = T_max
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        groups = self.optimizer.param_groups
        epoch, t_max, eta_min = self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return [group["lr"] for group in groups]
        if self._step_count == 1 and epoch > 0:
            return [
                eta_min + (base_lr - eta_min) * (1 + math.cos(epoch * math.pi / t_max)) / 2
                for base_lr in self.base_lrs
            ]
        if (epoch - 1 - t_max) % (2 * t_max) == 0:  # the bottom: the ratio below is 0/0
            return [
                group["lr"] + (base_lr - eta_min) * (1 - math.cos(math.pi / t_max)) / 2
                for base_lr, group in zip(self.base_lrs, groups)
            ]
        ratio = (1 + math.cos(math.pi * epoch / t_max)) / (
            1 + math.cos(math.pi * (epoch - 1) / t_max)
        )
        return [ratio * (group["lr"] - eta_min) + eta_min for group in groups]

    def _get_closed_form_lr(self) -> list[float]:
        return [
            self.eta_min
            + (base_lr - self.eta_min) * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
            for base_lr in self.base_lrs
        ]


class SequentialLR(LRScheduler):
    """Run ``schedulers`` one after another, switching at each of ``milestones`` (epochs);
    each scheduler restarts from its epoch 0 when its turn comes.

    Raises:
        ValueError: no schedulers, a scheduler of another optimizer, or
            ``len(milestones) != len(schedulers) - 1``.
        TypeError: an entry is not a scheduler.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        schedulers: list[LRScheduler],
        milestones: list[int],
        last_epoch: int = -1,
    ) -> None:
        if len(schedulers) < 1:
            raise ValueError("SequentialLR expects at least one scheduler, but got none")
        for i, scheduler in enumerate(schedulers):
            if not isinstance(scheduler, LRScheduler):
                raise TypeError(
                    f"SequentialLR's schedulers[{i}] is a {type(scheduler).__name__}, not a "
                    "learning-rate scheduler"
                )
            if scheduler.optimizer is not optimizer:
                raise ValueError(
                    f"SequentialLR expects all schedulers to belong to the same optimizer, but "
                    f"schedulers[{i}] ({type(scheduler).__name__}) has a different one"
                )
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(
                "SequentialLR expects one milestone fewer than schedulers, but got "
                f"{len(schedulers)} schedulers and {len(milestones)} milestones"
            )
        self._schedulers = list(schedulers)
        self._milestones = list(milestones)
        self.last_epoch = last_epoch + 1
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            set_group_lr(group, group["initial_lr"])
        # Undo the initial step each scheduler took when it was built.
        for scheduler in self._schedulers:
            _undo_initial_step(scheduler)
        index = bisect_right(self._milestones, 0)
        self._schedulers[index]._initial_step()
        self._last_lr = self._schedulers[index].get_last_lr()

    def step(self) -> None:  # type: ignore[override]
        """Advance one epoch in the scheduler whose turn it is."""
        self.last_epoch += 1
        index = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[index]
        if index > 0 and self._milestones[index - 1] == self.last_epoch:
            scheduler._update_lr(0)
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()

    def state_dict(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "_schedulers")}
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        saved = state.pop("_schedulers")
        if len(saved) != len(self._schedulers):
            raise ValueError(
                f"loaded SequentialLR state has {len(saved)} schedulers but this one has "
                f"{len(self._schedulers)}; build it with the same schedulers as the saved one"
            )
        self.__dict__.update(state)
        for scheduler, s in zip(self._schedulers, saved):
            scheduler.load_state_dict(s)


def _undo_initial_step(scheduler: LRScheduler) -> None:
    nested = getattr(scheduler, "_schedulers", None)
    if nested is not None:
        for s in nested:
            _undo_initial_step(s)
    else:
        scheduler.last_epoch -= 1


__all__ = [
    "CosineAnnealingLR",
    "LRScheduler",
    "_LRScheduler",
    "LambdaLR",
    "LinearLR",
    "MultiStepLR",
    "SequentialLR",
    "StepLR",
]
