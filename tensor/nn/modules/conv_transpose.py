"""``ConvTranspose2d``, ``ConvTranspose1d``, ``Fold`` and ``Unfold``."""

from __future__ import annotations

from typing import Any

from dtrain._tensor.creation import empty
from dtrain._tensor.nn.functional.conv import _pair
from dtrain._tensor.nn.functional.conv_pool1d import single
from dtrain._tensor.nn.functional.conv_transpose import (
    conv_transpose1d,
    conv_transpose2d,
    fold,
    unfold,
)
from dtrain._tensor.nn.module import Module
from dtrain._tensor.nn.modules.conv import Conv2d, channels
from dtrain._tensor.parameter import Parameter
from dtrain._tensor.tensor import Tensor


class _ConvTransposeNd(Module):
    dims = 2

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        output_padding: Any = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: Any = 1,
        padding_mode: str = "zeros",
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        where = type(self).__name__
        in_channels, out_channels, groups = channels(where, in_channels, out_channels, groups)
        if padding_mode != "zeros":
            raise ValueError(
                f"{where}: only padding_mode='zeros' is supported (as in PyTorch), got "
                f"{padding_mode!r}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = self._tuple(kernel_size, "kernel_size", 1)
        self.stride = self._tuple(stride, "stride", 1)
        self.padding = self._tuple(padding, "padding", 0)
        self.output_padding = self._tuple(output_padding, "output_padding", 0)
        self.dilation = self._tuple(dilation, "dilation", 1)
        for a in range(self.dims):
            if self.output_padding[a] >= max(self.stride[a], self.dilation[a]):
                raise ValueError(
                    f"{where}: output_padding {self.output_padding} must be smaller than "
                    f"either the stride {self.stride} or the dilation {self.dilation}"
                )
        self.groups, self.padding_mode = groups, padding_mode
        self.weight = Parameter(
            empty(
                (in_channels, out_channels // groups, *self.kernel_size),
                dtype=dtype,
                device=device,
            )
        )
        if bias:
            self.bias = Parameter(empty(out_channels, dtype=dtype, device=device))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    # As PyTorch: kaiming_uniform_(a=√5) with the fan-in of weight's dim 1 (out / groups).
    reset_parameters = Conv2d.reset_parameters

    def _tuple(self, value: Any, name: str, minimum: int) -> tuple:
        where = type(self).__name__
        if self.dims == 1:
            return (_pair(single(value, name, where), name, where, minimum)[0],)
        return _pair(value, name, where, minimum)

    def _output_padding(self, input: Tensor, output_size: Any) -> tuple:
        """The output padding that gives ``output_size`` (PyTorch's rule)."""
        if output_size is None:
            return self.output_padding
        where = type(self).__name__
        size = tuple(int(s) for s in output_size)
        if len(size) == self.dims + 2 or (
            len(size) == self.dims + 1 and input.ndim == self.dims + 1
        ):
            size = size[-self.dims :]
        if len(size) != self.dims:
            raise ValueError(
                f"{where}: output_size {tuple(output_size)} must have {self.dims} entries (or "
                f"{self.dims + 2} with batch and channels)"
            )
        padding = []
        for a in range(self.dims):
            smallest = (
                (input.shape[input.ndim - self.dims + a] - 1) * self.stride[a]
                - 2 * self.padding[a]
                + self.dilation[a] * (self.kernel_size[a] - 1)
                + 1
            )
            largest = smallest + self.stride[a] - 1
            if not smallest <= size[a] <= largest:
                raise ValueError(
                    f"{where}: requested output_size {size} is not possible; dim {a} must be "
                    f"between {smallest} and {largest} for input {tuple(input.shape)}"
                )
            padding.append(size[a] - smallest)
        return tuple(padding)

    def extra_repr(self) -> str:
        text = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}"
        )
        zeros = (0,) * self.dims
        if self.padding != zeros:
            text += f", padding={self.padding}"
        if self.dilation != (1,) * self.dims:
            text += f", dilation={self.dilation}"
        if self.output_padding != zeros:
            text += f", output_padding={self.output_padding}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        return text


class ConvTranspose2d(_ConvTransposeNd):
    """2-D transposed convolution over ``(N, C, H, W)`` (or ``(C, H, W)``) input; see
    ``functional.conv_transpose2d``. ``weight`` is ``(in_channels, out_channels / groups,
    kh, kw)``; ``forward(input, output_size=None)`` picks the output padding that gives
    ``output_size``, as PyTorch."""

    dims = 2

    def forward(self, input: Tensor, output_size: Any = None) -> Tensor:
        return conv_transpose2d(
            input,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self._output_padding(input, output_size),
            self.groups,
            self.dilation,
        )


class ConvTranspose1d(_ConvTransposeNd):
    """1-D transposed convolution over ``(N, C, L)`` (or ``(C, L)``) input: ``ConvTranspose2d``
    on a unit height, with one int (or a 1-tuple) per argument."""

    dims = 1

    def forward(self, input: Tensor, output_size: Any = None) -> Tensor:
        return conv_transpose1d(
            input,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self._output_padding(input, output_size),
            self.groups,
            self.dilation,
        )


class Unfold(Module):
    """Extract sliding blocks: ``(N, C, H, W)`` → ``(N, C·kh·kw, L)``; see
    ``functional.unfold``."""

    def __init__(
        self, kernel_size: Any, dilation: Any = 1, padding: Any = 0, stride: Any = 1
    ) -> None:
        super().__init__()
        self.kernel_size, self.dilation = kernel_size, dilation
        self.padding, self.stride = padding, stride

    def forward(self, input: Tensor) -> Tensor:
        return unfold(input, self.kernel_size, self.dilation, self.padding, self.stride)

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, dilation={self.dilation}, padding={self.padding}, "
            f"stride={self.stride}"
        )


class Fold(Module):
    """Combine sliding blocks into ``(N, C, *output_size)``, summing overlaps; see
    ``functional.fold``."""

    def __init__(
        self,
        output_size: Any,
        kernel_size: Any,
        dilation: Any = 1,
        padding: Any = 0,
        stride: Any = 1,
    ) -> None:
        super().__init__()
        self.output_size, self.kernel_size = output_size, kernel_size
        self.dilation, self.padding, self.stride = dilation, padding, stride

    def forward(self, input: Tensor) -> Tensor:
        return fold(
            input, self.output_size, self.kernel_size, self.dilation, self.padding, self.stride
        )

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, " + Unfold.extra_repr(self)
