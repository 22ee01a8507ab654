"""``autocast``: regions where matmul-heavy ops run in float16, as ``torch.autocast``.

The state is per thread and per device type (``"cpu"``, ``"cuda"``): an op looks up the
state of the device its tensors live on, so ``autocast("cuda")`` leaves CPU tensors alone.
Regions nest; leaving one restores the state it found. The ops consult the state through
``dtrain._tensor.amp.cast.autocast_inputs``; this module only keeps it.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from dtrain.runtime import backend
from dtrain.runtime.dtypes import float16, to_dtype

DEVICE_TYPES = ("cpu", "cuda")


class _AutocastState(threading.local):
    """One thread's autocast settings; ``__init__`` runs once in every thread that reads it."""

    def __init__(self) -> None:
        self.enabled = dict.fromkeys(DEVICE_TYPES, False)
        self.dtype = dict.fromkeys(DEVICE_TYPES, float16)
        self.active = False  # any device type enabled: the ops' one-attribute fast path
        self.cache_enabled = True
        self.nesting = 0  # open autocast regions; the cast cache dies with the outermost
        self.cache: dict[int, tuple] = {}
        # The CUDA parameters whose float16 casts the last outermost region used, by id
        # (weak references): the next region that casts one of them first casts all at
        # once (amp/cast.py).
        self.recent: dict[int, weakref.ref] = {}
        self.batched = False  # this region has cast ``recent`` already
        self.used: set[int] = set()  # ids of the parameters whose casts this region used


state = _AutocastState()


def _check_device_type(device_type: Any) -> str:
    if device_type not in DEVICE_TYPES:
        raise ValueError(
            f"autocast: device_type must be 'cpu' or 'cuda', got {device_type!r} (a device "
            "type, without an index such as ':0')"
        )
    return device_type


def _names_bfloat16(spec: Any) -> bool:
    # torch.bfloat16, ml_dtypes.bfloat16, jnp.bfloat16 and "bfloat16" all print the name.
    text = str(getattr(spec, "name", spec)).lower()
    return "bfloat16" in text or text == "bf16"


def _cuda_bfloat16() -> np.dtype | None:
    """cupy's bfloat16 dtype when the installed cupy has one (cupy 14 does not)."""
    cupy = backend.cupy_module()
    spec = getattr(cupy, "bfloat16", None) if cupy is not None else None
    return None if spec is None else np.dtype(spec)


def resolve_dtype(device_type: str, dtype: Any) -> np.dtype:
    """The lower-precision dtype an autocast region on ``device_type`` casts to.

    Raises:
        TypeError: bfloat16 where the array library has none (numpy never does), or a dtype
            dtrain does not know.
        ValueError: a dtype that is not a lower-precision float.
    """
    if dtype is None:
        return float16
    if _names_bfloat16(dtype):
        resolved = _cuda_bfloat16() if device_type == "cuda" else None
        if resolved is None:
            where = (
                "numpy has no bfloat16 type"
                if device_type == "cpu"
                else "the installed cupy has no bfloat16 type (or CUDA is not available)"
            )
            raise TypeError(
                f"autocast(device_type={device_type!r}, dtype={dtype!r}): {where}; use "
                "dtype=dtrain.float16 (with a GradScaler for training)"
            )
        return resolved
    resolved = to_dtype(dtype)
    if resolved != float16:
        raise ValueError(
            f"autocast: dtype must be a lower-precision float, got {resolved}; use "
            "dtype=dtrain.float16 (regions run selected ops in that dtype and keep the rest)"
        )
    return resolved


class autocast:  # noqa: N801 - PyTorch's name for a context manager
    """Run matmul-heavy ops in ``dtype`` inside a region; sensitive ops run in float32.

    A context manager and a decorator, as ``torch.autocast``::

        with dt.autocast("cuda"):
            loss = F.cross_entropy(model(x), y)   # linear layers in float16, loss in float32
        loss.backward()                           # outside the region, as PyTorch advises

    Args:
        device_type: ``"cuda"`` or ``"cpu"``: the region affects tensors on that device type.
        dtype: the lower-precision dtype; ``None`` means float16 (also on the CPU, where
            PyTorch would pick bfloat16, which numpy lacks).
        enabled: ``False`` turns autocast off inside the region (full precision again).
        cache_enabled: reuse the low-precision copy of a float32 leaf (a parameter) for
            every op in the region instead of casting it again.

    Raises:
        ValueError: an unknown device type or a dtype that is not a lower-precision float.
        TypeError: bfloat16 where the array library has none.
    """

    def __init__(
        self,
        device_type: str,
        dtype: Any = None,
        enabled: bool = True,
        cache_enabled: bool | None = None,
    ) -> None:
        self.device_type = _check_device_type(device_type)
        self.enabled = bool(enabled)
        # Resolved only when enabled: a disabled region never casts, so any dtype will do.
        self.fast_dtype = resolve_dtype(self.device_type, dtype) if self.enabled else float16
        self._dtype_spec = dtype
        self.cache_enabled = True if cache_enabled is None else bool(cache_enabled)
        self._saved: list[tuple] = []

    def __enter__(self) -> autocast:
        kind = self.device_type
        self._saved.append((state.enabled[kind], state.dtype[kind], state.cache_enabled))
        state.enabled[kind] = self.enabled
        if self.enabled:
            state.dtype[kind] = self.fast_dtype
        state.cache_enabled = self.cache_enabled
        state.active = any(state.enabled.values())
        state.nesting += 1
        return self

    def __exit__(self, *exc: object) -> None:
        kind = self.device_type
        state.enabled[kind], state.dtype[kind], state.cache_enabled = self._saved.pop()
        state.active = any(state.enabled.values())
        state.nesting -= 1
        if state.nesting == 0:
            state.recent = {  # what the region used, not what it cast in advance
                key: weakref.ref(entry[0])
                for key, entry in state.cache.items()
                if key in state.used
                and entry[4] == float16
                and backend.is_cuda_array(entry[0]._array)
            }
            state.cache.clear()  # casts of parameters go stale once the step updates them
            state.used.clear()
            state.batched = False

    def __call__(self, function: Callable) -> Callable:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with autocast(self.device_type, self._dtype_spec, self.enabled, self.cache_enabled):
                return function(*args, **kwargs)

        return wrapper


def is_autocast_enabled(device_type: str = "cuda") -> bool:
    """True inside an enabled autocast region for ``device_type`` on this thread."""
    return state.enabled[_check_device_type(device_type)]


def get_autocast_dtype(device_type: str = "cuda") -> np.dtype:
    """The dtype autocast regions on ``device_type`` cast to (float16 unless set)."""
    return state.dtype[_check_device_type(device_type)]


def clear_autocast_cache() -> None:
    """Drop this thread's cached low-precision copies of parameters."""
    state.cache.clear()


__all__ = [
    "autocast",
    "clear_autocast_cache",
    "get_autocast_dtype",
    "is_autocast_enabled",
    "resolve_dtype",
    "state",
]
