"""1-D convolution and pooling: the 2-D ops on a unit height.

``(N, C, L)`` becomes ``(N, C, 1, L)``, the kernel ``(1, k)``, and the result is squeezed
back; values and gradients are those of ``conv2d`` / ``max_pool2d`` / ``avg_pool2d``.
"""

from __future__ import annotations

from typing import Any

from dtrain._tensor.nn.functional.conv import conv2d
from dtrain._tensor.nn.functional.pooling import avg_pool2d, max_pool2d
from dtrain._tensor.tensor import Tensor


def single(value: Any, name: str, where: str) -> Any:
    """An int or a 1-tuple of one → the int (other values pass on for the 2-D checks)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 1:
            raise ValueError(f"{where}: {name} must be an int or a 1-tuple, got {value!r}")
        return value[0]
    return value


def _check_rank(where: str, input: Tensor) -> None:
    if not isinstance(input, Tensor) or input.ndim not in (2, 3):
        shape = tuple(input.shape) if isinstance(input, Tensor) else type(input).__name__
        raise ValueError(
            f"{where}: expected a 3-D input (batch, channels, length) or a 2-D unbatched one, "
            f"got {shape}"
        )


def conv1d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
) -> Tensor:
    """1-D convolution of ``(N, C, L)`` (or ``(C, L)``) input with a ``(out, C / groups, k)``
    weight; ``padding`` is an int, a 1-tuple, ``"valid"`` or ``"same"``."""
    where = "conv1d"
    _check_rank(where, input)
    if not isinstance(weight, Tensor) or weight.ndim != 3:
        shape = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise ValueError(f"{where}: weight must be 3-D (out, in / groups, k), got {shape}")
    padding = single(padding, "padding", where)
    out = conv2d(
        input.unsqueeze(-2),
        weight.unsqueeze(-2),
        bias,
        (1, single(stride, "stride", where)),
        padding if isinstance(padding, str) else (0, padding),
        (1, single(dilation, "dilation", where)),
        groups,
    )
    return out.squeeze(-2)


def max_pool1d(
    input: Tensor,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> Any:
    """1-D max pooling (``stride`` defaults to the kernel); with ``return_indices``, the
    index of each maximum along the length."""
    where = "max_pool1d"
    _check_rank(where, input)
    stride = None if stride is None or stride == () else single(stride, "stride", where)
    out = max_pool2d(
        input.unsqueeze(-2),
        (1, single(kernel_size, "kernel_size", where)),
        None if stride is None else (1, stride),
        (0, single(padding, "padding", where)),
        (1, single(dilation, "dilation", where)),
        ceil_mode=ceil_mode,
        return_indices=return_indices,
    )
    if return_indices:  # the plane is one row high: the flat index is the position
        return out[0].squeeze(-2), out[1].squeeze(-2)
    return out.squeeze(-2)


def avg_pool1d(
    input: Tensor,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
) -> Tensor:
    """1-D average pooling (``stride`` defaults to the kernel)."""
    where = "avg_pool1d"
    _check_rank(where, input)
    stride = None if stride is None or stride == () else single(stride, "stride", where)
    kernel = single(kernel_size, "kernel_size", where)
    out = avg_pool2d(
        input.unsqueeze(-2),
        (1, kernel),
        None if stride is None else (1, stride),
        (0, single(padding, "padding", where)),
        ceil_mode,
        count_include_pad,
    )
    return out.squeeze(-2)


__all__ = ["avg_pool1d", "conv1d", "max_pool1d"]
