"""Argument checks shared by the ``torch.special`` op modules (``special_*.py``)."""

from __future__ import annotations

from typing import Any

from dtrain._tensor.tensor import Tensor


def as_float(x: Tensor) -> Tensor:
    """Integer and bool tensors become float32 (PyTorch's default float), as in PyTorch."""
    if not isinstance(x, Tensor):
        raise TypeError(f"expected a Tensor, got {type(x).__name__}; wrap it with dt.tensor()")
    return x if x._array.dtype.kind == "f" else x.float()


def expect_tensor(name: str, first: Any, second: Any, what: str = "at least one Tensor") -> None:
    """TypeError unless ``first`` or ``second`` is a Tensor (PyTorch's binary special
    functions take at most one number); ``what`` words the expectation."""
    if not isinstance(first, Tensor) and not isinstance(second, Tensor):
        raise TypeError(
            f"{name}: expected {what}, got {type(first).__name__} and "
            f"{type(second).__name__}; wrap one with dt.tensor()"
        )


__all__ = ["as_float", "expect_tensor"]
