"""N-d convolution and transposed convolution as im2col + one batched matrix product;
``conv3d`` and ``conv_transpose3d`` are its 3-D forms.

The windows of the (padded) input are an ``as_strided`` view of shape
``(N, C, *kernel, *out)``; one copy makes them the columns ``(N, groups, C/groups · K, L)``
(``K`` the kernel's size, ``L`` the output positions) and one GEMM per image and group
multiplies them by the weight. Backward takes the weight gradient from the columns (kept
from forward when small, else copied again: conv.py's ``RECOMPUTE_BYTES``) and adds the
column gradient back onto the input (col2im) with one strided add per kernel position.
Depthwise ``conv3d`` on the CPU takes the tap route of ``conv_taps``. The transposed
convolution is the same pair run the other way round.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dtrain._tensor.amp.cast import autocast_inputs
from dtrain._tensor.autograd.grad_mode import is_grad_enabled
from dtrain._tensor.autograd.op import Op
from dtrain._tensor.nn.functional.conv import (
    _as_strided,
    _check_float,
    keeps_columns,
    weight_grad,
)
from dtrain._tensor.nn.functional.conv_taps import ConvTaps, use_taps
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.backend import get_array_module
from dtrain.runtime.linalg import matmul


def ntuple(value: Any, dims: int, name: str, where: str, minimum: int) -> tuple[int, ...]:
    """An int or ``dims`` ints → a ``dims``-tuple, each at least ``minimum``."""
    values = (value,) * dims if isinstance(value, (int, np.integer)) else value
    if (
        not isinstance(values, (tuple, list))
        or len(values) != dims
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values)
    ):
        raise TypeError(f"{where}: {name} must be an int or a {dims}-tuple of ints, got {value!r}")
    values = tuple(int(v) for v in values)
    if min(values) < minimum:
        raise ValueError(f"{where}: {name} must be >= {minimum}, got {value!r}")
    return values


def _padded(x: Any, pads: tuple) -> Any:
    """``x`` zero-padded by ``pads`` ((before, after) per spatial dim)."""
    if not any(lo or hi for lo, hi in pads):
        return x
    xp = get_array_module(x)
    shape = x.shape[:2] + tuple(s + lo + hi for s, (lo, hi) in zip(x.shape[2:], pads))
    out = xp.zeros(shape, dtype=x.dtype)
    out[(slice(None), slice(None)) + _inner(x.shape[2:], pads)] = x
    return out


def _inner(size: tuple, pads: tuple) -> tuple:  # the unpadded part
    return tuple(slice(lo, lo + s) for s, (lo, _) in zip(size, pads))


def out_size(size: tuple, kernel: tuple, stride: tuple, pads: tuple, dilation: tuple) -> tuple:
    return tuple(  # a convolution's output size per spatial dim
        (s + lo + hi - d * (k - 1) - 1) // st + 1
        for s, k, st, (lo, hi), d in zip(size, kernel, stride, pads, dilation)
    )


def im2col_nd(x: Any, kernel: tuple, stride: tuple, pads: tuple, dilation: tuple) -> Any:
    """The ``(N, C, *kernel, *out)`` windows of ``x`` zero-padded by ``pads``, as a view (of
    a padded copy when there is padding)."""
    padded = _padded(x, pads)
    dims = len(kernel)
    out = out_size(x.shape[2:], kernel, stride, pads, dilation)
    spatial = padded.strides[2:]
    return _as_strided(
        get_array_module(x),
        padded,
        padded.shape[:2] + tuple(kernel) + out,
        padded.strides[:2]
        + tuple(dilation[a] * spatial[a] for a in range(dims))
        + tuple(stride[a] * spatial[a] for a in range(dims)),
    )


def col2im_nd(cols: Any, shape: tuple, stride: tuple, pads: tuple, dilation: tuple) -> Any:
    """Add ``(N, C, *kernel, *out)`` columns back onto an image of ``shape`` (the adjoint of
    ``im2col_nd``): one strided add per kernel position, the padding cropped off."""
    xp = get_array_module(cols)
    dims = len(stride)
    kernel, out = cols.shape[2 : 2 + dims], cols.shape[2 + dims :]
    size = tuple(s + lo + hi for s, (lo, hi) in zip(shape[2:], pads))
    padded = xp.zeros(tuple(shape[:2]) + size, dtype=cols.dtype)
    for position in np.ndindex(*kernel):
        where = tuple(
            slice(p * d, p * d + st * (o - 1) + 1, st)
            for p, d, st, o in zip(position, dilation, stride, out)
        )
        padded[(slice(None), slice(None)) + where] += cols[(slice(None), slice(None)) + position]
    if size == tuple(shape[2:]):
        return padded
    return xp.ascontiguousarray(padded[(slice(None), slice(None)) + _inner(shape[2:], pads)])


def _spread(x: Any, size: tuple) -> Any:
    """``x`` zero-extended at the end of each spatial dim to ``size``."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    out = get_array_module(x).zeros(x.shape[:2] + tuple(size), dtype=x.dtype)
    out[(slice(None), slice(None)) + tuple(slice(0, s) for s in x.shape[2:])] = x
    return out


