"""Kernel sources, built lazily into cupy ``RawModule`` objects and cached; launch helpers.

Each kernel module calls ``register`` once at import with its CUDA C source and the
template instantiations it launches (``"layer_norm_forward<float>"``). Nothing is compiled
until ``kernel`` is first asked for one of them on a device; ``sources()`` lists every
registered source so a CPU test can compile them all with nvcc.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dtrain.runtime.backend import on_device_of, require_cupy
from dtrain.runtime.cuda_graph import is_current_stream_capturing
from dtrain.runtime.kernels.prelude import PRELUDE

#: Options for both compilers (NVRTC through cupy on the GPU, nvcc in CI).
OPTIONS = ("-std=c++17",)

#: The storage types a kernel is instantiated for, by numpy dtype.
TYPE_NAMES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
TYPE_NAMES[np.dtype(np.float16)] = "half_t"


@dataclass(frozen=True)
class KernelSource:
    """One compilation unit: its name, its full CUDA C source, and the instantiations
    (``name_expressions``) cupy compiles and looks kernels up by."""

    name: str
    code: str
    name_expressions: tuple[str, ...]


_REGISTRY: dict[str, KernelSource] = {}
_MODULES: dict[tuple[str, int], Any] = {}  # (source name, device) -> cupy.RawModule
_FUNCTIONS: dict[tuple[str, str, int], Any] = {}  # (source, expression, device) -> kernel


def templated(
    kernels: tuple[str, ...], types: tuple[str, ...] = ("float", "double", "half_t")
) -> tuple[str, ...]:
    """Every ``kernel<type>`` name expression of ``kernels`` times ``types``."""
    return tuple(f"{k}<{t}>" for k in kernels for t in types)


def register(name: str, body: str, name_expressions: tuple[str, ...]) -> KernelSource:
    """Record a kernel source (``body`` after the shared prelude) under ``name``."""
    if name in _REGISTRY:
        raise ValueError(f"kernel source {name!r} is registered twice; give it another name")
    source = KernelSource(name, PRELUDE + body, tuple(name_expressions))
    _REGISTRY[name] = source
    return source


def sources() -> list[KernelSource]:
    """Every registered kernel source (importing ``dtrain.runtime.kernels`` registers all)."""
    return list(_REGISTRY.values())


def type_name(dtype: Any) -> str | None:
    """The CUDA storage type for ``dtype`` (``"float"``...), or None when no kernel has it."""
    return TYPE_NAMES.get(np.dtype(dtype))


def kernel(source: KernelSource, expression: str) -> Any:
    """The compiled kernel ``expression`` of ``source`` on the current device (built once
    per device, on first use, then cached)."""
    cupy = require_cupy(f"the CUDA kernel {expression}")
    if expression not in source.name_expressions:
        raise KeyError(f"{expression!r} is not an instantiation of kernel source {source.name!r}")
    device = cupy.cuda.Device().id
    function = _FUNCTIONS.get((source.name, expression, device))
    if function is None:
        module = _MODULES.get((source.name, device))
        if module is None:
            module = cupy.RawModule(
                code=source.code, options=OPTIONS, name_expressions=list(source.name_expressions)
            )
            _MODULES[(source.name, device)] = module
        function = module.get_function(expression)
        _FUNCTIONS[(source.name, expression, device)] = function
    return function


# ---- launch helpers -----------------------------------------------------------------------
ELEMENTWISE_BLOCK = 256
_MAX_GRID = 65536  # grid-stride loops cover the rest


def elementwise_grid(n: int, block: int = ELEMENTWISE_BLOCK) -> tuple[int]:
    """Grid for a grid-stride loop over ``n`` elements (at least one block)."""
    return (max(1, min(_MAX_GRID, math.ceil(n / block))),)


@functools.lru_cache(maxsize=1024)  # asked on every launch, for a model's few row lengths
def row_block(cols: int) -> int:
    """Threads per block for a one-block-per-row kernel: a multiple of 32 (the block
    reductions need whole warps), enough to cover short rows, at most 512."""
    return int(min(512, max(32, 1 << max(0, math.ceil(math.log2(max(cols, 1)))))))


def on_array_device(fn: Callable) -> Callable:
    """Run ``fn`` with the device of its first argument (a cupy array) current, so its
    outputs, and the module it launches, live on that array's GPU."""

    @functools.wraps(fn)
    def wrapper(array: Any, *args: Any, **kwargs: Any) -> Any:
        with on_device_of(array):
            return fn(array, *args, **kwargs)

    return wrapper


def launch(fn: Any, grid: tuple[int, ...], block: int, args: tuple) -> None:
    """Launch ``fn`` on the current stream; ``args`` are cupy arrays and numpy scalars of
    the exact C types the kernel declares (``np.int64`` for ``long long``...)."""
    fn(grid, (block,), args)


_done_counters: dict[tuple[int, int], Any] = {}  # (device, stream) -> the int32 counter


def done_counter(cupy: Any, device: int) -> Any:
    """The int32 counter, in device memory, on which the blocks of a launch on the current
    stream count themselves done, so that the last one can finish the launch's reduction
    (``layer_norm``, ``grad_norm``, ``cross_entropy``): it is 0 between launches, and the
    last block sets it back. Launches on one stream never overlap, so one counter per
    (device, stream) serves every kernel; two streams get two. None where this stream has
    none yet and a CUDA graph is being captured: made in a capture, its memory would come
    from the graph's pool and go with the graph (``CUDAGraph.capture_begin`` makes the
    capture stream's before it begins; without one the kernels take a longer path)."""
    key = (device, cupy.cuda.get_current_stream().ptr)
    counter = _done_counters.get(key)
    if counter is None and not is_current_stream_capturing():
        with cupy.cuda.Device(device):
            counter = _done_counters.setdefault(key, cupy.zeros(1, np.int32))
    return counter


def release_done_counter(device: int, stream: int) -> Any:
    """Take the counter of ``stream`` (a pointer) out of the table and return it (or None):
    a CUDA graph keeps its capture stream's, which its replays use."""
    return _done_counters.pop((device, stream), None)


def i64(value: int) -> np.int64:
    """A ``long long`` kernel argument."""
    return np.int64(value)


def f64(value: float) -> np.float64:
    """A ``double`` kernel argument (scalar hyperparameters are passed as double)."""
    return np.float64(value)


def contiguous(array: Any, dtype: Any = None) -> Any:
    """``array`` as a C-contiguous array of ``dtype``; returns it untouched, without a call
    into cupy, when it already is one (those calls are a measurable share of a step's host
    time on small models)."""
    if array.flags.c_contiguous and (dtype is None or array.dtype == dtype):
        return array
    return require_cupy("a contiguous copy").ascontiguousarray(array, dtype=dtype)
