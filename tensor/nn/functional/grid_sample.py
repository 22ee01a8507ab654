"""``grid_sample`` (sample an image at the points of a grid, differentiable with respect to
both) and ``affine_grid`` (the grid of an affine map), as PyTorch's.

Each output point reads a few input pixels ("taps": 1 for nearest, 2 per spatial axis for
(tri)linear, 4 per axis for bicubic) with weights; the taps are built for all points at
once, per spatial axis, and combined, so no Python loop runs over pixels. Source positions,
padding (clip / reflect) and their derivatives follow PyTorch's ``GridSampler.h``.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.ops._util import add_at
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module

_MODES = ("bilinear", "nearest", "bicubic")
_PADDINGS = ("zeros", "border", "reflection")
_CUBIC_A = -0.75  # PyTorch's bicubic coefficient


def _unnormalize(coord: Any, size: int, align_corners: bool) -> tuple[Any, float]:
    """[-1, 1] → pixel position, and the derivative of that map."""
    if align_corners:
        return (coord + 1) / 2 * (size - 1), (size - 1) / 2
    return ((coord + 1) * size - 1) / 2, size / 2


def _clip(x: Any, size: int, xp: Any) -> tuple[Any, Any]:
    """Clamp to [0, size - 1]; the derivative is 0 on and beyond the ends (as PyTorch)."""
    inside = (x > 0) & (x < size - 1)
    return xp.minimum(size - 1, xp.maximum(x, 0)), inside.astype(x.dtype)


def _reflect(x: Any, twice_low: int, twice_high: int, xp: Any) -> tuple[Any, Any]:
    """Reflect ``x`` into [twice_low / 2, twice_high / 2]; the derivative is ±1."""
    if twice_low == twice_high:
        return xp.zeros_like(x), xp.zeros_like(x)
    low, span = twice_low / 2, (twice_high - twice_low) / 2
    shifted = x - low
    sign = xp.where(shifted < 0, -1, 1).astype(x.dtype)
    shifted = xp.abs(shifted)
    extra = xp.fmod(shifted, span)
    even = xp.fmod(xp.floor(shifted / span), 2) == 0
    return xp.where(even, extra + low, span - extra + low), xp.where(even, sign, -sign)


def _pad(x: Any, size: int, padding: str, align_corners: bool, xp: Any) -> tuple[Any, Any]:
    """Apply ``padding_mode`` to pixel positions; returns them and their derivative."""
    if padding == "zeros":
        return x, 1
    multiplier = 1
    if padding == "reflection":
        low, high = (0, 2 * (size - 1)) if align_corners else (-1, 2 * size - 1)
        x, multiplier = _reflect(x, low, high, xp)
    x, clipped = _clip(x, size, xp)
    return x, clipped * multiplier


def _cubic(t: Any) -> tuple[list, list]:
    """PyTorch's cubic convolution weights for the taps at -1, 0, 1, 2, and d/dt of each."""
    a = _CUBIC_A

    def near(x: Any) -> Any:  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: Any) -> Any:  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    def d_near(x: Any) -> Any:
        return (3 * (a + 2) * x - 2 * (a + 3)) * x

    def d_far(x: Any) -> Any:
        return (3 * a * x - 10 * a) * x + 8 * a

    weights = [far(t + 1), near(t), near(1 - t), far(2 - t)]
    derivatives = [d_far(t + 1), d_near(t), -d_near(1 - t), -d_far(2 - t)]
    return weights, derivatives


def _axis_taps(coord: Any, size: int, mode: str, padding: str, align: bool, xp: Any) -> list:
    """The taps of one spatial axis: per tap, (integer position, in bounds (bool), weight,
    d weight / d grid coordinate)."""
    source, scale = _unnormalize(coord, size, align)
    if mode == "bicubic":  # padding applies to each tap's position, not to the source
        base = xp.floor(source)
        weights, derivatives = _cubic(source - base)
        positions = [_pad(base + k - 1, size, padding, align, xp)[0] for k in range(4)]
        derivatives = [d * scale for d in derivatives]
    else:
        source, multiplier = _pad(source, size, padding, align, xp)
        if mode == "nearest":
            positions, weights = [xp.rint(source)], [xp.ones_like(source)]
            derivatives = [xp.zeros_like(source)]
        else:
            low = xp.floor(source)
            high = low + 1
            positions, weights = [low, high], [high - source, source - low]
            step = multiplier * scale
            derivatives = [-step + xp.zeros_like(source), step + xp.zeros_like(source)]
    taps = []
    for position, weight, derivative in zip(positions, weights, derivatives):
        valid = (position >= 0) & (position <= size - 1)  # NaN and inf are out of bounds
        index = xp.where(valid, position, 0).astype(np.int64)
        taps.append((index, valid, weight, derivative))
    return taps


