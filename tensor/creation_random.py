"""Random tensors: ``rand``, ``randn``, ``randint`` and their ``*_like`` forms, ``randperm``,
``multinomial``, ``bernoulli``, and the in-place fills ``normal_``, ``uniform_``,
``bernoulli_`` and ``exponential_``; ``sample`` draws the arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dtrain._tensor.creation_data import _finish
from dtrain._tensor.creation_filled import _like, _shape, _sizes
from dtrain._tensor.default_device import uses_default_device
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module, require_cupy
from dtrain.runtime.device import Device, cuda_context, device_of
from dtrain.runtime.dtypes import DEFAULT_FLOAT, to_dtype
from dtrain.runtime.random import Generator, default_generator


def _numpy_rng(generator: Generator | None) -> np.random.Generator:
    return (default_generator if generator is None else generator).numpy


def sample(
    kind: str, shape: tuple, dtype: Any, device: Any, generator: Any = None, **params: Any
) -> Any:
    """Draw an array of ``kind`` ('uniform', 'normal') on the device, as ``dtype``."""
    dtype = to_dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(
            f"{kind} samples need a floating-point dtype, got {dtype}; draw floats and convert, "
            "or use dt.randint for integers"
        )
    draw_dtype = dtype if dtype in (np.float32, np.float64) else np.dtype(np.float32)
    if device is not None and Device(device).type == "cuda":
        cupy = require_cupy(f"device '{device}'")
        with cuda_context(Device(device)):
            if kind == "uniform":
                array = cupy.random.uniform(params["low"], params["high"], shape, dtype=draw_dtype)
                # cupy's float32 draw is 1 - (0, 1], which rounds to exactly 1 now and then
                return _below_high(array.astype(dtype, copy=False), params["low"], params["high"])
            array = cupy.random.normal(params["mean"], params["std"], shape, dtype=draw_dtype)
        return array.astype(dtype, copy=False)
    rng = _numpy_rng(generator)
    if kind == "uniform":
        array = rng.random(shape, dtype=draw_dtype)  # [0, 1) in float32 and float64
        low, high = params["low"], params["high"]
        if (low, high) == (0, 1) and dtype == draw_dtype:
            return array
        if (low, high) != (0, 1):
            array = array * draw_dtype.type(high - low) + draw_dtype.type(low)
        return _below_high(array.astype(dtype, copy=False), low, high)
    array = rng.standard_normal(shape, dtype=draw_dtype)
    mean, std = params["mean"], params["std"]
    if (mean, std) != (0, 1):
        array = array * draw_dtype.type(std) + draw_dtype.type(mean)
    return array.astype(dtype, copy=False)


def _below_high(array: Any, low: float, high: float) -> Any:
    """Clamp uniform draws to the largest value of their dtype below ``high``, keeping the
    range half-open as PyTorch's: a float32 draw above ``1 - 2**-12`` rounds to 1.0 in
    float16, and ``u * (high - low) + low`` can round up to ``high`` in any dtype."""
    dtype = array.dtype.type
    top = dtype(high)
    if not dtype(low) < top:
        return array  # an empty or reversed range: nothing lies below high
    top = np.nextafter(top, dtype(-np.inf))
    return get_array_module(array).minimum(array, top)


@uses_default_device
def rand(
    *sizes: Any,
    size: Any = None,
    generator: Generator | None = None,
    dtype: Any = None,
    device: Any = None,
    requires_grad: bool = False,
) -> Tensor:
    """Uniform samples from ``[0, 1)``."""
    shape = _shape(_sizes(sizes, size))
    array = sample("uniform", shape, dtype or DEFAULT_FLOAT, device, generator, low=0, high=1)
    return _finish(array, None, None, requires_grad)


@uses_default_device
def randn(
    *sizes: Any,
    size: Any = None,
    generator: Generator | None = None,
    dtype: Any = None,
    device: Any = None,
    requires_grad: bool = False,
) -> Tensor:
    """Standard normal samples."""
    shape = _shape(_sizes(sizes, size))
    array = sample("normal", shape, dtype or DEFAULT_FLOAT, device, generator, mean=0, std=1)
    return _finish(array, None, None, requires_grad)


@uses_default_device
def randint(
    low: int,
    high: int | None = None,
    size: Sequence | None = None,
    *,
    generator: Generator | None = None,
    dtype: Any = None,
    device: Any = None,
) -> Tensor:
    """Integers from ``[low, high)``: ``randint(high, size)`` or ``randint(low, high, size)``."""
    if size is None:
        if high is None or not isinstance(high, (tuple, list)):
            raise TypeError("randint needs a size: randint(high, (n,)) or randint(low, high, (n,))")
        low, high, size = 0, low, high
    if high is None:
        low, high = 0, low
    if high <= low:
        raise ValueError(f"randint: high ({high}) must be greater than low ({low})")
    array = _numpy_rng(generator).integers(low, high, size=_shape((size,)), dtype=np.int64)
    return _finish(array, dtype, device, False)


def rand_like(
    input: Tensor, dtype: Any = None, device: Any = None, requires_grad: bool = False
) -> Tensor:
    """Uniform samples with ``input``'s shape, dtype and device."""
    dtype, device = _like(input, dtype, device)
    return rand(input.shape, dtype=dtype, device=device, requires_grad=requires_grad)


