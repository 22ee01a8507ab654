"""The Python operators of ``Tensor``: ``+ - * / // % ** @``, their reflected and in-place
forms, the comparisons and the bitwise ``& | ^ ~``.

Each is a door to ``dtrain._tensor.functions``, which ``tensor.py`` binds here as ``_fn``
once every op module has loaded, together with ``Tensor`` itself for ``==`` and ``!=``
(this module cannot import either first: both import it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from dtrain.runtime.backend import is_cuda_array

if TYPE_CHECKING:
    from dtrain._tensor.tensor import Tensor

_fn: Any = None
_COMPARABLE: tuple = ()  # what == compares elementwise; bind() sets it


def bind(functions: Any, tensor_class: type) -> None:
    """Point the operators at ``dtrain._tensor.functions`` and at the ``Tensor`` class
    (called once, by tensor.py)."""
    global _fn, _COMPARABLE
    _fn = functions
    _COMPARABLE = (tensor_class, int, float, np.generic, np.ndarray, list, tuple)


class TensorOperators:
    """Mixed into ``Tensor``: the Python operator protocol."""

    __slots__ = ()
    __array_ufunc__ = None  # numpy defers to our reflected operators: ndarray + Tensor → Tensor
    __hash__ = object.__hash__  # == is elementwise; identity keys graph dicts

    def __add__(self, other: Any) -> Tensor:
        return _fn.binary(_fn.Add, self, other)

    def __radd__(self, other: Any) -> Tensor:
        return _fn.binary(_fn.Add, other, self)

    def __sub__(self, other: Any) -> Tensor:
        return _fn.binary(_fn.Sub, self, other)

    def __rsub__(self, other: Any) -> Tensor:
        return _fn.binary(_fn.Sub, other, self)

    def __mul__(self, other: Any) -> Tensor:
        return _fn.binary(_fn.Mul, self, other)

    def __rmul__(self, other: Any) -> Tensor:
        return _fn.binary(_fn.Mul, other, self)

    def __truediv__(self, other: Any) -> Tensor:
        return _fn.div(self, other)

    def __rtruediv__(self, other: Any) -> Tensor:
        return _fn.div(other, self)

    def __floordiv__(self, other: Any) -> Tensor:
        return _fn.floor_divide(self, other)

    def __rfloordiv__(self, other: Any) -> Tensor:
        return _fn.floor_divide(other, self)

    def __mod__(self, other: Any) -> Tensor:
        return _fn.remainder(self, other)

    def __rmod__(self, other: Any) -> Tensor:
        return _fn.remainder(other, self)

    def __pow__(self, other: Any) -> Tensor:
        return _fn.pow(self, other)

    def __rpow__(self, other: Any) -> Tensor:
        return _fn.pow(other, self)

    def __matmul__(self, other: Tensor) -> Tensor:
        return _fn.matmul(self, other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return _fn.matmul(_fn.as_tensor(other), self)

    def __neg__(self) -> Tensor:
        return _fn.Neg.apply(self)

    def __pos__(self) -> Tensor:
        return self

    def __abs__(self) -> Tensor:
        return _fn.abs(self)

    def __iadd__(self, other: Any) -> Tensor:
        return _fn.add_(self, other)

    def __isub__(self, other: Any) -> Tensor:
        return _fn.sub_(self, other)

    def __imul__(self, other: Any) -> Tensor:
        return _fn.mul_(self, other)

    def __itruediv__(self, other: Any) -> Tensor:
        return _fn.div_(self, other)

    def __ifloordiv__(self, other: Any) -> Tensor:
        return _fn.floor_divide_(self, other)

    def __imod__(self, other: Any) -> Tensor:
        return _fn.remainder_(self, other)

    def __eq__(self, other: Any) -> Tensor:  # type: ignore[override]
        if isinstance(other, _COMPARABLE) or _array_like(other):
            return _fn.eq(self, other)
        return NotImplemented  # None, a string …: Python answers False, as PyTorch does

    def __ne__(self, other: Any) -> Tensor:  # type: ignore[override]
        if isinstance(other, _COMPARABLE) or _array_like(other):
            return _fn.ne(self, other)
        return NotImplemented  # Python answers True

    def __lt__(self, other: Any) -> Tensor:
        return _fn.lt(self, other)

    def __le__(self, other: Any) -> Tensor:
        return _fn.le(self, other)

    def __gt__(self, other: Any) -> Tensor:
        return _fn.gt(self, other)

    def __ge__(self, other: Any) -> Tensor:
        return _fn.ge(self, other)

    def __and__(self, other: Any) -> Tensor:
        return _fn.bitwise("bitwise_and", self, other)

    def __or__(self, other: Any) -> Tensor:
        return _fn.bitwise("bitwise_or", self, other)

    def __xor__(self, other: Any) -> Tensor:
        return _fn.bitwise("bitwise_xor", self, other)

    def __invert__(self) -> Tensor:
        return _fn.bitwise("invert", self)


def _array_like(value: Any) -> bool:
    """Whether ``==`` compares ``value`` elementwise (a cupy array, or anything with
    ``__array__``); otherwise the comparison is Python's (identity), as in PyTorch."""
    return is_cuda_array(value) or hasattr(value, "__array__")


__all__ = ["TensorOperators", "bind"]