def _taps(grid: Any, spatial: tuple, mode: str, padding: str, align: bool) -> list:
    """Every tap of every output point: (flat position (N, P) in the input plane padded by
    ``_padded``, per-axis weights, per-axis derivatives), axes in the input's order (D,) H, W.
    An out-of-bounds tap reads the zero pixel past the end, ``prod(spatial)``, rather than a
    real pixel masked by a product with 0 (an inf or NaN there times 0 would be NaN); its
    weight is kept, so a NaN grid point still gives NaN, as in PyTorch."""
    xp = get_array_module(grid)
    d, n, points = len(spatial), grid.shape[0], int(np.prod(grid.shape[1:-1]))
    per_axis = []
    for axis, size in enumerate(spatial):
        coord = grid[..., d - 1 - axis].reshape(n, points)  # grid[..., 0] is x: the last axis
        per_axis.append(_axis_taps(coord, size, mode, padding, align, xp))
    strides = [int(np.prod(spatial[axis + 1 :])) for axis in range(d)]
    taps = []
    for combination in itertools.product(*per_axis):
        index = sum(tap[0] * stride for tap, stride in zip(combination, strides))
        valid = combination[0][1]
        for tap in combination[1:]:
            valid = valid & tap[1]
        index = xp.where(valid, index, int(np.prod(spatial)))
        taps.append((index, [t[2] for t in combination], [t[3] for t in combination]))
    return taps


def _padded(input: Any) -> Any:
    """``input`` (N, C, *spatial) as planes (N, C, L + 1): its pixels, then one zero."""
    xp = get_array_module(input)
    n, c = input.shape[:2]
    flat = input.reshape(n, c, int(np.prod(input.shape[2:])))
    return xp.concatenate([flat, xp.zeros((n, c, 1), dtype=input.dtype)], axis=2)


def _product(factors: list) -> Any:
    out = factors[0]
    for factor in factors[1:]:
        out = out * factor
    return out