def randn_like(
    input: Tensor, dtype: Any = None, device: Any = None, requires_grad: bool = False
) -> Tensor:
    """Normal samples with ``input``'s shape, dtype and device."""
    dtype, device = _like(input, dtype, device)
    return randn(input.shape, dtype=dtype, device=device, requires_grad=requires_grad)


def randint_like(
    input: Tensor,
    low: int,
    high: int | None = None,
    *,
    dtype: Any = None,
    device: Any = None,
    generator: Generator | None = None,
) -> Tensor:
    """Integers from ``[low, high)`` (``randint_like(x, high)``: from ``[0, high)``) with
    ``input``'s shape, dtype and device."""
    dtype, device = _like(input, dtype, device)
    return randint(low, high, input.shape, generator=generator, dtype=dtype, device=device)


@uses_default_device
def randperm(
    n: int,
    generator: Generator | None = None,
    device: Any = None,
    *,
    dtype: Any = None,
    requires_grad: bool = False,
) -> Tensor:
    """A random permutation of ``0..n-1`` (int64 unless ``dtype`` says otherwise)."""
    order = _numpy_rng(generator).permutation(n).astype(np.int64)
    return _finish(order, dtype, device, requires_grad)


def multinomial(
    input: Tensor,
    num_samples: int,
    replacement: bool = False,
    generator: Generator | None = None,
) -> Tensor:
    """Draw category indices with probabilities proportional to the rows of ``input``."""
    probs = np.asarray(input.detach().cpu()._array, dtype=np.float64)
    if probs.ndim not in (1, 2):
        raise ValueError(f"multinomial: input must be 1-D or 2-D, got shape {probs.shape}")
    rows = probs.reshape(-1, probs.shape[-1])
    if (rows < 0).any() or not np.isfinite(rows).all():
        raise ValueError("multinomial: probabilities must be finite and non-negative")
    totals = rows.sum(axis=1, keepdims=True)
    if (totals <= 0).any():
        raise ValueError("multinomial: every row needs a positive sum of probabilities")
    if not replacement and num_samples > (rows > 0).sum(axis=1).min():
        raise ValueError(
            f"multinomial: cannot draw {num_samples} samples without replacement from a row "
            "with fewer nonzero probabilities; pass replacement=True"
        )
    rng = _numpy_rng(generator)
    out = np.stack(
        [
            rng.choice(rows.shape[1], size=num_samples, replace=replacement, p=row / row.sum())
            for row in rows
        ]
    ).astype(np.int64)
    out = out.reshape(probs.shape[:-1] + (num_samples,))
    return _finish(out, None, device_of(input._array), False)


def normal_(
    t: Tensor, mean: float = 0.0, std: float = 1.0, generator: Generator | None = None
) -> Tensor:
    """In place: fill with normal samples (a floating-point tensor only)."""
    from dtrain._tensor.ops.inplace import fill_random_

    _check_float_target(t, "normal_")
    values = sample("normal", t.shape, t.dtype, device_of(t._array), generator, mean=mean, std=std)
    return fill_random_(t, values, "normal_")


