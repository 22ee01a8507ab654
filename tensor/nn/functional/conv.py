"""2-D convolution as im2col + a batched matrix product.

Forward copies the (padded) input's windows into columns of shape
``(N, groups, C/groups · kh · kw, OH · OW)`` through an ``as_strided`` view (no Python loop
over pixels) and multiplies them by the weight in one batched matmul (a GEMM per image and
group, whose output is already in ``(N, C_out, OH, OW)`` order). Backward reuses the
columns for the weight gradient (one GEMM per group contracting batch and positions
together, after copying the batch axis next to the positions) and scatters the column
gradient back onto the padded input (col2im) with one strided add per kernel position.

On the CPU, when the horizontal stride is 1, each output row is computed over the full
padded width and the surplus columns are dropped afterwards: the windows then read whole
padded rows, which numpy copies several times faster than rows of ``OW`` elements, at the
cost of ``(kw - 1) · dw`` extra columns per row.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain._tensor.amp.cast import autocast_inputs
from dtrain._tensor.autograd.op import Op
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.backend import get_array_module
from dtrain.runtime.linalg import matmul

#: ``Conv2d``'s padding modes; the non-zero ones pad with ``functional.pad`` first.
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _pair(value: Any, name: str, where: str, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints → ``(h, w)``, each at least ``minimum``."""
    pair = (value, value) if isinstance(value, (int, np.integer)) else value
    if (
        not isinstance(pair, (tuple, list))
        or len(pair) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pair)
    ):
        raise TypeError(f"{where}: {name} must be an int or a pair of ints, got {value!r}")
    pair = (int(pair[0]), int(pair[1]))
    if min(pair) < minimum:
        raise ValueError(f"{where}: {name} must be >= {minimum}, got {value!r}")
    return pair


def _as_strided(xp: Any, array: Any, shape: tuple, strides: tuple) -> Any:
    return xp.lib.stride_tricks.as_strided(array, shape=shape, strides=strides)


def _check_float(where: str, *tensors: Tensor | None) -> None:
    for t in tensors:
        if t is not None and t._array.dtype.kind != "f":
            raise TypeError(
                f"{where}: expected floating-point tensors, got {t.dtype}; call .float() first"
            )


class Conv2d(Op):
    reads_inputs = True

    def forward(
        self,
        x: Any,
        w: Any,
        b: Any,
        stride: tuple,
        padding: tuple,
        dilation: tuple,
        groups: int,
    ) -> Any:
        xp = get_array_module(x)
        n, c, h, width = x.shape
        o, cg, kh, kw = w.shape
        (sh, sw), (dh, dw) = stride, dilation
        top, bottom, left, right = padding
        hp, wp = h + top + bottom, width + left + right
        oh = (hp - dh * (kh - 1) - 1) // sh + 1
        ow = (wp - dw * (kw - 1) - 1) // sw + 1
        # Rows over the whole padded width (see the module docstring); the last row's
        # windows then run (kw - 1) · dw elements past the padded input: a zero tail.
        wide = wp if (xp is np and sw == 1 and wp <= 2 * ow) else ow
        tail = (kw - 1) * dw if wide != ow else 0
        if wide != ow or top or bottom or left or right:
            buffer = xp.zeros(n * c * hp * wp + tail, dtype=x.dtype)
            padded = buffer[: n * c * hp * wp].reshape(n, c, hp, wp)
            padded[:, :, top : top + h, left : left + width] = x
            base = buffer if tail else padded
        else:
            base = padded = x
        s_n, s_c, s_h, s_w = padded.strides
        windows = _as_strided(
            xp,
            base,
            (n, c, kh, kw, oh, wide),
            (s_n, s_c, dh * s_h, dw * s_w, sh * s_h, sw * s_w),
        )
        og, k = o // groups, cg * kh * kw
        cols = windows.reshape(n, groups, k, oh * wide)  # the im2col copy
        weights = w.reshape(groups, og, k)
        out = matmul(weights, cols).reshape(n, o, oh, wide)  # one GEMM per image and group
        if wide != ow:
            cropped = xp.empty((n, o, oh, ow), dtype=out.dtype)
            cropped[...] = out[..., :ow]
            out = cropped
        if b is not None:
            out += b.reshape(1, o, 1, 1)
        self.cols, self.weights, self.weight_shape = cols, weights, w.shape
        self.geometry = (x.shape, stride, padding, dilation, oh, ow, wide, tail)
        return out

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        need_x, need_w, need_b = self.needs_input_grad
        (n, c, h, width), (sh, sw), padding, (dh, dw), oh, ow, wide, tail = self.geometry
        weights = self.weights
        groups, og, _ = weights.shape
        kh, kw = self.weight_shape[2:]
        if wide != ow:  # the surplus columns of each row get zero gradient
            spread = xp.zeros((n, groups * og, oh, wide), dtype=grad.dtype)
            spread[..., :ow] = grad
        else:
            spread = grad
        spread = spread.reshape(n, groups, og, oh * wide)
        grad_x = grad_w = grad_b = None
        if need_w:
            grad_w = weight_grad(spread, self.cols).reshape(self.weight_shape)
        if need_b:
            grad_b = grad.sum(axis=(0, 2, 3))
        if need_x:
            col_grad = matmul(weights.transpose(0, 2, 1), spread).reshape(n, c, kh, kw, oh, wide)
            grad_x = col2im(col_grad, (n, c, h, width), (sh, sw), padding, (dh, dw), tail)
        return grad_x, grad_w, grad_b


