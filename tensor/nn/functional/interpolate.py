"""``interpolate``: nearest and (bi)linear resampling of ``(N, C, H, W)`` (and ``(N, C, L)``)
input, built from index_select and products, so it is differentiable.

Source positions follow PyTorch's kernels: with ``scale_factor`` given (and
``recompute_scale_factor`` not True) the step is ``1 / scale_factor``, else ``in / out``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dtrain._tensor.ops.indexing import index_select
from dtrain._tensor.ops.unary import _float
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module

_MODES = {"nearest": 1, "linear": 1, "bilinear": 2}  # the spatial dims each mode takes


def _per_dim(value: Any, name: str, count: int) -> tuple:
    if isinstance(value, (tuple, list)):
        if len(value) != count:
            raise ValueError(
                f"interpolate: {name}={value!r} has {len(value)} entries; the input has "
                f"{count} spatial dimension(s)"
            )
        return tuple(value)
    return (value,) * count


def _output_sizes(
    shape: tuple, size: Any, scale_factor: Any, recompute: bool | None
) -> tuple[tuple, tuple]:
    """Output sizes and, per dim, the scale PyTorch's kernels use (None: ``in / out``)."""
    count = len(shape)
    if (size is None) == (scale_factor is None):
        raise ValueError("interpolate: give exactly one of size and scale_factor")
    if size is not None:
        sizes = tuple(int(s) for s in _per_dim(size, "size", count))
        return sizes, (None,) * count
    scales = tuple(float(s) for s in _per_dim(scale_factor, "scale_factor", count))
    sizes = tuple(math.floor(n * s) for n, s in zip(shape, scales))
    return sizes, ((None,) * count if recompute else scales)


def _step(in_size: int, out_size: int, scale: float | None, align_corners: bool) -> float:
    if align_corners:
        return (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
    return 1.0 / scale if scale is not None and scale > 0 else in_size / out_size


def _nearest(x: Tensor, axis: int, out_size: int, scale: float | None) -> Tensor:
    in_size = x.shape[axis]
    if out_size == in_size:
        return x
    # As PyTorch's CPU kernel: floor(o * step) in float32, capped at the last index.
    step = np.float32(_step(in_size, out_size, scale, False))
    source = np.minimum(
        np.floor(np.arange(out_size, dtype=np.float32) * step).astype(np.int64), in_size - 1
    )
    return index_select(x, axis, get_array_module(x._array).asarray(source))


def _linear(
    x: Tensor, axis: int, out_size: int, scale: float | None, align_corners: bool
) -> Tensor:
    in_size = x.shape[axis]
    dtype = x._array.dtype
    step = _step(in_size, out_size, scale, align_corners)
    positions = np.arange(out_size, dtype=np.float64)
    source = positions * step if align_corners else np.maximum((positions + 0.5) * step - 0.5, 0.0)
    low = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    frac = (source - low).astype(dtype)
    xp = get_array_module(x._array)
    shape = [1] * x.ndim
    shape[axis] = out_size
    upper = wrap(xp.asarray(frac.reshape(shape)))
    lower = wrap(xp.asarray((1 - frac).reshape(shape)))
    return (
        index_select(x, axis, xp.asarray(low)) * lower
        + index_select(x, axis, xp.asarray(high)) * upper
    )


def interpolate(
    input: Tensor,
    size: Any = None,
    scale_factor: Any = None,
    mode: str = "nearest",
    align_corners: bool | None = None,
    recompute_scale_factor: bool | None = None,
    antialias: bool = False,
) -> Tensor:
    """Resample ``input`` to ``size`` or by ``scale_factor``.

    ``mode`` is ``"nearest"`` (3-D or 4-D input), ``"linear"`` (3-D) or ``"bilinear"``
    (4-D); ``align_corners`` (linear modes only) maps the corner pixels' centres onto each
    other.

    Raises:
        ValueError: another mode, a wrong input rank, both or neither of ``size`` and
            ``scale_factor``, or ``align_corners`` with ``"nearest"``.
        NotImplementedError: ``antialias=True``.
    """
    if mode not in _MODES:
        raise ValueError(
            f"interpolate: mode={mode!r} is not supported; use one of {sorted(_MODES)}"
        )
    if antialias:
        raise NotImplementedError("interpolate: antialias=True is not supported")
    spatial = input.ndim - 2
    if spatial not in (1, 2) or (mode != "nearest" and spatial != _MODES[mode]):
        expected = "3-D or 4-D" if mode == "nearest" else f"{_MODES[mode] + 2}-D"
        raise ValueError(
            f"interpolate: mode={mode!r} takes {expected} (N, C, ...) input, got shape "
            f"{tuple(input.shape)}"
        )
    if mode == "nearest" and align_corners is not None:
        raise ValueError(
            "align_corners option can only be set with the interpolating modes: "
            "linear | bilinear | bicubic | trilinear"
        )
    sizes, scales = _output_sizes(
        tuple(input.shape[2:]), size, scale_factor, recompute_scale_factor
    )
    if min(sizes) <= 0:
        raise ValueError(f"interpolate: the output size {sizes} must be positive")
    out = input if mode == "nearest" else _float(input)
    for i, (out_size, scale) in enumerate(zip(sizes, scales)):
        if mode == "nearest":
            out = _nearest(out, 2 + i, out_size, scale)
        else:
            out = _linear(out, 2 + i, out_size, scale, bool(align_corners))
    return out
