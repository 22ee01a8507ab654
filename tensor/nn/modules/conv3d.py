"""``Conv3d`` and ``ConvTranspose3d``: learned convolutions over volumes."""

from __future__ import annotations

from typing import Any

from dtrain._tensor.nn.functional.conv import PADDING_MODES
from dtrain._tensor.nn.functional.conv_nd import (
    conv3d,
    conv_padding,
    conv_transpose3d,
    ntuple,
)
from dtrain._tensor.nn.modules.conv import _ConvNd, channels
from dtrain._tensor.nn.modules.conv_transpose import _ConvTransposeNd
from dtrain._tensor.tensor import Tensor


class Conv3d(_ConvNd):
    """3-D convolution over ``(N, C, D, H, W)`` (or unbatched ``(C, D, H, W)``) input; see
    ``functional.conv3d``. ``Conv2d``'s arguments with a 3-tuple (or an int) each, and the
    same initialisation: ``weight`` of shape ``(out_channels, in_channels / groups, kd, kh,
    kw)``, ``bias`` of shape ``(out_channels,)``.

    Raises:
        TypeError: a size that is not an integer.
        ValueError: a bad size, padding or mode, or channels not divisible by ``groups``.
    """

    _conv = staticmethod(conv3d)

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
        where = "Conv3d"
        in_channels, out_channels, groups = channels(where, in_channels, out_channels, groups)
        if padding_mode not in PADDING_MODES:
            raise ValueError(
                f"{where}: padding_mode must be one of {list(PADDING_MODES)}, got {padding_mode!r}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = ntuple(kernel_size, 3, "kernel_size", where, 1)
        self.stride = ntuple(stride, 3, "stride", where, 1)
        self.dilation = ntuple(dilation, 3, "dilation", where, 1)
        # Checks the padding (and 'same' with a stride) now, not at the first forward.
        pads = conv_padding(padding, self.kernel_size, self.stride, self.dilation, where)
        self.padding = padding if isinstance(padding, str) else tuple(lo for lo, _ in pads)
        # F.pad's order (last dim first), for padding_mode.
        self._pad_for_mode = tuple(p for pair in reversed(pads) for p in pair)
        self.groups, self.padding_mode = groups, padding_mode
        self._make_parameters(in_channels, out_channels, bias, device, dtype)


class ConvTranspose3d(_ConvTransposeNd):
    """3-D transposed convolution over ``(N, C, D, H, W)`` (or ``(C, D, H, W)``) input; see
    ``functional.conv_transpose3d``. ``weight`` is ``(in_channels, out_channels / groups, kd,
    kh, kw)``; ``forward(input, output_size=None)`` picks the output padding that gives
    ``output_size``, as PyTorch."""

    dims = 3

    def _tuple(self, value: Any, name: str, minimum: int) -> tuple:
        return ntuple(value, 3, name, type(self).__name__, minimum)

    def forward(self, input: Tensor, output_size: Any = None) -> Tensor:
        return conv_transpose3d(
            input,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self._output_padding(input, output_size),
            self.groups,
            self.dilation,
        )
