"""2-D convolution as im2col + one GEMM per group over the whole batch.

Forward copies the (padded) input's windows into columns through an ``as_strided`` view
(no Python loop over pixels) and multiplies them by the weight, ``(O, K)``, in one GEMM
(per group) whose rows or columns run over all ``N · OH · OW`` positions; one more copy
puts the product in ``(N, C_out, OH, OW)`` order, adding the bias on the way. Backward
takes the weight gradient from the columns (one GEMM contracting batch and positions
together): the forward's, kept when they are small (``RECOMPUTE_BYTES``), else copied again
from the input; none are kept when the weight needs no gradient. It scatters the column
gradient back onto the padded input (col2im) with one strided add per kernel position.
``conv_columns`` holds the column layouts (channel-major for few channels or groups,
channel-last otherwise). Depthwise convolutions on the CPU take the tap route of
``conv_taps`` instead (no columns).

``im2col`` / ``col2im`` / ``weight_grad`` below are the per-image layouts that ``unfold``,
``fold`` and the N-d convolutions use.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain._tensor.amp.cast import autocast_inputs
from dtrain._tensor.autograd.grad_mode import is_grad_enabled
from dtrain._tensor.autograd.op import Op
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
from dtrain._tensor.nn.functional.conv_taps import ConvTaps, use_taps
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


#: im2col columns larger than this many bytes (and than ``RECOMPUTE_RATIO`` times the input)
#: are not kept from forward to backward but copied again from the input there: a 3x3
#: convolution's columns are 9 times its input (27 times in 3-D), the largest array of a
#: CNN's graph. The copy adds 6 % (2-D) to 22 % (3-D) to a fwd + bwd step: docs/benchmarks.md,
#: "Depthwise convolutions as taps, and the im2col memory".
RECOMPUTE_BYTES = 16 << 20
RECOMPUTE_RATIO = 4


def keeps_columns(cols: Any, x: Any, weight_grad: bool) -> bool:
    """Whether a convolution keeps its columns ``cols`` of input ``x`` for backward: only for
    a weight gradient (the input gradient needs none), and only when they are small."""
    if not weight_grad:
        return False
    return cols.nbytes <= max(RECOMPUTE_BYTES, RECOMPUTE_RATIO * x.nbytes)


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
        weight_grad: bool = True,
    ) -> Any:
        xp = get_array_module(x)
        g = geometry(xp, x.shape, w.shape[2:], stride, padding, dilation, groups)
        cols = columns(x, g)  # the im2col copy
        # Kept for the weight gradient, or made again from the input there (see above).
        self.cols = cols if keeps_columns(cols, x, weight_grad) else None
        self.x = x if weight_grad and self.cols is None else None
        self.kernel = kernel_matrix(w, g)
        self.weight, self.weight_shape, self.geometry = w, w.shape, g
        out = product(self.kernel, cols, g)  # one GEMM per group over the batch
        return to_image(out, g, (x.shape[0], w.shape[0], g.oh, g.ow), b)

    def backward(self, grad: Any) -> tuple:
        need_x, need_w, need_b = self.needs_input_grad
        g = self.geometry
        flat = from_image(grad, g)  # zero in the surplus columns of wide rows
        grad_x = grad_w = grad_b = None
        if need_w:
            cols = self.cols if self.cols is not None else columns(self.x, g)
            grad_w = kernel_product(flat, cols, g)
            if has_surplus(g) and not finite(grad_w):  # inf * 0 in a surplus window
                grad_w = kernel_product(flat, drop_surplus(cols, g), g)
            del cols
            grad_w = kernel_from_matrix(grad_w, g, self.weight_shape)
        if need_b:
            grad_b = grad.sum(axis=(0, 2, 3))
        # Long runs of channels: the full convolution wins, unless the gradient has more
        # channels than the input (its columns would outgrow col2im's by that ratio).
        if need_x and g.last and self.weight.shape[0] <= self.weight.shape[1] * g.groups:
            grad_x = full_convolution(grad, self.weight, g)
        if need_x and grad_x is None:
            spread = product_t(self.kernel, flat, g)
            if has_surplus(g) and not finite(self.kernel):  # inf * 0 in a surplus column
                spread = drop_surplus(spread, g)
            grad_x = add_columns(spread, g)
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
    backward = is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (input, weight, bias)
    )
    if use_taps(input._array, tuple(weight.shape), groups, backward):  # depthwise, on numpy
        pairs = ((pads[0], pads[1]), (pads[2], pads[3]))
        out = ConvTaps.apply(
            input, weight, bias, stride=stride, pads=pairs, dilation=dilation, groups=groups
        )
    else:
        out = Conv2d.apply(
            input,
            weight,
            bias,
            stride=stride,
            padding=pads,
            dilation=dilation,
            groups=groups,
            weight_grad=weight.requires_grad,
        )
    return out.squeeze(0) if unbatched else out
