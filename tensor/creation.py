"""Creating tensors: from data, filled, ranges and random samples, as PyTorch names them."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module, is_cuda_array, require_cupy
from dtrain.runtime.device import Device, cuda_context, device_of, to_device
from dtrain.runtime.dtypes import DEFAULT_FLOAT, DEFAULT_INT, SUPPORTED, to_dtype
from dtrain.runtime.random import Generator, default_generator


def _finish(array: Any, dtype: Any, device: Any, requires_grad: bool) -> Tensor:
    if dtype is not None:
        array = array.astype(to_dtype(dtype), copy=False)
    if device is not None:
        array = to_device(array, Device(device))
    t = wrap(array)
    if requires_grad:
        t.requires_grad = True
    return t


def _from_data(data: Any, copy: bool, dtype: Any = None) -> Any:
    """An array from Python data, numpy/cupy arrays or tensors, with PyTorch's dtypes (for
    Python data, ``dtype`` when given: 0.05 in float64 is not rounded through float32)."""
    if isinstance(data, Tensor):
        return data._array.copy() if copy else data._array
    if isinstance(data, np.ndarray) or is_cuda_array(data):
        return data.copy() if copy else data
    if isinstance(data, np.generic):
        return np.array(data)
    try:
        array = np.array(data)
    except ValueError as exc:
        raise ValueError(f"cannot make a tensor from {data!r}: {exc}") from None
    if dtype is not None and array.dtype.kind in "biuf":
        return array.astype(to_dtype(dtype), copy=False)
    if array.dtype == np.float64:
        array = array.astype(DEFAULT_FLOAT)  # Python floats default to float32
    elif array.dtype.kind in "iu":
        array = array.astype(DEFAULT_INT)
    if array.dtype not in SUPPORTED:
        raise TypeError(
            f"cannot make a tensor from {type(data).__name__} data of numpy dtype {array.dtype}; "
            "use numbers or bools (nested lists of equal length)"
        )
    return array


def tensor(data: Any, dtype: Any = None, device: Any = None, requires_grad: bool = False) -> Tensor:
    """A new tensor holding a copy of ``data`` (numbers, nested lists, numpy arrays)."""
    return _finish(_from_data(data, copy=True, dtype=dtype), dtype, device, requires_grad)


def as_tensor(data: Any, dtype: Any = None, device: Any = None) -> Tensor:
    """Like ``tensor`` but shares memory with a numpy array or tensor when it can."""
    if isinstance(data, Tensor) and dtype is None and device is None:
        return data
    return _finish(_from_data(data, copy=False, dtype=dtype), dtype, device, False)


def from_numpy(array: np.ndarray) -> Tensor:
    """A tensor sharing memory with ``array``, keeping its dtype."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy expects a numpy.ndarray, got {type(array).__name__}")
    to_dtype(array.dtype)  # refuses unsupported dtypes with a clear message
    return wrap(array)


def _shape(size: Sequence) -> tuple:
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = size[0]
    shape = tuple(size)
    for s in shape:
        if not isinstance(s, (int, np.integer)) or isinstance(s, bool) or s < 0:
            raise ValueError(f"sizes must be non-negative ints, got {list(shape)}")
    return shape


def size_argument(value: Any, name: str, where: str, minimum: int = 0) -> int:
    """A layer's size argument (``in_features``, ``groups`` ...) as a Python int.

    Takes any integer, numpy's included (``np.prod(shape)``); a bool is refused, as
    ``Linear(2, True)`` is a mistake for ``Linear(2, 1, bias=True)``.

    Raises:
        TypeError: ``value`` is not an integer.
        ValueError: it is below ``minimum``.
    """
    try:
        size = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        size = None
    if size is None:
        raise TypeError(f"{where}: {name} must be an int, got {value!r}")
    if size < minimum:
        raise ValueError(f"{where}: {name} must be an int >= {minimum}, got {size}")
    return size


