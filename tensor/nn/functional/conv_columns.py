"""im2col, col2im and the GEMMs around them for ``Conv2d`` and ``ConvTranspose2d``: every
product is one 2-D GEMM per group over the whole batch (numpy's stacked matmul would run
one small GEMM per image instead), on columns in one of two layouts.

* channel-major, ``(C · kh · kw, N · OH · OW')``: the windows of the NCHW input copied
  with runs of ``OW`` (or ``OH · OW'``) elements. Used for grouped convolutions and few
  channels. On the CPU, when the horizontal stride is 1, each output row is taken over the
  full padded width ``OW' = W + left + right`` and the surplus columns are dropped
  afterwards: each (channel, kernel position, image) block is then one contiguous run,
  which numpy copies several times faster than rows of ``OW`` elements, at the cost of
  ``(kw - 1) · dw`` extra columns per row (the last row's windows run past the padded input
  into a zero ``tail``).
* channel-last, ``(N · OH · OW, kh · kw · C)``: the windows of an NHWC copy of the input,
  copied (and added back by col2im) in runs of ``C`` (or ``kw · C``) elements. Used when
  ``groups`` is 1 and there are at least ``CHANNEL_LAST_MIN`` channels: the runs are then
  long, and there are no surplus columns.

Both take one ``as_strided`` view and one copy; col2im is one strided add per kernel
position. The weight ``(O, C, kh, kw)`` is used as a matrix ``(O, K)`` whose columns are
ordered as the columns' ``K`` axis (``kernel_matrix`` / ``kernel_from_matrix``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from dtrain.runtime.backend import get_array_module
from dtrain.runtime.linalg import matmul

#: Channels from which (``groups`` 1) the channel-last columns are used; at 16 they measured
#: as fast as channel-major on 8x8 images, and much faster on larger channel counts.
CHANNEL_LAST_MIN = 16


class Geometry(NamedTuple):
    """Where the windows of an ``(N, C, H, W)`` image lie, and the columns' layout."""

    shape: tuple  # (N, C, H, W), unpadded
    kernel: tuple
    stride: tuple
    padding: tuple  # (top, bottom, left, right)
    dilation: tuple
    groups: int
    oh: int
    ow: int
    wide: int  # columns per output row: ow, or the padded width (channel-major only)
    tail: int  # zeros past the padded buffer that the wide rows' last windows read
    last: bool  # channel-last columns


def geometry(
    xp: Any,
    shape: tuple,
    kernel: tuple,
    stride: tuple,
    padding: tuple,
    dilation: tuple,
    groups: int = 1,
) -> Geometry:
    """The output size of a convolution over ``shape`` and the layout of its columns."""
    _, c, h, width = shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    top, bottom, left, right = padding
    hp, wp = h + top + bottom, width + left + right
    oh = (hp - dh * (kh - 1) - 1) // sh + 1
    ow = (wp - dw * (kw - 1) - 1) // sw + 1
    last = groups == 1 and c >= CHANNEL_LAST_MIN
    wide = wp if (not last and xp is np and sw == 1 and ow < wp <= 2 * ow) else ow
    tail = (kw - 1) * dw if wide != ow else 0
    return Geometry(shape, kernel, stride, padding, dilation, groups, oh, ow, wide, tail, last)


def _padded(xp: Any, g: Geometry, dtype: Any) -> tuple[Any, Any]:
    """A zero padded buffer, ``(N, Hp, Wp, C)`` channel-last else ``(N, C, Hp, Wp)``, and
    the flat array it views (longer by the tail)."""
    n, c, h, width = g.shape
    top, bottom, left, right = g.padding
    hp, wp = h + top + bottom, width + left + right
    flat = xp.zeros(n * c * hp * wp + g.tail, dtype=dtype)
    shape = (n, hp, wp, c) if g.last else (n, c, hp, wp)
    return flat[: n * c * hp * wp].reshape(shape), flat


def _strides(padded: Any, g: Geometry) -> tuple[int, int, int, int]:
    """``padded``'s strides in (n, c, h, w) order."""
    if g.last:
        s_n, s_h, s_w, s_c = padded.strides
        return s_n, s_c, s_h, s_w
    return padded.strides