def batch_last(a: Any) -> Any:
    """``(N, G, R, L)`` → a contiguous ``(G, R, N · L)``: the batch beside the positions, so
    that one GEMM contracts both (a copy unless ``N`` is 1)."""
    n, g, r, length = a.shape
    xp = get_array_module(a)
    return xp.ascontiguousarray(a.transpose(1, 2, 0, 3)).reshape(g, r, n * length)


def weight_grad(grad: Any, cols: Any) -> Any:
    """``Σ_n grad[n] @ cols[n].T`` per group, ``(G, og, k)``, for ``grad`` of ``(N, G, og, L)``
    and ``cols`` of ``(N, G, k, L)``: one GEMM per group over all ``N · L`` positions, not a
    GEMM per image summed afterwards (which needs an ``(N, G, og, k)`` temporary)."""
    return matmul(batch_last(grad), batch_last(cols).transpose(0, 2, 1))


def col2im(
    cols: Any, shape: tuple, stride: tuple, padding: tuple, dilation: tuple, tail: int = 0
) -> Any:
    """Add ``(N, C, kh, kw, OH, OW')`` columns back onto an ``(N, C, H, W)`` image: the
    adjoint of the im2col copy (``OW'`` may exceed the true output width by the surplus
    columns of ``Conv2d``'s wide rows, which then need a zero ``tail`` past the buffer).
    ``padding`` is (top, bottom, left, right), cropped off the result."""
    xp = get_array_module(cols)
    n, c, h, width = shape
    _, _, kh, kw, oh, wide = cols.shape
    (sh, sw), (dh, dw) = stride, dilation
    top, bottom, left, right = padding
    hp, wp = h + top + bottom, width + left + right
    buffer = xp.zeros(n * c * hp * wp + tail, dtype=cols.dtype)
    padded = buffer[: n * c * hp * wp].reshape(n, c, hp, wp)
    s_n, s_c, s_h, s_w = padded.strides
    item = buffer.itemsize
    # col2im: each kernel position adds its slice of the column gradient.
    for i in range(kh):
        for j in range(kw):
            offset = (i * dh * s_h + j * dw * s_w) // item
            target = _as_strided(
                xp,
                buffer[offset:],
                (n, c, oh, wide),
                (s_n, s_c, sh * s_h, sw * s_w),
            )
            target += cols[:, :, i, j]
    image = padded[:, :, top : top + h, left : left + width]
    if image.shape != padded.shape:
        image = xp.ascontiguousarray(image)
    return image


