"""Transposed convolution, ``unfold`` and ``fold``: conv2d's im2col and col2im run the
other way round.

A transposed convolution is the gradient of ``conv2d`` with respect to its input: forward
multiplies the input by the transposed weight into columns and adds them onto the output
(col2im; at stride 1 with many channels, a full convolution instead); backward is an
ordinary convolution of the output gradient (im2col + GEMM), whose columns also give the
weight gradient. Each product is one GEMM per group over the whole batch, on the column
layouts of ``conv_columns``. ``unfold`` is the im2col copy itself and ``fold``
its adjoint, each the other's backward.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain._tensor.amp.cast import autocast_inputs
from dtrain._tensor.autograd.op import Op
from dtrain._tensor.nn.functional.conv import _check_float, _pair, col2im, im2col
from dtrain._tensor.nn.functional.conv_columns import (
    add_columns,
    columns,
    drop_surplus,
    finite,
    from_image,
    full_convolution,
    geometry,
    has_surplus,
    kernel_from_matrix,
    kernel_matrix,
    kernel_product,
    product,
    product_t,
    to_image,
)
from dtrain._tensor.nn.functional.conv_pool1d import single
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.backend import get_array_module


class ConvTranspose2d(Op):
    reads_inputs = True

    def forward(
        self,
        x: Any,
        w: Any,
        b: Any,
        stride: tuple,
        padding: tuple,
        out_size: tuple,
        dilation: tuple,
        groups: int,
    ) -> Any:
        xp = get_array_module(x)
        n = x.shape[0]
        (ph, pw), out_channels = padding, groups * w.shape[1]
        # The convolution this is the adjoint of maps out_size to (oh, ow) >= (h, w): larger
        # only when output_padding >= stride (allowed below the dilation).
        shape, pads = (n, out_channels, *out_size), (ph, ph, pw, pw)
        g = geometry(xp, shape, w.shape[2:], stride, pads, dilation, groups)
        self.flat = from_image(x, g)  # x in the columns' position layout, zero-extended
        self.kernel, self.weight_shape, self.geometry = kernel_matrix(w, g), w.shape, g
        out = None
        # The full convolution's columns grow with the input's channels: only where the
        # output has as many (else col2im's adds take less memory).
        if g.last and x.shape[2:] == (g.oh, g.ow) and x.shape[1] <= out_channels:
            out = full_convolution(x, w, g)
        if out is None:
            spread = product_t(self.kernel, self.flat, g)
            if has_surplus(g) and not finite(self.kernel):  # inf * 0 in a surplus column
                spread = drop_surplus(spread, g)
            out = add_columns(spread, g)
        if b is not None:
            out += b.reshape(1, -1, 1, 1)
        self.x_shape = x.shape
        return out

    def backward(self, grad: Any) -> tuple:
        need_x, need_w, need_b = self.needs_input_grad
        g = self.geometry
        grad_x = grad_w = grad_b = None
        if need_x or need_w:
            cols = columns(grad, g)  # the im2col copy
        if need_w:
            grad_w = kernel_product(self.flat, cols, g)
            if has_surplus(g) and not finite(grad_w):  # inf * 0 in a surplus window
                grad_w = kernel_product(self.flat, drop_surplus(cols, g), g)
            grad_w = kernel_from_matrix(grad_w, g, self.weight_shape)
        if need_x:
            grad_x = to_image(product(self.kernel, cols, g), g, self.x_shape)
        if need_b:
            grad_b = grad.sum(axis=(0, 2, 3))
        return grad_x, grad_w, grad_b


def _check_args(where: str, input: Tensor, weight: Tensor, bias: Tensor | None) -> None:
    for name, t in (("input", input), ("weight", weight)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{where}: {name} must be a Tensor, got {type(t).__name__}")
    if bias is not None and not isinstance(bias, Tensor):
        raise TypeError(f"{where}: bias must be a Tensor or None, got {type(bias).__name__}")
    _check_float(where, input, weight, bias)


def conv_transpose2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: Any = 1,
    padding: Any = 0,
    output_padding: Any = 0,
    groups: int = 1,
    dilation: Any = 1,
) -> Tensor:
    """2-D transposed convolution ("deconvolution"): the gradient of ``conv2d`` with respect
    to its input, PyTorch's argument order (``groups`` before ``dilation``).

    Args:
        input: ``(N, C_in, H, W)`` or unbatched ``(C_in, H, W)``.
        weight: ``(C_in, out_channels / groups, kh, kw)``.
        bias: ``(out_channels,)`` or None.
        stride, padding, dilation: ints or pairs, those of the convolution it transposes.
        output_padding: extra rows/columns at the bottom/right of the output; each must be
            smaller than the stride or the dilation.
        groups: split the channels into this many independent convolutions.

    Returns:
        ``(N, out_channels, (H - 1)·sh - 2·ph + dh·(kh - 1) + oph + 1, ...)``.

    Raises:
        TypeError: non-tensor or non-float arguments, or mismatched dtypes.
        ValueError: shapes that do not fit, or bad stride/padding/output_padding/groups.
    """
    where = "conv_transpose2d"
    _check_args(where, input, weight, bias)
    if input.ndim not in (3, 4):
        raise ValueError(
            f"{where}: expected a 4-D input (batch, channels, height, width) or a 3-D "
            f"unbatched one, got shape {tuple(input.shape)}"
        )
    if weight.ndim != 4:
        raise ValueError(
            f"{where}: weight must be 4-D (in_channels, out_channels/groups, kh, kw), got "
            f"shape {tuple(weight.shape)}"
        )
    input, weight, bias = autocast_inputs("lower", input, weight, bias)
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.dtype != input.dtype:
            raise TypeError(
                f"{where}: input is {input.dtype} but {name} is {t.dtype}; convert one with "
                f".to({name}.dtype) so both match"
            )
    if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"{where}: groups must be a positive int, got {groups!r}")
    groups = int(groups)
    in_channels, cout_g, kh, kw = weight.shape
    if input.shape[-3] != in_channels:
        raise ValueError(
            f"{where}: input has {input.shape[-3]} channels but weight {tuple(weight.shape)} "
            f"expects {in_channels} (weight's dim 0)"
        )
    if in_channels % groups:
        raise ValueError(
            f"{where}: weight's {in_channels} input channels are not divisible by groups={groups}"
        )
    out_channels = cout_g * groups
    if bias is not None and tuple(bias.shape) != (out_channels,):
        raise ValueError(
            f"{where}: bias must have shape ({out_channels},) to match weight shape "
            f"{tuple(weight.shape)} and groups={groups}, got {tuple(bias.shape)}"
        )
    stride = _pair(stride, "stride", where, 1)
    padding = _pair(padding, "padding", where, 0)
    output_padding = _pair(output_padding, "output_padding", where, 0)
    dilation = _pair(dilation, "dilation", where, 1)
    for a in (0, 1):
        if output_padding[a] >= max(stride[a], dilation[a]):
            raise ValueError(
                f"{where}: output_padding {output_padding} must be smaller than either the "
                f"stride {stride} or the dilation {dilation} in each dim"
            )
    size = input.shape[-2:]
    out_size = tuple(
        (size[a] - 1) * stride[a]
        - 2 * padding[a]
        + dilation[a] * ((kh, kw)[a] - 1)
        + output_padding[a]
        + 1
        for a in (0, 1)
    )
    if min(out_size) < 1:
        raise ValueError(
            f"{where}: the output size {out_size} of input {tuple(size)} with kernel "
            f"{(kh, kw)}, stride {stride}, padding {padding} is not positive; use less padding"
        )
    unbatched = input.ndim == 3
    if unbatched:
        input = input.unsqueeze(0)
    out = ConvTranspose2d.apply(
        input,
        weight,
        bias,
        stride=stride,
        padding=padding,
        out_size=out_size,
        dilation=dilation,
        groups=groups,
    )
    return out.squeeze(0) if unbatched else out


def conv_transpose1d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: Any = 1,
    padding: Any = 0,
    output_padding: Any = 0,
    groups: int = 1,
    dilation: Any = 1,
) -> Tensor:
    """1-D transposed convolution of ``(N, C_in, L)`` (or ``(C_in, L)``) input with a
    ``(C_in, out / groups, k)`` weight: ``conv_transpose2d`` on a unit height."""
    where = "conv_transpose1d"
    if not isinstance(input, Tensor) or input.ndim not in (2, 3):
        shape = tuple(input.shape) if isinstance(input, Tensor) else type(input).__name__
        raise ValueError(
            f"{where}: expected a 3-D input (batch, channels, length) or a 2-D unbatched one, "
            f"got {shape}"
        )
    if not isinstance(weight, Tensor) or weight.ndim != 3:
        shape = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise ValueError(f"{where}: weight must be 3-D (in, out / groups, k), got {shape}")
    out = conv_transpose2d(
        input.unsqueeze(-2),
        weight.unsqueeze(-2),
        bias,
        (1, single(stride, "stride", where)),
        (0, single(padding, "padding", where)),
        (0, single(output_padding, "output_padding", where)),
        groups,
        (1, single(dilation, "dilation", where)),
    )
    return out.squeeze(-2)


class Unfold(Op):
    """im2col: ``(N, C, H, W)`` → ``(N, C·kh·kw, L)``."""

    def forward(self, x: Any, kernel: tuple, stride: tuple, padding: tuple, dilation: tuple) -> Any:
        windows = im2col(x, kernel, stride, padding, dilation)
        n, c, kh, kw, oh, ow = windows.shape
        self.shape, self.geometry = x.shape, (kernel, stride, padding, dilation, oh, ow)
        return windows.reshape(n, c * kh * kw, oh * ow)

    def backward(self, grad: Any) -> tuple:
        (kh, kw), stride, padding, dilation, oh, ow = self.geometry
        n, c = self.shape[:2]
        cols = grad.reshape(n, c, kh, kw, oh, ow)
        return (col2im(cols, self.shape, stride, padding, dilation),)


class Fold(Op):
    """col2im: ``(N, C·kh·kw, L)`` → ``(N, C, H, W)``, overlapping windows summed."""

    def forward(
        self,
        cols: Any,
        size: tuple,
        kernel: tuple,
        stride: tuple,
        padding: tuple,
        dilation: tuple,
        blocks: tuple,
    ) -> Any:
        n, ck, _ = cols.shape
        c = ck // (kernel[0] * kernel[1])
        self.geometry = (kernel, stride, padding, dilation, cols.shape)
        split = cols.reshape(n, c, kernel[0], kernel[1], *blocks)
        return col2im(split, (n, c, *size), stride, padding, dilation)

    def backward(self, grad: Any) -> tuple:
        kernel, stride, padding, dilation, shape = self.geometry
        return (im2col(grad, kernel, stride, padding, dilation).reshape(shape),)


def _fold_geometry(
    where: str, kernel_size: Any, dilation: Any, padding: Any, stride: Any
) -> tuple[tuple, tuple, tuple, tuple]:
    kernel = _pair(kernel_size, "kernel_size", where, 1)
    dilation = _pair(dilation, "dilation", where, 1)
    ph, pw = _pair(padding, "padding", where, 0)
    stride = _pair(stride, "stride", where, 1)
    return kernel, dilation, (ph, ph, pw, pw), stride


def _blocks(where: str, size: tuple, kernel: tuple, dilation: tuple, pads: tuple, stride: tuple):
    blocks = tuple(
        (size[a] + pads[2 * a] + pads[2 * a + 1] - dilation[a] * (kernel[a] - 1) - 1) // stride[a]
        + 1
        for a in (0, 1)
    )
    if min(blocks) < 1:
        raise ValueError(
            f"{where}: spatial size {tuple(size)} with padding {pads[::2]} is too small for "
            f"kernel {kernel} with dilation {dilation}; use a smaller kernel or more padding"
        )
    return blocks


def unfold(
    input: Tensor, kernel_size: Any, dilation: Any = 1, padding: Any = 0, stride: Any = 1
) -> Tensor:
    """Extract sliding blocks (im2col): ``(N, C, H, W)`` → ``(N, C·kh·kw, L)``, ``L`` the
    number of blocks, each column one block in ``(C, kh, kw)`` order; unbatched ``(C, H,
    W)`` gives ``(C·kh·kw, L)``."""
    where = "unfold"
    if not isinstance(input, Tensor) or input.ndim not in (3, 4):
        shape = tuple(input.shape) if isinstance(input, Tensor) else type(input).__name__
        raise ValueError(
            f"{where}: expected a 4-D (N, C, H, W) or 3-D (C, H, W) input, got {shape}"
        )
    kernel, dilation, pads, stride = _fold_geometry(where, kernel_size, dilation, padding, stride)
    _blocks(where, tuple(input.shape[-2:]), kernel, dilation, pads, stride)
    unbatched = input.ndim == 3
    x = input.unsqueeze(0) if unbatched else input
    out = Unfold.apply(x, kernel=kernel, stride=stride, padding=pads, dilation=dilation)
    return out.squeeze(0) if unbatched else out


def fold(
    input: Tensor,
    output_size: Any,
    kernel_size: Any,
    dilation: Any = 1,
    padding: Any = 0,
    stride: Any = 1,
) -> Tensor:
    """Combine sliding blocks into an image (col2im), summing where blocks overlap:
    ``(N, C·kh·kw, L)`` → ``(N, C, *output_size)``; unbatched ``(C·kh·kw, L)`` gives
    ``(C, *output_size)``. The adjoint of ``unfold``."""
    where = "fold"
    if not isinstance(input, Tensor) or input.ndim not in (2, 3):
        shape = tuple(input.shape) if isinstance(input, Tensor) else type(input).__name__
        raise ValueError(
            f"{where}: expected a 3-D (N, C*kh*kw, L) or 2-D (C*kh*kw, L) input, got {shape}"
        )
    kernel, dilation, pads, stride = _fold_geometry(where, kernel_size, dilation, padding, stride)
    size = _pair(output_size, "output_size", where, 1)
    blocks = _blocks(where, size, kernel, dilation, pads, stride)
    ck, length = input.shape[-2:]
    if ck % (kernel[0] * kernel[1]):
        raise ValueError(
            f"{where}: input's dim {input.ndim - 2} is {ck}, not divisible by the kernel's "
            f"{kernel[0]} x {kernel[1]} = {kernel[0] * kernel[1]} positions"
        )
    if length != blocks[0] * blocks[1]:
        raise ValueError(
            f"{where}: input has {length} blocks but output_size {size} with kernel {kernel}, "
            f"dilation {dilation}, padding {pads[::2]}, stride {stride} makes "
            f"{blocks[0]} x {blocks[1]} = {blocks[0] * blocks[1]}"
        )
    unbatched = input.ndim == 2
    x = input.unsqueeze(0) if unbatched else input
    out = Fold.apply(
        x,
        size=size,
        kernel=kernel,
        stride=stride,
        padding=pads,
        dilation=dilation,
        blocks=blocks,
    )
    return out.squeeze(0) if unbatched else out


__all__ = ["conv_transpose1d", "conv_transpose2d", "fold", "unfold"]
