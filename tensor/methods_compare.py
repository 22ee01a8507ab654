"""The comparison and logical methods of ``Tensor``.

Each is a door to the function of the same name in ``dtrain._tensor.functions``, which
``methods.bind`` sets as ``_fn`` here once every op module has loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dtrain._tensor.tensor import Tensor

_fn: Any = None


class ComparisonMethods:
    """Mixed into ``Tensor`` through ``TensorMethods``: comparisons, logical
    ops and closeness tests."""

    __slots__ = ()

    def eq(self, other: Any) -> Tensor:
        return _fn.eq(self, other)

    def ne(self, other: Any) -> Tensor:
        return _fn.ne(self, other)

    def lt(self, other: Any) -> Tensor:
        return _fn.lt(self, other)

    def le(self, other: Any) -> Tensor:
        return _fn.le(self, other)

    def gt(self, other: Any) -> Tensor:
        return _fn.gt(self, other)

    def ge(self, other: Any) -> Tensor:
        return _fn.ge(self, other)

    def logical_not(self) -> Tensor:
        return _fn.logical_not(self)

    def logical_and(self, other: Any) -> Tensor:
        return _fn.logical_and(self, other)

    def logical_or(self, other: Any) -> Tensor:
        return _fn.logical_or(self, other)

    def isnan(self) -> Tensor:
        return _fn.isnan(self)

    def isinf(self) -> Tensor:
        return _fn.isinf(self)

    def isfinite(self) -> Tensor:
        return _fn.isfinite(self)

    def equal(self, other: Tensor) -> bool:
        return _fn.equal(self, other)

    def allclose(self, other: Tensor, rtol: float = 1e-5, atol: float = 1e-8) -> bool:
        return _fn.allclose(self, other, rtol, atol)

    def isclose(
        self, other: Any, rtol: float = 1e-5, atol: float = 1e-8, equal_nan: bool = False
    ) -> Tensor:
        return _fn.isclose(self, other, rtol, atol, equal_nan)