def _scatter_cpu(taps: list, grad: Any, plane: int) -> Any:
    """The input gradient as padded planes (N, C, plane) on the CPU: per channel (a few at
    once when the image is small), one ``np.bincount`` over every tap's flat position offset
    by batch and channel. It sums in float64, so it is at least as exact as ``np.add.at``, and
    several times faster (add.at's per-element dispatch dominates otherwise)."""
    n, c = grad.shape[:2]
    batch = (np.arange(n) * plane)[:, None]
    keys = np.concatenate([(index + batch).reshape(-1) for index, *_ in taps])  # (T·N·P,)
    weights = [_product(w) for _, w, _ in taps]
    by_channel = np.ascontiguousarray(grad.transpose(1, 0, 2))  # (C, N, P)
    size = n * plane
    out = np.empty((c, size), dtype=grad.dtype)
    chunk = max(1, -(-(1 << 16) // size))  # channels per bincount: at least 64K bins
    for start in range(0, c, chunk):
        stop = min(c, start + chunk)
        rows = (np.arange(stop - start) * size)[:, None] + keys
        values = np.stack([by_channel[start:stop] * w for w in weights], axis=1)
        sums = np.bincount(rows.reshape(-1), values.reshape(-1), (stop - start) * size)
        out[start:stop] = sums.reshape(stop - start, size)
    return out.reshape(c, n, plane).transpose(1, 0, 2)


class GridSample(Op):
    reads_inputs = True

    def forward(self, input: Any, grid: Any, *, mode: str, padding: str, align: bool) -> Any:
        self.input, self.grid, self.options = input, grid, (mode, padding, align)
        xp = get_array_module(input, grid)
        n, c, *spatial = input.shape
        out = xp.zeros((n, c, int(np.prod(grid.shape[1:-1]))), dtype=input.dtype)
        if out.size == 0:  # no batch, channel or point (an empty last batch, an empty shard)
            return out.reshape(n, c, *grid.shape[1:-1])
        flat = _padded(input)
        for index, weights, _ in _taps(grid, tuple(spatial), mode, padding, align):
            values = xp.take_along_axis(flat, index[:, None, :], axis=2)
            out += values * _product(weights)[:, None, :]
        return out.reshape(n, c, *grid.shape[1:-1])

    def backward(self, grad: Any) -> tuple:
        input, grid, (mode, padding, align) = self.input, self.grid, self.options
        xp = get_array_module(grad)
        n, c, *spatial = input.shape
        d, plane, points = len(spatial), int(np.prod(spatial)) + 1, int(np.prod(grid.shape[1:-1]))
        if n * c * points == 0:
            return (
                xp.zeros(input.shape, dtype=grad.dtype) if self.needs_input_grad[0] else None,
                xp.zeros(grid.shape, dtype=grad.dtype) if self.needs_input_grad[1] else None,
            )
        grad = grad.reshape(n, c, points)
        taps = _taps(grid, tuple(spatial), mode, padding, align)
        grad_input = grad_grid = None
        if self.needs_input_grad[0]:
            # Out-of-bounds taps add into the padding pixel, which is dropped.
            if xp is np:
                target = _scatter_cpu(taps, grad, plane)
            else:  # rows of (N·plane, C): each tap adds its weighted gradient where it read
                offsets = (xp.arange(n) * plane)[:, None]
                rows = xp.concatenate([(index + offsets).reshape(-1) for index, *_ in taps])
                sums = xp.concatenate(
                    [
                        (grad * _product(w)[:, None, :]).transpose(0, 2, 1).reshape(-1, c)
                        for _, w, _ in taps
                    ]
                )
                target = xp.zeros((n * plane, c), dtype=grad.dtype)
                add_at(target, rows, sums, "grid_sample backward")
                target = target.reshape(n, plane, c).transpose(0, 2, 1)
            grad_input = xp.ascontiguousarray(target[:, :, :-1]).reshape(input.shape)
        if self.needs_input_grad[1]:
            out = xp.zeros((n, points, d), dtype=grad.dtype)
            if mode != "nearest":  # nearest is a step function: its grid gradient is 0
                flat = _padded(input)
                for index, weights, derivatives in taps:
                    values = xp.take_along_axis(flat, index[:, None, :], axis=2)
                    read = (grad * values).sum(axis=1)
                    for axis in range(d):
                        others = weights[:axis] + weights[axis + 1 :]
                        part = read * derivatives[axis]
                        out[:, :, d - 1 - axis] += _product([part] + others)
            grad_grid = out.reshape(grid.shape)
        return grad_input, grad_grid


def grid_sample(
    input: Tensor,
    grid: Tensor,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool | None = None,
) -> Tensor:
    """Sample ``input`` (N, C, H, W) at ``grid`` (N, H_out, W_out, 2) → (N, C, H_out, W_out);
    also 5-D: input (N, C, D, H, W), grid (N, D_out, H_out, W_out, 3).

    ``grid[..., 0]`` is x (width), ``grid[..., 1]`` y (height), in [-1, 1]: -1 and 1 are the
    outer edges of the corner pixels, or their centres with ``align_corners=True``.
    ``mode``: ``"bilinear"`` (trilinear on 5-D), ``"nearest"`` (ties to even; zero grid
    gradient) or ``"bicubic"`` (4-D only); ``padding_mode``: ``"zeros"``, ``"border"`` or
    ``"reflection"``. ``align_corners=None`` means False, as PyTorch (without its warning).

    Raises:
        ValueError: an unknown mode or padding, or shapes that do not fit.
        TypeError: a non-float input or grid, or different dtypes.
    """
    if mode not in _MODES:
        raise ValueError(
            f"grid_sample: mode={mode!r} is not supported; use one of {', '.join(_MODES)}"
        )
    if padding_mode not in _PADDINGS:
        raise ValueError(
            f"grid_sample: padding_mode={padding_mode!r} is not supported; use one of "
            f"{', '.join(_PADDINGS)}"
        )
    if input.ndim not in (4, 5):
        raise ValueError(
            f"grid_sample: expected 4-D input (N, C, H, W) or 5-D (N, C, D, H, W), got shape "
            f"{tuple(input.shape)}"
        )
    spatial = input.ndim - 2
    if grid.ndim != input.ndim or grid.shape[-1] != spatial or grid.shape[0] != input.shape[0]:
        expected = "(N, H_out, W_out, 2)" if spatial == 2 else "(N, D_out, H_out, W_out, 3)"
        raise ValueError(
            f"grid_sample: for input of shape {tuple(input.shape)} the grid must be {expected} "
            f"with N = {input.shape[0]}, got {tuple(grid.shape)}"
        )
    if mode == "bicubic" and spatial != 2:
        raise ValueError(
            "grid_sample: mode='bicubic' supports 4-D input (N, C, H, W) only; use "
            "'bilinear' (trilinear) or 'nearest' for 5-D input"
        )
    if min(input.shape[2:]) == 0:
        raise ValueError(
            f"grid_sample: input of shape {tuple(input.shape)} has an empty spatial dim"
        )
    for name, tensor in (("input", input), ("grid", grid)):
        if tensor.dtype.kind != "f":
            raise TypeError(f"grid_sample: {name} must be floating point, got {tensor.dtype}")
    if input.dtype != grid.dtype:
        raise TypeError(
            f"grid_sample: input is {input.dtype} but grid is {grid.dtype}; convert one so "
            "both have the same dtype"
        )
    return GridSample.apply(input, grid, mode=mode, padding=padding_mode, align=bool(align_corners))


def _positions(steps: int, align_corners: bool) -> np.ndarray:
    """PyTorch's base coordinates of ``steps`` pixels along one axis, in [-1, 1]."""
    if steps <= 1:
        return np.zeros(steps)
    positions = np.linspace(-1.0, 1.0, steps)
    return positions if align_corners else positions * (steps - 1) / steps


def affine_grid(theta: Tensor, size: Any, align_corners: bool | None = None) -> Tensor:
    """The sampling grid of a batch of affine maps, for ``grid_sample``.

    ``theta`` (N, 2, 3) with ``size`` (N, C, H, W) gives (N, H, W, 2); ``theta`` (N, 3, 4)
    with ``size`` (N, C, D, H, W) gives (N, D, H, W, 3). Differentiable in ``theta``.
    ``align_corners=None`` means False, as PyTorch (without its warning).

    Raises:
        ValueError: a ``size`` that is not 4 or 5 positive sizes, or a ``theta`` whose shape
            does not fit it.
        TypeError: a non-float ``theta``.
    """
    size = tuple(int(s) for s in size)
    if len(size) not in (4, 5) or min(size) <= 0:
        raise ValueError(
            f"affine_grid: size must be (N, C, H, W) or (N, C, D, H, W) of positive sizes, "
            f"got {size}"
        )
    spatial = len(size) - 2
    if theta.dtype.kind != "f":
        raise TypeError(f"affine_grid: theta must be floating point, got {theta.dtype}")
    if tuple(theta.shape) != (size[0], spatial, spatial + 1):
        raise ValueError(
            f"affine_grid: for size {size} theta must have shape "
            f"{(size[0], spatial, spatial + 1)}, got {tuple(theta.shape)}"
        )
    align = bool(align_corners)
    # base[..., k] is coordinate k (x, y, z: the last spatial axis first), then a 1.
    axes = [_positions(s, align) for s in size[2:]]
    mesh = np.meshgrid(*axes, indexing="ij")
    base = np.stack([*reversed(mesh), np.ones(size[2:])], axis=-1)
    xp = get_array_module(theta._array)
    base = wrap(xp.asarray(base.reshape(1, -1, spatial + 1), dtype=theta.dtype))
    grid = base @ theta.transpose(1, 2)
    return grid.reshape(size[0], *size[2:], spatial)


__all__ = ["affine_grid", "grid_sample"]