def columns(x: Any, g: Geometry) -> Any:
    """im2col of ``x`` ``(N, C, H, W)``: ``(C · kh · kw, N · OH · OW')`` channel-major,
    ``(N · OH · OW, kh · kw · C)`` channel-last."""
    xp = get_array_module(x)
    n, c, h, width = g.shape
    top, bottom, left, right = g.padding
    if g.last or g.tail or top or bottom or left or right:
        padded, flat = _padded(xp, g, x.dtype)
        if g.last:
            padded[:, top : top + h, left : left + width] = x.transpose(0, 2, 3, 1)
        else:
            padded[:, :, top : top + h, left : left + width] = x
        base = flat if g.tail else padded
    else:
        padded = base = x
    s_n, s_c, s_h, s_w = _strides(padded, g)
    (kh, kw), (sh, sw), (dh, dw) = g.kernel, g.stride, g.dilation
    if g.last:
        shape = (n, g.oh, g.ow, kh, kw, c)
        strides = (s_n, sh * s_h, sw * s_w, dh * s_h, dw * s_w, s_c)
        matrix = (n * g.oh * g.ow, kh * kw * c)
    else:
        shape = (c, kh, kw, n, g.oh, g.wide)
        strides = (s_c, dh * s_h, dw * s_w, s_n, sh * s_h, sw * s_w)
        matrix = (c * kh * kw, n * g.oh * g.wide)
    windows = xp.lib.stride_tricks.as_strided(base, shape=shape, strides=strides)
    return windows.reshape(matrix)  # the copy (sizes given: an empty batch has no -1 to infer)


def add_columns(cols: Any, g: Geometry) -> Any:
    """col2im, the adjoint of ``columns``: ``cols`` summed back onto a new ``(N, C, H, W)``
    image, one strided add per kernel position (surplus columns of wide rows must be 0)."""
    xp = get_array_module(cols)
    n, c, h, width = g.shape
    (kh, kw), (sh, sw), (dh, dw) = g.kernel, g.stride, g.dilation
    padded, flat = _padded(xp, g, cols.dtype)
    s_n, s_c, s_h, s_w = _strides(padded, g)
    if g.last:
        split = cols.reshape(n, g.oh, g.ow, kh, kw, c)
        shape, strides = (n, g.oh, g.ow, c), (s_n, sh * s_h, sw * s_w, s_c)
    else:
        split = cols.reshape(c, kh, kw, n, g.oh, g.wide)
        shape, strides = (c, n, g.oh, g.wide), (s_c, s_n, sh * s_h, sw * s_w)
    for i in range(kh):
        for j in range(kw):
            offset = (i * dh * s_h + j * dw * s_w) // flat.itemsize
            target = xp.lib.stride_tricks.as_strided(flat[offset:], shape=shape, strides=strides)
            target += split[:, :, :, i, j] if g.last else split[:, i, j]
    top, _, left, _ = g.padding
    if g.last:
        return xp.ascontiguousarray(
            padded[:, top : top + h, left : left + width].transpose(0, 3, 1, 2)
        )
    image = padded[:, :, top : top + h, left : left + width]
    return image if image.shape == padded.shape else xp.ascontiguousarray(image)


def has_surplus(g: Geometry) -> bool:
    """Whether the columns are wide rows (CPU only), whose surplus windows read past their
    row into the next row, channel or image."""
    return g.wide != g.ow


def drop_surplus(a: Any, g: Geometry) -> Any:
    """``a`` in the channel-major columns' layout with the surplus columns of wide rows set
    to 0 (in place where ``a`` is contiguous). Multiplying by 0 does not clear them where
    they hold inf or NaN, which would reach another channel's gradient; the callers check
    for that (cheaply, on a weight-sized array) before paying for this pass."""
    rows = a.reshape(a.shape[0], -1, g.wide)
    rows[:, :, g.ow :] = 0
    return rows.reshape(a.shape)


def finite(a: Any) -> bool:
    """All of ``a`` finite (numpy: the wide rows exist on the CPU only)."""
    return bool(np.isfinite(a).all())


def to_image(a: Any, g: Geometry, shape: tuple, bias: Any = None) -> Any:
    """A product in the columns' position layout (``(C, N · OH · OW')`` channel-major,
    ``(N · OH · OW, C)`` channel-last) → a new ``(N, C, h, w)`` (``shape``), each image
    cropped to ``(h, w)``, ``bias`` of ``(C,)`` added on the way."""
    xp = get_array_module(a)
    n, c, h, width = shape
    if g.last:
        view = a.reshape(n, g.oh, g.ow, c)[:, :h, :width].transpose(0, 3, 1, 2)
    else:
        view = a.reshape(c, n, g.oh, g.wide)[:, :, :h, :width].transpose(1, 0, 2, 3)
    out = xp.empty(shape, dtype=a.dtype)
    if bias is None:
        out[...] = view
        return out
    return xp.add(view, bias.reshape(1, c, 1, 1), out=out)