class ConvNd(Op):
    reads_inputs = True

    def forward(
        self,
        x: Any,
        w: Any,
        b: Any,
        stride: tuple,
        pads: tuple,
        dilation: tuple,
        groups: int,
        weight_grad: bool = True,
    ) -> Any:
        n, o = x.shape[0], w.shape[0]
        kernel = tuple(w.shape[2:])
        windows = im2col_nd(x, kernel, stride, pads, dilation)
        out = windows.shape[2 + len(kernel) :]
        og, k = o // groups, w.shape[1] * math.prod(kernel)
        cols = windows.reshape(n, groups, k, math.prod(out))  # the im2col copy
        weights = w.reshape(groups, og, k)
        result = matmul(weights, cols).reshape((n, o) + out)
        if b is not None:
            result += b.reshape((1, o) + (1,) * len(out))
        # Kept for the weight gradient, or made again from the input there (conv.py's
        # RECOMPUTE_BYTES: columns 27 times the input for a 3x3x3 kernel).
        self.cols = cols if keeps_columns(cols, x, weight_grad) else None
        self.x = x if weight_grad and self.cols is None else None
        self.weights, self.weight_shape = weights, w.shape
        self.geometry = (x.shape, stride, pads, dilation, out)
        return result

    def backward(self, grad: Any) -> tuple:
        need_x, need_w, need_b = self.needs_input_grad
        shape, stride, pads, dilation, out = self.geometry
        groups, og, k = self.weights.shape
        n, c = shape[:2]
        flat = grad.reshape(n, groups, og, math.prod(out))  # n may be 0: no -1
        grad_x = grad_w = grad_b = None
        if need_w:
            cols = self.cols
            if cols is None:
                kernel = tuple(self.weight_shape[2:])
                windows = im2col_nd(self.x, kernel, stride, pads, dilation)
                cols = windows.reshape(n, groups, k, math.prod(out))  # the im2col copy again
            grad_w = weight_grad(flat, cols).reshape(self.weight_shape)
            del cols
        if need_b:
            grad_b = grad.sum(axis=(0,) + tuple(range(2, grad.ndim)))
        if need_x:
            cols = matmul(self.weights.transpose(0, 2, 1), flat)
            cols = cols.reshape((n, c) + tuple(self.weight_shape[2:]) + out)
            grad_x = col2im_nd(cols, shape, stride, pads, dilation)
        return grad_x, grad_w, grad_b


class ConvTransposeNd(Op):
    reads_inputs = True

    def forward(
        self,
        x: Any,
        w: Any,
        b: Any,
        stride: tuple,
        pads: tuple,
        size: tuple,
        dilation: tuple,
        groups: int,
    ) -> Any:
        n, cin = x.shape[:2]
        cout_g, kernel = w.shape[1], tuple(w.shape[2:])
        # The convolution this is the adjoint of maps `size` to `inner` >= x's size (larger
        # only when output_padding >= stride, allowed below the dilation).
        inner = out_size(size, kernel, stride, pads, dilation)
        cin_g, k = cin // groups, cout_g * math.prod(kernel)
        weights = w.reshape(groups, cin_g, k)
        spread = _spread(x, inner).reshape(n, groups, cin_g, math.prod(inner))
        cols = matmul(weights.transpose(0, 2, 1), spread)
        cols = cols.reshape((n, groups * cout_g) + kernel + inner)
        out = col2im_nd(cols, (n, groups * cout_g) + tuple(size), stride, pads, dilation)
        if b is not None:
            out += b.reshape((1, -1) + (1,) * len(size))
        self.x, self.weights, self.weight_shape = x, weights, w.shape
        self.geometry = (stride, pads, dilation, inner)
        return out

    def backward(self, grad: Any) -> tuple:
        need_x, need_w, need_b = self.needs_input_grad
        (stride, pads, dilation, inner), weights = self.geometry, self.weights
        groups, cin_g, k = weights.shape
        n = grad.shape[0]
        grad_x = grad_w = grad_b = None
        if need_x or need_w:
            windows = im2col_nd(grad, tuple(self.weight_shape[2:]), stride, pads, dilation)
            cols = windows.reshape(n, groups, k, math.prod(inner))  # the im2col copy
        if need_w:
            spread = _spread(self.x, inner).reshape(n, groups, cin_g, math.prod(inner))
            grad_w = weight_grad(spread, cols).reshape(self.weight_shape)
        if need_x:
            full = matmul(weights, cols).reshape((n, groups * cin_g) + inner)
            if inner != tuple(self.x.shape[2:]):  # output_padding >= stride: crop
                crop = (slice(None), slice(None)) + tuple(slice(0, s) for s in self.x.shape[2:])
                full = get_array_module(grad).ascontiguousarray(full[crop])
            grad_x = full
        if need_b:
            grad_b = grad.sum(axis=(0,) + tuple(range(2, grad.ndim)))
        return grad_x, grad_w, grad_b


