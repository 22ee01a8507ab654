"""PyTorch's deprecated number-first overloads, still accepted by PyTorch with a warning:
``add_(alpha, other)``, ``sub(alpha, other)``, ``addcmul_(value, tensor1, tensor2)``.
Old scripts (pytorch/examples' word_language_model: ``p.data.add_(-lr, p.grad)``) use them.
Modern calls give ``alpha`` and ``value`` by keyword, so a second positional argument
that is a tensor is the old order."""

from __future__ import annotations

import numbers
import warnings
from typing import Any

import numpy as np


def _scalar(value: Any) -> bool:
    """A number as the old forms took it: Python's, numpy's, or a 0-d array or tensor."""
    if isinstance(value, (numbers.Number, np.generic)):
        return True
    return getattr(value, "ndim", None) == 0


def _tensor(value: Any) -> bool:
    return hasattr(value, "ndim") and hasattr(value, "shape") and not isinstance(value, np.generic)


def number_first(name: str, other: Any, rest: tuple, alpha: Any) -> tuple[Any, Any]:
    """``(other, alpha)`` of ``name(other, *rest, alpha=...)``: the old order ``name(alpha,
    other)`` swapped (with PyTorch's warning); a positional number after ``other`` is
    ``alpha``, as dtrain always took it.

    Raises:
        TypeError: more positional arguments, or alpha given twice.
    """
    if not rest:
        return other, alpha
    if len(rest) > 1 or not (isinstance(alpha, (int, float)) and alpha == 1):
        raise TypeError(f"{name}() takes other and the keyword alpha, got {rest!r} too")
    second = rest[0]
    if _scalar(other) and _tensor(second) and getattr(second, "ndim", 0) > 0:
        warnings.warn(
            f"This overload of {name} is deprecated: {name}(Number alpha, Tensor other); use "
            f"{name}(Tensor other, *, Number alpha)",
            UserWarning,
            stacklevel=3,
        )
        return second, other
    return other, second


def value_first(name: str, tensor1: Any, tensor2: Any, rest: tuple, value: Any) -> tuple:
    """``(tensor1, tensor2, value)`` of ``name(tensor1, tensor2, value=...)``, also from the
    old order ``name(value, tensor1, tensor2)`` (with PyTorch's warning); ``value`` None
    means the default, 1.

    Raises:
        TypeError: extra positional arguments that are not the old order, or the old order
            with ``value=`` as well.
    """
    if not rest:
        return tensor1, tensor2, 1 if value is None else value
    if len(rest) == 1 and value is None and _scalar(tensor1):
        warnings.warn(
            f"This overload of {name} is deprecated: {name}(Number value, Tensor tensor1, "
            f"Tensor tensor2); use {name}(Tensor tensor1, Tensor tensor2, *, Number value)",
            UserWarning,
            stacklevel=3,
        )
        return tensor2, rest[0], tensor1
    raise TypeError(
        f"{name}() takes tensor1, tensor2 and the keyword value, got {2 + len(rest)} "
        "positional arguments" + (" and value=" if value is not None else "")
    )
