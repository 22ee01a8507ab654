"""``Conv2d`` and ``Conv1d``: learned convolution layers."""

from __future__ import annotations

import math
from typing import Any

from dtrain._tensor.creation import empty, size_argument
from dtrain._tensor.nn import init
from dtrain._tensor.nn.functional.conv import PADDING_MODES, _conv_padding, _pair, conv2d
from dtrain._tensor.nn.functional.conv_pool1d import conv1d, single
from dtrain._tensor.nn.functional.padding import pad
from dtrain._tensor.nn.module import Module
from dtrain._tensor.parameter import Parameter
from dtrain._tensor.tensor import Tensor


def channels(where: str, in_channels: Any, out_channels: Any, groups: Any) -> tuple:
    """A convolution layer's ``(in_channels, out_channels, groups)`` as ints, checked: both
    channel counts divisible by ``groups``.

    Raises:
        TypeError: a count that is not an integer.
        ValueError: a count below 1, or channels ``groups`` does not divide.
    """
    groups = size_argument(groups, "groups", where, 1)
    in_channels = size_argument(in_channels, "in_channels", where, 1)
    out_channels = size_argument(out_channels, "out_channels", where, 1)
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if value % groups:
            raise ValueError(f"{where}: {name}={value} must be divisible by groups={groups}")
    return in_channels, out_channels, groups


class _ConvNd(Module):
    """What Conv1d, Conv2d and Conv3d share once each has parsed its arguments: the
    parameters and their initialisation, ``forward`` through ``_conv`` (the functional op of
    its dimension, after ``padding_mode``'s explicit padding) and ``extra_repr``."""

    _conv: Any = None  # functional.conv1d / conv2d / conv3d, as a staticmethod

    def _make_parameters(
        self, in_channels: int, out_channels: int, bias: bool, device: Any, dtype: Any
    ) -> None:
        """``weight`` ``(out, in / groups, *kernel_size)`` and ``bias``, then initialised."""
        self.weight = Parameter(
            empty(
                (out_channels, in_channels // self.groups, *self.kernel_size),
                dtype=dtype,
                device=device,
            )
        )
        if bias:
            self.bias = Parameter(empty(out_channels, dtype=dtype, device=device))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw fresh parameters with PyTorch's default initialisation."""
        # a=√5 gives bound 1/√fan_in: PyTorch's long-standing default for conv layers.
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input: Tensor) -> Tensor:
        if self.padding_mode != "zeros":
            padded = pad(input, self._pad_for_mode, mode=self.padding_mode)
            return self._conv(
                padded, self.weight, self.bias, self.stride, 0, self.dilation, self.groups
            )
        return self._conv(
            input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )

    def extra_repr(self) -> str:
        dims = len(self.kernel_size)
        text = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}"
        )
        if self.padding != (0,) * dims:
            text += f", padding={self.padding}"
        if self.dilation != (1,) * dims:
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        if self.padding_mode != "zeros":
            text += f", padding_mode={self.padding_mode}"
        return text


class Conv2d(_ConvNd):
    """2-D convolution over ``(N, C, H, W)`` (or unbatched ``(C, H, W)``) input.

    Parameters are ``weight`` of shape ``(out_channels, in_channels / groups, kh, kw)`` and
    ``bias`` of shape ``(out_channels,)`` (None when ``bias=False``), initialised as in
    PyTorch: ``kaiming_uniform_(weight, a=√5)`` and bias from U(-1/√fan_in, 1/√fan_in).

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
        kernel_size: an int or ``(kh, kw)``.
        stride: an int or ``(sh, sw)``.
        padding: an int, a pair, ``"valid"`` or ``"same"`` (stride 1 only).
        dilation: an int or ``(dh, dw)``.
        groups: split channels into this many independent convolutions; must divide both
            ``in_channels`` and ``out_channels``.
        bias: whether to learn an additive bias.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``.
        device: where the parameters live.
        dtype: the parameters' float dtype (float32 by default).

    Raises:
        TypeError: a size that is not an integer.
        ValueError: a bad size, padding or mode, or channels not divisible by ``groups``.
    """

    _conv = staticmethod(conv2d)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        where = "Conv2d"
        in_channels, out_channels, groups = channels(where, in_channels, out_channels, groups)
        if padding_mode not in PADDING_MODES:
            raise ValueError(
                f"{where}: padding_mode must be one of {list(PADDING_MODES)}, got {padding_mode!r}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _pair(kernel_size, "kernel_size", where, 1)
        self.stride = _pair(stride, "stride", where, 1)
        self.dilation = _pair(dilation, "dilation", where, 1)
        # Checks the padding (and 'same' with a stride) now, not at the first forward.
        top, bottom, left, right = _conv_padding(
            padding, self.kernel_size, self.stride, self.dilation, where
        )
        self.padding = padding if isinstance(padding, str) else (top, left)
        self._pad_for_mode = (left, right, top, bottom)  # F.pad's order, for padding_mode
        self.groups = groups
        self.padding_mode = padding_mode
        self._make_parameters(in_channels, out_channels, bias, device, dtype)


class Conv1d(_ConvNd):
    """1-D convolution over ``(N, C, L)`` (or unbatched ``(C, L)``) input: ``Conv2d``'s
    arguments with one int each (or a 1-tuple); PyTorch's default initialisation."""

    _conv = staticmethod(conv1d)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        where = "Conv1d"
        in_channels, out_channels, groups = channels(where, in_channels, out_channels, groups)
        if padding_mode not in PADDING_MODES:
            raise ValueError(
                f"{where}: padding_mode must be one of {list(PADDING_MODES)}, got {padding_mode!r}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = (
            _pair(single(kernel_size, "kernel_size", where), "kernel_size", where, 1)[0],
        )
        self.stride = (_pair(single(stride, "stride", where), "stride", where, 1)[0],)
        self.dilation = (_pair(single(dilation, "dilation", where), "dilation", where, 1)[0],)
        _, _, left, right = _conv_padding(
            single(padding, "padding", where),
            (1, *self.kernel_size),
            (1, *self.stride),
            (1, *self.dilation),
            where,
        )
        self.padding = padding if isinstance(padding, str) else (left,)
        self._pad_for_mode = (left, right)
        self.groups, self.padding_mode = groups, padding_mode
        self._make_parameters(in_channels, out_channels, bias, device, dtype)