def _check(
    where: str, input: Tensor, weight: Tensor, bias: Tensor | None, dims: int, groups: Any
) -> tuple:
    for name, t in (("input", input), ("weight", weight)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{where}: {name} must be a Tensor, got {type(t).__name__}")
    if bias is not None and not isinstance(bias, Tensor):
        raise TypeError(f"{where}: bias must be a Tensor or None, got {type(bias).__name__}")
    if input.ndim not in (dims + 1, dims + 2):
        raise ValueError(
            f"{where}: expected a {dims + 2}-D input (batch, channels, *spatial) or a "
            f"{dims + 1}-D unbatched one, got shape {tuple(input.shape)}"
        )
    if weight.ndim != dims + 2:
        raise ValueError(f"{where}: weight must be {dims + 2}-D, got shape {tuple(weight.shape)}")
    _check_float(where, input, weight, bias)
    input, weight, bias = autocast_inputs("lower", input, weight, bias)
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.dtype != input.dtype:
            raise TypeError(
                f"{where}: input is {input.dtype} but {name} is {t.dtype}; convert one with "
                f".to({name}.dtype) so both match"
            )
    if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"{where}: groups must be a positive int, got {groups!r}")
    return input, weight, bias, int(groups)


def conv_padding(
    padding: Any, kernel: tuple, stride: tuple, dilation: tuple, where: str
) -> tuple[tuple[int, int], ...]:
    """``padding`` (an int, a tuple, ``"same"`` or ``"valid"``) → (before, after) per dim."""
    dims = len(kernel)
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * dims
        if padding != "same":
            raise ValueError(
                f"{where}: padding={padding!r} is not supported; use 'same', 'valid', an int "
                f"or a {dims}-tuple of ints"
            )
        if stride != (1,) * dims:
            raise ValueError(
                f"{where}: padding='same' needs stride 1, got stride={stride}; pass explicit "
                "padding for strided convolutions"
            )
        # Odd total padding puts the extra element at the end, as PyTorch does.
        totals = [d * (k - 1) for d, k in zip(dilation, kernel)]
        return tuple((t // 2, t - t // 2) for t in totals)
    return tuple((p, p) for p in ntuple(padding, dims, "padding", where, 0))


def conv3d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
) -> Tensor:
    """3-D convolution (cross-correlation, as in PyTorch) over a batch of volumes.

    Args:
        input: ``(N, C, D, H, W)``, or ``(C, D, H, W)`` unbatched.
        weight: ``(out_channels, C / groups, kd, kh, kw)``.
        bias: ``(out_channels,)`` or None.
        stride: an int or a 3-tuple.
        padding: an int, a 3-tuple, ``"valid"`` or ``"same"`` (stride 1 only).
        dilation: an int or a 3-tuple: spacing between kernel elements.
        groups: split the channels into this many independent convolutions.

    Returns:
        ``(N, out_channels, OD, OH, OW)`` (without ``N`` for unbatched input).

    Raises:
        TypeError: non-tensor or non-float arguments, or mismatched dtypes.
        ValueError: shapes that do not fit together, or bad stride/padding/dilation/groups.
    """
    where, dims = "conv3d", 3
    input, weight, bias, groups = _check(where, input, weight, bias, dims, groups)
    out_channels, per_group = weight.shape[:2]
    kernel = tuple(weight.shape[2:])
    channels = input.shape[-dims - 1]
    if channels != per_group * groups:
        raise ValueError(
            f"{where}: input has {channels} channels but weight expects {per_group * groups} "
            f"(weight shape {tuple(weight.shape)}, groups={groups})"
        )
    if out_channels % groups:
        raise ValueError(
            f"{where}: weight's {out_channels} output channels are not divisible by groups={groups}"
        )
    if bias is not None and tuple(bias.shape) != (out_channels,):
        raise ValueError(
            f"{where}: bias must have shape ({out_channels},) to match weight shape "
            f"{tuple(weight.shape)}, got {tuple(bias.shape)}"
        )
    stride = ntuple(stride, dims, "stride", where, 1)
    dilation = ntuple(dilation, dims, "dilation", where, 1)
    pads = conv_padding(padding, kernel, stride, dilation, where)
    size = tuple(input.shape[-dims:])
    if min(out_size(size, kernel, stride, pads, dilation)) < 1:
        raise ValueError(
            f"{where}: kernel {kernel} with dilation {dilation} is larger than the padded "
            f"input (input {size}, padding {padding!r}); use a smaller kernel or more padding"
        )
    unbatched = input.ndim == dims + 1
    if unbatched:
        input = input.unsqueeze(0)
    options = dict(stride=stride, pads=pads, dilation=dilation, groups=groups)
    backward = is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (input, weight, bias)
    )
    if use_taps(input._array, tuple(weight.shape), groups, backward):  # depthwise
        out = ConvTaps.apply(input, weight, bias, **options)
    else:
        out = ConvNd.apply(input, weight, bias, weight_grad=weight.requires_grad, **options)
    return out.squeeze(0) if unbatched else out