def uniform_(
    t: Tensor, a: float = 0.0, b: float = 1.0, generator: Generator | None = None
) -> Tensor:
    """In place: fill with uniform samples from ``[a, b)`` (a floating-point tensor only)."""
    from dtrain._tensor.ops.inplace import fill_random_

    _check_float_target(t, "uniform_")
    values = sample("uniform", t.shape, t.dtype, device_of(t._array), generator, low=a, high=b)
    return fill_random_(t, values, "uniform_")


def bernoulli(
    input: Tensor, p: float | None = None, *, generator: Generator | None = None
) -> Tensor:
    """0/1 draws, 1 with probability ``input`` elementwise (or ``p`` when given), in
    ``input``'s dtype, outside the graph (no gradient flows through a draw)."""
    if input._array.dtype.kind != "f":
        raise TypeError(
            f"bernoulli: the probabilities must be a float tensor, got {input.dtype}; "
            "call .float() first"
        )
    probability = input.detach()._array if p is None else p
    _check_probability(probability, "bernoulli")
    draws = _uniform_like(input, generator)
    return wrap((draws < probability).astype(input._array.dtype))


def bernoulli_(t: Tensor, p: Any = 0.5, generator: Generator | None = None) -> Tensor:
    """In place: fill with 0/1 draws, 1 with probability ``p`` (a number or a tensor that
    broadcasts to ``t``); integer and bool tensors too, as PyTorch."""
    from dtrain._tensor.ops.inplace import fill_random_

    probability = p.detach()._array if isinstance(p, Tensor) else p
    _check_probability(probability, "bernoulli_")
    draws = _uniform_like(t, generator)
    if isinstance(probability, np.ndarray) and not isinstance(draws, np.ndarray):
        probability = get_array_module(draws).asarray(probability)
    return fill_random_(t, (draws < probability).astype(t._array.dtype), "bernoulli_")


def exponential_(t: Tensor, lambd: float = 1.0, generator: Generator | None = None) -> Tensor:
    """In place: fill with samples of the exponential distribution of rate ``lambd``
    (a floating-point tensor only)."""
    from dtrain._tensor.ops.inplace import fill_random_

    _check_float_target(t, "exponential_")
    if not lambd > 0:
        raise ValueError(f"exponential_: lambd must be positive, got {lambd}")
    draws = _uniform_like(t, generator)
    values = -get_array_module(draws).log1p(-draws) / lambd
    return fill_random_(t, values.astype(t._array.dtype), "exponential_")


def _uniform_like(t: Tensor, generator: Generator | None) -> Any:
    """Uniform [0, 1) draws of ``t``'s shape, on its device, in float64 on the CPU (so a
    probability compares at full precision), float32 or float64 on CUDA."""
    draw = t._array.dtype if t._array.dtype in (np.float32, np.float64) else np.float32
    if device_of(t._array).type == "cpu":
        draw = np.float64
    return sample("uniform", t.shape, draw, device_of(t._array), generator, low=0, high=1)


def _check_probability(p: Any, name: str) -> None:
    values = np.asarray(p.get() if hasattr(p, "get") else p)
    if values.size and not ((values >= 0) & (values <= 1)).all():
        raise ValueError(f"{name}: probabilities must lie in [0, 1], got values outside it")


def _check_float_target(t: Tensor, name: str) -> None:
    # numpy would truncate the samples to integers silently (uniform_(0, 1) gives all zeros).
    if t._array.dtype.kind != "f":
        raise TypeError(
            f"{name} fills floating-point tensors only, got one of dtype {t.dtype}; convert "
            "it first with .float() (or draw integers with dt.randint)"
        )


__all__ = [
    "bernoulli",
    "bernoulli_",
    "exponential_",
    "multinomial",
    "normal_",
    "rand",
    "rand_like",
    "randint",
    "randint_like",
    "randn",
    "randn_like",
    "randperm",
    "sample",
    "uniform_",
]
