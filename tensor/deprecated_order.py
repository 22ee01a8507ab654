"""PyTorch's deprecated number-first overloads, still accepted by PyTorch with a warning:
``add_(alpha, other)``, ``sub(alpha, other)``, ``addcmul_(value, tensor1, tensor2)``.
Old scripts (pytorch/examples' word_language_model: ``p.data.add_(-lr, p.grad)``) use them."""

from __future__ import annotations

import numbers
import warnings
from typing import Any


def number_first(name: str, other: Any, alpha: Any) -> tuple[Any, Any]:
    """``(other, alpha)`` of ``name(other, alpha)``, swapped (with PyTorch's warning) when
    the call used the old order ``name(alpha, other)``: a number, then a tensor."""
    if isinstance(other, numbers.Number) and not isinstance(alpha, numbers.Number):
        warnings.warn(
            f"This overload of {name} is deprecated: {name}(Number alpha, Tensor other); use "
            f"{name}(Tensor other, *, Number alpha)",
            UserWarning,
            stacklevel=3,
        )
        return alpha, other
    return other, alpha


def value_first(name: str, tensor1: Any, tensor2: Any, rest: tuple, value: Any) -> tuple:
    """``(tensor1, tensor2, value)`` of ``name(tensor1, tensor2, value=...)``, also from the
    old order ``name(value, tensor1, tensor2)`` (with PyTorch's warning).

    Raises:
        TypeError: extra positional arguments that are not the old order.
    """
    if not rest:
        return tensor1, tensor2, value
    if len(rest) == 1 and isinstance(tensor1, numbers.Number):
        warnings.warn(
            f"This overload of {name} is deprecated: {name}(Number value, Tensor tensor1, "
            f"Tensor tensor2); use {name}(Tensor tensor1, Tensor tensor2, *, Number value)",
            UserWarning,
            stacklevel=3,
        )
        return tensor2, rest[0], tensor1
    raise TypeError(
        f"{name}() takes tensor1, tensor2 and the keyword value, got {2 + len(rest)} "
        "positional arguments"
    )