def conv_transpose3d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: Any = 1,
    padding: Any = 0,
    output_padding: Any = 0,
    groups: int = 1,
    dilation: Any = 1,
) -> Tensor:
    """3-D transposed convolution: the gradient of ``conv3d`` with respect to its input,
    PyTorch's argument order (``groups`` before ``dilation``).

    Args:
        input: ``(N, C_in, D, H, W)`` or unbatched ``(C_in, D, H, W)``.
        weight: ``(C_in, out_channels / groups, kd, kh, kw)``.
        bias: ``(out_channels,)`` or None.
        stride, padding, dilation: ints or 3-tuples, those of the convolution it transposes.
        output_padding: extra elements at the end of each output dim; each must be smaller
            than the stride or the dilation.
        groups: split the channels into this many independent convolutions.

    Returns:
        ``(N, out_channels, (D - 1)·sd - 2·pd + dd·(kd - 1) + opd + 1, ...)``.

    Raises:
        TypeError, ValueError: as ``conv3d``, and an ``output_padding`` too large.
    """
    where, dims = "conv_transpose3d", 3
    input, weight, bias, groups = _check(where, input, weight, bias, dims, groups)
    in_channels, cout_g = weight.shape[:2]
    kernel = tuple(weight.shape[2:])
    if input.shape[-dims - 1] != in_channels:
        raise ValueError(
            f"{where}: input has {input.shape[-dims - 1]} channels but weight "
            f"{tuple(weight.shape)} expects {in_channels} (weight's dim 0)"
        )
    if in_channels % groups:
        raise ValueError(
            f"{where}: weight's {in_channels} input channels are not divisible by groups={groups}"
        )
    if bias is not None and tuple(bias.shape) != (cout_g * groups,):
        raise ValueError(
            f"{where}: bias must have shape ({cout_g * groups},) to match weight shape "
            f"{tuple(weight.shape)} and groups={groups}, got {tuple(bias.shape)}"
        )
    stride = ntuple(stride, dims, "stride", where, 1)
    padding = ntuple(padding, dims, "padding", where, 0)
    output_padding = ntuple(output_padding, dims, "output_padding", where, 0)
    dilation = ntuple(dilation, dims, "dilation", where, 1)
    if any(op >= max(s, d) for op, s, d in zip(output_padding, stride, dilation)):
        raise ValueError(
            f"{where}: output_padding {output_padding} must be smaller than either the "
            f"stride {stride} or the dilation {dilation} in each dim"
        )
    size = tuple(
        (s - 1) * st - 2 * p + d * (k - 1) + op + 1
        for s, st, p, d, k, op in zip(
            input.shape[-dims:], stride, padding, dilation, kernel, output_padding
        )
    )
    if min(size) < 1:
        raise ValueError(
            f"{where}: the output size {size} of input {tuple(input.shape[-dims:])} with kernel "
            f"{kernel}, stride {stride}, padding {padding} is not positive; use less padding"
        )
    unbatched = input.ndim == dims + 1
    if unbatched:
        input = input.unsqueeze(0)
    out = ConvTransposeNd.apply(
        input,
        weight,
        bias,
        stride=stride,
        pads=tuple((p, p) for p in padding),
        size=size,
        dilation=dilation,
        groups=groups,
    )
    return out.squeeze(0) if unbatched else out


__all__ = ["conv3d", "conv_transpose3d"]
