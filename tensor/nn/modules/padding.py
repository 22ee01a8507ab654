"""Padding layers: ``ZeroPad1d/2d/3d``, ``ConstantPad1d/2d/3d``, ``ReflectionPad1d/2d/3d``,
``ReplicationPad1d/2d/3d`` and ``CircularPad1d/2d/3d``, each ``functional.pad`` with its mode."""

from __future__ import annotations

from typing import Any

from dtrain._tensor.nn.functional.padding import pad
from dtrain._tensor.nn.module import Module
from dtrain._tensor.tensor import Tensor


def _widths(padding: Any, count: int, where: str) -> tuple[int, ...]:
    """An int (every side) or ``count`` ints ordered as ``F.pad``: (left, right, top, ...)."""
    if isinstance(padding, int) and not isinstance(padding, bool):
        return (padding,) * count
    if isinstance(padding, (tuple, list)) and len(padding) == count:
        return tuple(int(p) for p in padding)
    raise TypeError(f"{where}: padding must be an int or a {count}-tuple, got {padding!r}")


class _Pad(Module):
    mode = "constant"
    dims = 2

    def __init__(self, padding: Any) -> None:
        super().__init__()
        self.padding = _widths(padding, 2 * self.dims, type(self).__name__)

    def forward(self, input: Tensor) -> Tensor:
        if input.ndim not in (self.dims + 1, self.dims + 2):
            raise ValueError(
                f"{type(self).__name__}: expected a {self.dims + 1}-D or {self.dims + 2}-D "
                f"input, got shape {tuple(input.shape)}"
            )
        return pad(input, self.padding, self.mode)

    def extra_repr(self) -> str:
        return f"{self.padding}"


class _ConstantPad(_Pad):
    def __init__(self, padding: Any, value: float) -> None:
        super().__init__(padding)
        self.value = value

    def forward(self, input: Tensor) -> Tensor:
        return pad(input, self.padding, "constant", self.value)

    def extra_repr(self) -> str:
        return f"padding={self.padding}, value={self.value}"


class ConstantPad1d(_ConstantPad):
    """Pad the last dim with ``value``: ``padding`` an int or ``(left, right)``."""

    dims = 1


class ConstantPad2d(_ConstantPad):
    """Pad the last two dims with ``value``: ``padding`` an int or ``(left, right, top,
    bottom)``."""


class ZeroPad1d(ConstantPad1d):
    """Pad the last dim with zeros: ``padding`` an int or ``(left, right)``."""

    def __init__(self, padding: Any) -> None:
        super().__init__(padding, 0.0)

    def extra_repr(self) -> str:
        return f"{self.padding}"


class ZeroPad2d(ConstantPad2d):
    """Pad the last two dims with zeros: ``padding`` an int or ``(left, right, top,
    bottom)``."""

    def __init__(self, padding: Any) -> None:
        super().__init__(padding, 0.0)

    def extra_repr(self) -> str:
        return f"{self.padding}"


class ReflectionPad1d(_Pad):
    """Pad the last dim with its reflection (edge not repeated); each width must be smaller
    than the dim."""

    mode, dims = "reflect", 1


class ReflectionPad2d(_Pad):
    """Pad the last two dims with their reflection (edge not repeated)."""

    mode, dims = "reflect", 2


class ReplicationPad1d(_Pad):
    """Pad the last dim by repeating its edge values."""

    mode, dims = "replicate", 1


class ReplicationPad2d(_Pad):
    """Pad the last two dims by repeating their edge values."""

    mode, dims = "replicate", 2


class ConstantPad3d(_ConstantPad):
    """Pad the last three dims with ``value``: ``padding`` an int or ``(left, right, top,
    bottom, front, back)``."""

    dims = 3


class ZeroPad3d(ConstantPad3d):
    """Pad the last three dims with zeros: ``padding`` an int or a 6-tuple."""

    def __init__(self, padding: Any) -> None:
        super().__init__(padding, 0.0)

    def extra_repr(self) -> str:
        return f"{self.padding}"


class ReflectionPad3d(_Pad):
    """Pad the last three dims with their reflection (edge not repeated)."""

    mode, dims = "reflect", 3


class ReplicationPad3d(_Pad):
    """Pad the last three dims by repeating their edge values."""

    mode, dims = "replicate", 3


class CircularPad1d(_Pad):
    """Pad the last dim by wrapping around: ``padding`` an int or ``(left, right)``."""

    mode, dims = "circular", 1


class CircularPad2d(_Pad):
    """Pad the last two dims by wrapping around: ``padding`` an int or a 4-tuple."""

    mode, dims = "circular", 2


class CircularPad3d(_Pad):
    """Pad the last three dims by wrapping around: ``padding`` an int or a 6-tuple."""

    mode, dims = "circular", 3