def im2col(x: Any, kernel: tuple, stride: tuple, padding: tuple, dilation: tuple) -> Any:
    """The ``(N, C, kh, kw, OH, OW)`` windows of ``x`` zero-padded by ``padding`` (top,
    bottom, left, right), as a view (of a padded copy when there is padding)."""
    xp = get_array_module(x)
    n, c, h, width = x.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    top, bottom, left, right = padding
    hp, wp = h + top + bottom, width + left + right
    if top or bottom or left or right:
        padded = xp.zeros((n, c, hp, wp), dtype=x.dtype)
        padded[:, :, top : top + h, left : left + width] = x
    else:
        padded = x
    oh = (hp - dh * (kh - 1) - 1) // sh + 1
    ow = (wp - dw * (kw - 1) - 1) // sw + 1
    s_n, s_c, s_h, s_w = padded.strides
    return _as_strided(
        xp,
        padded,
        (n, c, kh, kw, oh, ow),
        (s_n, s_c, dh * s_h, dw * s_w, sh * s_h, sw * s_w),
    )


def _conv_padding(
    padding: Any, kernel: tuple, stride: tuple, dilation: tuple, where: str
) -> tuple[int, int, int, int]:
    """``padding`` (int, pair, ``"same"`` or ``"valid"``) → (top, bottom, left, right)."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding != "same":
            raise ValueError(
                f"{where}: padding={padding!r} is not supported; use 'same', 'valid', an int "
                "or a pair of ints"
            )
        if stride != (1, 1):
            raise ValueError(
                f"{where}: padding='same' needs stride 1, got stride={stride}; pass explicit "
                "padding for strided convolutions"
            )
        # Odd total padding puts the extra row/column at the bottom/right, as PyTorch does.
        total_h, total_w = dilation[0] * (kernel[0] - 1), dilation[1] * (kernel[1] - 1)
        return (total_h // 2, total_h - total_h // 2, total_w // 2, total_w - total_w // 2)
    ph, pw = _pair(padding, "padding", where, 0)
    return (ph, ph, pw, pw)


def conv2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
) -> Tensor:
    """2-D convolution (cross-correlation, as in PyTorch) over a batch of images.

    Args:
        input: ``(N, C, H, W)``, or ``(C, H, W)`` for one unbatched image.
        weight: ``(out_channels, C / groups, kh, kw)``.
        bias: ``(out_channels,)`` or None.
        stride: an int or ``(sh, sw)``.
        padding: an int, ``(ph, pw)``, ``"valid"`` (no padding) or ``"same"`` (output as
            large as the input; stride 1 only).
        dilation: an int or ``(dh, dw)``: spacing between kernel elements.
        groups: split the channels into this many independent convolutions.

    Returns:
        ``(N, out_channels, OH, OW)`` (``(out_channels, OH, OW)`` for unbatched input).

    Raises:
        TypeError: non-tensor or non-float arguments, or mismatched dtypes.
        ValueError: shapes that do not fit together, or bad stride/padding/dilation/groups.
    """
    where = "conv2d"
    for name, t in (("input", input), ("weight", weight)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{where}: {name} must be a Tensor, got {type(t).__name__}")
    if bias is not None and not isinstance(bias, Tensor):
        raise TypeError(f"{where}: bias must be a Tensor or None, got {type(bias).__name__}")
    if input.ndim not in (3, 4):
        raise ValueError(
            f"{where}: expected a 4-D input (batch, channels, height, width) or a 3-D "
            f"unbatched one, got shape {tuple(input.shape)}"
        )
    if weight.ndim != 4:
        raise ValueError(
            f"{where}: weight must be 4-D (out_channels, in_channels/groups, kh, kw), got "
            f"shape {tuple(weight.shape)}"
        )
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
    groups = int(groups)
    out_channels, per_group, kh, kw = weight.shape
    channels = input.shape[-3]
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
    stride = _pair(stride, "stride", where, 1)
    dilation = _pair(dilation, "dilation", where, 1)
    pads = _conv_padding(padding, (kh, kw), stride, dilation, where)
    height = input.shape[-2] + pads[0] + pads[1]
    width = input.shape[-1] + pads[2] + pads[3]
    span = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
    if span[0] > height or span[1] > width:
        raise ValueError(
            f"{where}: kernel size {span} (after dilation {dilation}) is larger than the "
            f"padded input {(height, width)} (input {tuple(input.shape[-2:])}, padding "
            f"{padding!r}); use a smaller kernel or more padding"
        )
    unbatched = input.ndim == 3
    if unbatched:
        input = input.unsqueeze(0)
    out = Conv2d.apply(
        input, weight, bias, stride=stride, padding=pads, dilation=dilation, groups=groups
    )
    return out.squeeze(0) if unbatched else out