def _sizes(sizes: tuple, size: Any) -> tuple:
    """The shape from ``f(2, 3)``, ``f((2, 3))`` or ``f(size=(2, 3))``."""
    if size is None:
        return sizes
    if sizes:
        raise TypeError(f"give the sizes {sizes} or size={size!r}, not both")
    return (tuple(size) if isinstance(size, (tuple, list)) else (size,),)


def _xp(device: Any) -> Any:
    if device is not None and Device(device).type == "cuda":
        return require_cupy(f"device '{device}'")
    return np


def _filled(
    kind: str, size: Sequence, dtype: Any, device: Any, requires_grad: bool, value: Any = 0
) -> Tensor:
    shape = _shape(size)
    dtype = DEFAULT_FLOAT if dtype is None else to_dtype(dtype)
    xp = _xp(device)
    if device is not None and Device(device).type == "cuda":
        with cuda_context(Device(device)):
            array = _fill(xp, kind, shape, dtype, value)
    else:
        array = _fill(xp, kind, shape, dtype, value)
    return _finish(array, None, None, requires_grad)


def _fill(xp: Any, kind: str, shape: tuple, dtype: Any, value: Any) -> Any:
    if kind == "empty":
        return xp.empty(shape, dtype=dtype)
    return xp.full(shape, value, dtype=dtype)


def zeros(
    *sizes: Any,
    size: Any = None,
    dtype: Any = None,
    device: Any = None,
    requires_grad: bool = False,
) -> Tensor:
    """A tensor of zeros: ``zeros(2, 3)``, ``zeros((2, 3))`` or ``zeros(size=(2, 3))``."""
    return _filled("full", _sizes(sizes, size), dtype, device, requires_grad, 0)


def ones(
    *sizes: Any,
    size: Any = None,
    dtype: Any = None,
    device: Any = None,
    requires_grad: bool = False,
) -> Tensor:
    """A tensor of ones."""
    return _filled("full", _sizes(sizes, size), dtype, device, requires_grad, 1)


def empty(
    *sizes: Any,
    size: Any = None,
    dtype: Any = None,
    device: Any = None,
    requires_grad: bool = False,
) -> Tensor:
    """A tensor whose values are whatever the memory held."""
    return _filled("empty", _sizes(sizes, size), dtype, device, requires_grad)


def full(
    size: Sequence,
    fill_value: Any,
    dtype: Any = None,
    device: Any = None,
    requires_grad: bool = False,
) -> Tensor:
    """A tensor filled with ``fill_value`` (its dtype follows the value, as in PyTorch)."""
    if dtype is None:
        dtype = (
            np.bool_
            if isinstance(fill_value, bool)
            else (DEFAULT_INT if isinstance(fill_value, int) else DEFAULT_FLOAT)
        )
    return _filled("full", (tuple(size),), dtype, device, requires_grad, fill_value)


def _like(t: Tensor, dtype: Any, device: Any) -> tuple:
    return (t.dtype if dtype is None else dtype), (
        device_of(t._array) if device is None else device
    )


def zeros_like(
    input: Tensor, dtype: Any = None, device: Any = None, requires_grad: bool = False
) -> Tensor:
    """Zeros with ``input``'s shape, dtype and device."""
    dtype, device = _like(input, dtype, device)
    return zeros(input.shape, dtype=dtype, device=device, requires_grad=requires_grad)


def ones_like(
    input: Tensor, dtype: Any = None, device: Any = None, requires_grad: bool = False
) -> Tensor:
    """Ones with ``input``'s shape, dtype and device."""
    dtype, device = _like(input, dtype, device)
    return ones(input.shape, dtype=dtype, device=device, requires_grad=requires_grad)