def from_image(x: Any, g: Geometry) -> Any:
    """``to_image``'s adjoint: ``(N, C, h, w)`` → a new array in the columns' position
    layout, zero where ``(h, w)`` is smaller than ``(OH, OW')``."""
    xp = get_array_module(x)
    n, c, h, width = x.shape
    rows = (g.oh, g.ow) if g.last else (g.oh, g.wide)
    full = (n, *rows, c) if g.last else (c, n, *rows)
    out = xp.empty(full, dtype=x.dtype) if (h, width) == rows else xp.zeros(full, x.dtype)
    if g.last:
        out[:, :h, :width] = x.transpose(0, 2, 3, 1)
        return out.reshape(-1, c)
    out[:, :, :h, :width] = x.transpose(1, 0, 2, 3)
    return out.reshape(c, -1)


def kernel_matrix(w: Any, g: Geometry) -> Any:
    """A weight ``(A, B, kh, kw)`` as ``(A, K)`` with ``K`` ordered as the columns' axis."""
    if g.last:
        return (
            get_array_module(w).ascontiguousarray(w.transpose(0, 2, 3, 1)).reshape(w.shape[0], -1)
        )
    return w.reshape(w.shape[0], -1)


def kernel_from_matrix(m: Any, g: Geometry, shape: tuple) -> Any:
    """``kernel_matrix``'s inverse: ``(A, K)`` → a new weight-shaped ``(A, B, kh, kw)``."""
    if g.last:
        a, b, kh, kw = shape
        xp = get_array_module(m)
        return xp.ascontiguousarray(m.reshape(a, kh, kw, b).transpose(0, 3, 1, 2))
    return m.reshape(shape)


def product(m: Any, cols: Any, g: Geometry) -> Any:
    """The kernel ``m`` ``(O, K)`` applied to the columns: the convolution's output in the
    position layout (``(O, N · L')`` channel-major, ``(N · L, O)`` channel-last)."""
    if g.last:
        return matmul(cols, m.T)
    groups = g.groups
    return _per_group(m.reshape(groups, -1, m.shape[1]), cols.reshape(groups, m.shape[1], -1))


def product_t(m: Any, flat: Any, g: Geometry) -> Any:
    """``product``'s adjoint in the columns: ``flat`` in the position layout (``O``
    channels) → columns, through the kernel ``m`` ``(O, K)`` transposed."""
    if g.last:
        return matmul(flat, m)
    groups = g.groups
    split = m.reshape(groups, -1, m.shape[1])
    return _per_group(split.transpose(0, 2, 1), flat.reshape(groups, split.shape[1], -1))


def kernel_product(flat: Any, cols: Any, g: Geometry) -> Any:
    """The kernel gradient ``(O, K)`` from ``flat`` (``O`` channels, position layout) and
    the columns: one GEMM per group over the whole batch."""
    if g.last:
        return matmul(flat.T, cols)
    groups = g.groups
    split = flat.reshape(groups, flat.shape[0] // groups, flat.shape[1])
    per_group = cols.reshape(groups, cols.shape[0] // groups, cols.shape[1])
    return _per_group(split, per_group.transpose(0, 2, 1))


def _per_group(a: Any, b: Any) -> Any:
    """``(G, m, k) @ (G, k, n)`` → ``(G · m, n)``: a 2-D GEMM when ``G`` is 1."""
    if a.shape[0] == 1:
        return matmul(a[0], b[0])
    out = matmul(a, b)
    return out.reshape(out.shape[0] * out.shape[1], out.shape[2])


def full_convolution(grad: Any, w: Any, g: Geometry) -> Any:
    """The input gradient of a stride-1 convolution as the convolution of ``grad`` with the
    flipped, transposed kernel (im2col + one GEMM, no col2im adds), or None where the
    padding exceeds the kernel's reach (that would need negative padding) or the stride is
    not 1. With channel-last columns this is about twice as fast as col2im."""
    (kh, kw), (dh, dw) = g.kernel, g.dilation
    reach = (dh * (kh - 1),) * 2 + (dw * (kw - 1),) * 2
    pads = tuple(r - p for r, p in zip(reach, g.padding))
    if g.stride != (1, 1) or g.groups != 1 or min(pads) < 0:
        return None
    xp = get_array_module(grad)
    flipped = w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]
    inner = geometry(xp, grad.shape, g.kernel, (1, 1), pads, g.dilation)
    out = product(kernel_matrix(flipped, inner), columns(grad, inner), inner)
    return to_image(out, inner, g.shape)
