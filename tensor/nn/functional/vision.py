"""``pixel_shuffle`` and ``pixel_unshuffle`` (channels to space and back) and
``channel_shuffle``: views and one copy (reshape, permute, reshape), differentiable through
those ops."""

from __future__ import annotations

from dtrain._tensor.tensor import Tensor


def _check(where: str, input: Tensor, factor: int, name: str) -> None:
    if not isinstance(factor, int) or isinstance(factor, bool) or factor < 1:
        raise ValueError(f"{where}: {name} must be a positive int, got {factor!r}")
    if not isinstance(input, Tensor) or input.ndim < 3:
        shape = tuple(input.shape) if isinstance(input, Tensor) else type(input).__name__
        raise ValueError(f"{where}: expected input of at least 3 dims (*, C, H, W), got {shape}")


def pixel_shuffle(input: Tensor, upscale_factor: int) -> Tensor:
    """``(*, C·r², H, W)`` → ``(*, C, H·r, W·r)``: each group of ``r²`` channels becomes an
    ``r x r`` block of pixels.

    Raises:
        ValueError: a channel count not divisible by ``r²``, or fewer than 3 dims.
    """
    where, r = "pixel_shuffle", upscale_factor
    _check(where, input, r, "upscale_factor")
    *lead, c, h, w = input.shape
    if c % (r * r):
        raise ValueError(
            f"{where}: {c} channels are not divisible by upscale_factor² = {r * r} (input "
            f"{tuple(input.shape)})"
        )
    k = len(lead)
    x = input.reshape(*lead, c // (r * r), r, r, h, w)
    x = x.permute(*range(k), k, k + 3, k + 1, k + 4, k + 2)
    return x.reshape(*lead, c // (r * r), h * r, w * r)


def pixel_unshuffle(input: Tensor, downscale_factor: int) -> Tensor:
    """``(*, C, H·r, W·r)`` → ``(*, C·r², H, W)``: the inverse of ``pixel_shuffle``.

    Raises:
        ValueError: a height or width not divisible by ``r``, or fewer than 3 dims.
    """
    where, r = "pixel_unshuffle", downscale_factor
    _check(where, input, r, "downscale_factor")
    *lead, c, h, w = input.shape
    if h % r or w % r:
        raise ValueError(
            f"{where}: height {h} and width {w} must be divisible by downscale_factor={r}"
        )
    k = len(lead)
    x = input.reshape(*lead, c, h // r, r, w // r, r)
    x = x.permute(*range(k), k, k + 2, k + 4, k + 1, k + 3)
    return x.reshape(*lead, c * r * r, h // r, w // r)


__all__ = ["pixel_shuffle", "pixel_unshuffle"]


def channel_shuffle(input: Tensor, groups: int) -> Tensor:
    """``(N, C, *)`` → the same shape with the channels, seen as a ``(groups, C / groups)``
    grid, transposed (ShuffleNet's channel shuffle).

    Raises:
        ValueError: ``groups`` not a positive divisor of ``C``, or input under 3 dims.
    """
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"channel_shuffle: groups must be a positive int, got {groups!r}")
    if not isinstance(input, Tensor) or input.ndim < 3:
        shape = tuple(input.shape) if isinstance(input, Tensor) else type(input).__name__
        raise ValueError(f"channel_shuffle: expected input of at least 3 dims, got {shape}")
    n, c = input.shape[:2]
    if c % groups:
        raise ValueError(
            f"channel_shuffle: number of channels {c} must be divisible by groups={groups}"
        )
    rest = tuple(input.shape[2:])
    grid = input.reshape((n, groups, c // groups) + rest)
    return grid.transpose(1, 2).reshape((n, c) + rest)