def empty_like(
    input: Tensor, dtype: Any = None, device: Any = None, requires_grad: bool = False
) -> Tensor:
    """Uninitialised memory with ``input``'s shape, dtype and device."""
    dtype, device = _like(input, dtype, device)
    return empty(input.shape, dtype=dtype, device=device, requires_grad=requires_grad)


def full_like(
    input: Tensor,
    fill_value: Any,
    dtype: Any = None,
    device: Any = None,
    requires_grad: bool = False,
) -> Tensor:
    """``fill_value`` everywhere, with ``input``'s shape, dtype and device."""
    dtype, device = _like(input, dtype, device)
    return full(input.shape, fill_value, dtype=dtype, device=device, requires_grad=requires_grad)


def eye(
    n: int,
    m: int | None = None,
    dtype: Any = None,
    device: Any = None,
    requires_grad: bool = False,
) -> Tensor:
    """The ``n × m`` identity matrix."""
    array = _xp(device).eye(n, m, dtype=DEFAULT_FLOAT if dtype is None else to_dtype(dtype))
    return _finish(array, None, device, requires_grad)


def arange(
    start: float,
    end: float | None = None,
    step: float = 1,
    dtype: Any = None,
    device: Any = None,
    requires_grad: bool = False,
) -> Tensor:
    """``[start, end)`` in steps; int64 when every argument is an int, else float32."""
    start, end, step = (v.item() if isinstance(v, Tensor) else v for v in (start, end, step))
    if end is None:
        start, end = 0, start
    if step == 0:
        raise ValueError("arange: step must be nonzero")
    if dtype is None:
        integral = all(isinstance(v, (int, np.integer)) for v in (start, end, step))
        dtype = DEFAULT_INT if integral else DEFAULT_FLOAT
    array = _xp(device).arange(
        start, end, step, dtype=np.float64 if to_dtype(dtype).kind == "f" else None
    )
    return _finish(array, dtype, device, requires_grad)


def linspace(
    start: float,
    end: float,
    steps: int,
    dtype: Any = None,
    device: Any = None,
    requires_grad: bool = False,
) -> Tensor:
    """``steps`` evenly spaced values from ``start`` to ``end`` inclusive."""
    if steps < 0:
        raise ValueError(f"linspace: steps must be non-negative, got {steps}")
    array = _xp(device).linspace(start, end, steps)
    return _finish(array, DEFAULT_FLOAT if dtype is None else dtype, device, requires_grad)


# ---- random ------------------------------------------------------------------------------
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
            else:
                array = cupy.random.normal(params["mean"], params["std"], shape, dtype=draw_dtype)
        return array.astype(dtype, copy=False)
    rng = _numpy_rng(generator)
    if kind == "uniform":
        array = rng.random(shape, dtype=draw_dtype)
        low, high = params["low"], params["high"]
        if (low, high) != (0, 1):
            array = array * draw_dtype.type(high - low) + draw_dtype.type(low)
    else:
        array = rng.standard_normal(shape, dtype=draw_dtype)
        mean, std = params["mean"], params["std"]
        if (mean, std) != (0, 1):
            array = array * draw_dtype.type(std) + draw_dtype.type(mean)
    return array.astype(dtype, copy=False)


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


def randperm(n: int, generator: Generator | None = None, device: Any = None) -> Tensor:
    """A random permutation of ``0..n-1`` (int64)."""
    return _finish(_numpy_rng(generator).permutation(n).astype(np.int64), None, device, False)


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
    "arange",
    "bernoulli",
    "bernoulli_",
    "exponential_",
    "as_tensor",
    "empty",
    "empty_like",
    "eye",
    "from_numpy",
    "full",
    "full_like",
    "get_array_module",
    "linspace",
    "multinomial",
    "normal_",
    "ones",
    "ones_like",
    "rand",
    "rand_like",
    "randint",
    "randint_like",
    "randn",
    "randn_like",
    "randperm",
    "sample",
    "size_argument",
    "tensor",
    "uniform_",
    "zeros",
    "zeros_like",
]
