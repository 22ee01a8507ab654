"""Constraints of the mixture and multinomial families, as
``torch.distributions.constraints``' ``multinomial`` and ``MixtureSameFamilyConstraint``."""

from __future__ import annotations

from typing import Any

from dtrain._tensor.distributions.constraints import Constraint
from dtrain._tensor.tensor import Tensor


class _Multinomial(Constraint):
    """Non-negative count vectors summing to at most ``upper_bound`` (the last dim)."""

    is_discrete = True
    event_dim = 1

    def __init__(self, upper_bound: Any) -> None:
        self.upper_bound = upper_bound

    def check(self, value: Tensor) -> Tensor:
        return (value >= 0).all(-1) & (value.sum(-1) <= self.upper_bound)

    def __repr__(self) -> str:
        return f"Multinomial(upper_bound={self.upper_bound})"


class MixtureSameFamilyConstraint(Constraint):
    """A mixture's support: ``base_constraint`` (the components') checked against every
    component, one bool per event."""

    def __init__(self, base_constraint: Constraint) -> None:
        if not isinstance(base_constraint, Constraint):
            raise TypeError(
                f"MixtureSameFamilyConstraint: expected a Constraint, got "
                f"{type(base_constraint).__name__}"
            )
        self.base_constraint = base_constraint

    @property
    def is_discrete(self) -> bool:  # type: ignore[override]
        return self.base_constraint.is_discrete

    @property
    def event_dim(self) -> int:  # type: ignore[override]
        return self.base_constraint.event_dim

    def check(self, value: Tensor) -> Tensor:
        event_dim = self.event_dim
        if value.ndim < event_dim:
            raise ValueError(f"expected a value of at least {event_dim} dims, got {value.ndim}")
        result = self.base_constraint.check(value.unsqueeze(-1 - event_dim))
        keep = value.ndim - event_dim
        return result.reshape(tuple(result.shape[:keep]) + (-1,)).all(-1)

    def __repr__(self) -> str:
        return f"MixtureSameFamilyConstraint({self.base_constraint!r})"


multinomial = _Multinomial

__all__ = ["MixtureSameFamilyConstraint", "multinomial"]
