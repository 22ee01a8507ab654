"""``autocast_inputs``: the one call an op makes to take part in autocast.

An op's public function starts with ``a, b = autocast_inputs("lower", a, b)`` (matmul-heavy
ops) or ``x, w = autocast_inputs("float32", x, w)`` (numerically sensitive ones). Outside
autocast it returns its arguments untouched after one attribute read.

Inside a region for the tensors' device type, floating tensors other than float64 are cast
(differentiably: the gradient comes back in the original dtype) to the region's dtype or to
float32, as PyTorch does; other arguments pass through. With the cache on, a float32 leaf
that requires grad (a parameter) is cast once per region and the copy reused by every op,
for as long as the parameter is not changed in place.
"""

from __future__ import annotations

from typing import Any

from dtrain._tensor.amp.autocast_mode import state
from dtrain._tensor.autograd.grad_mode import state as _grad_state
from dtrain._tensor.ops.copy import Cast
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.backend import device_id, is_cuda_array
from dtrain.runtime.dtypes import float16, float32, float64
from dtrain.runtime.kernels import cast as _cast_kernel
from dtrain.runtime.kernels import multi_tensor

POLICIES = ("lower", "float32")


def autocast_inputs(policy: str, *args: Any) -> tuple:
    """``args`` with their floating tensors cast for an autocast region (else unchanged).

    Args:
        policy: ``"lower"`` casts to the region's dtype (float16), ``"float32"`` to float32.
        *args: the op's arguments; non-tensors and float64/integer tensors pass through.

    Returns:
        A tuple as long as ``args``.
    """
    if not state.active:
        return args
    if policy not in POLICIES:
        raise ValueError(f"autocast_inputs: policy must be one of {POLICIES}, got {policy!r}")
    return tuple(_cast(policy, arg) for arg in args)


def _cast(policy: str, arg: Any) -> Any:
    if not isinstance(arg, Tensor):
        return arg
    array = arg._array
    if array.dtype.kind != "f" or array.dtype == float64:
        return arg  # PyTorch leaves float64 and non-float tensors to normal promotion
    device_type = "cuda" if is_cuda_array(array) else "cpu"
    if not state.enabled[device_type]:
        return arg
    target = state.dtype[device_type] if policy == "lower" else float32
    if array.dtype == target:
        return arg
    cacheable = (
        policy == "lower"
        and state.cache_enabled
        and array.dtype == float32
        and arg._requires_grad
        and arg.grad_fn is None
        and arg._base is None
    )
    if not cacheable:
        return _autocast_copy(arg, target)
    return _cached_cast(arg, target)


def _autocast_copy(arg: Tensor, target: Any) -> Tensor:
    """``arg`` cast to ``target``, its Cast node marked as autocast's: the copy is no
    user's, so an op may send its gradient in the original dtype (``float32_grad_wanted``)."""
    copy = arg.to(target)
    node = copy.grad_fn
    if node is not None:
        node.for_autocast = True
    return copy


def _cached_cast(leaf: Tensor, target: Any) -> Tensor:
    # The key holds the tensor itself in its entry, so its id cannot be reused meanwhile.
    key = id(leaf)
    recording = _grad_state.enabled
    state.used.add(key)  # what the next region casts at once (amp/autocast_mode.py)
    copy = _fresh_copy(state.cache.get(key), leaf, recording, target)
    if copy is not None:
        return copy
    if not state.batched and key in state.recent and target == float16:
        # Once per region, when it casts a parameter the last one cast: all of those at
        # once (a region that uses another model's parameters casts only its own).
        state.batched = True
        _cast_recent(recording)
        copy = _fresh_copy(state.cache.get(key), leaf, recording, target)
        if copy is not None:
            return copy
    copy = _autocast_copy(leaf, target)
    state.cache[key] = (leaf, leaf._array, leaf._version[0], recording, target, copy)
    return copy


def _fresh_copy(entry: tuple | None, leaf: Tensor, recording: bool, target: Any) -> Any:
    """The cached cast of ``leaf`` when it still stands for it, else None."""
    if entry is None:
        return None
    _, array, version, was_recording, dtype, copy = entry
    node = copy.grad_fn
    fresh = (
        array is leaf._array  # not replaced (p.data = ..., Module.to)
        and version == leaf._version[0]  # not updated in place since (an optimizer step)
        and was_recording == recording  # a copy made under no_grad carries no graph
        and dtype == target
        and (node is None or not node.freed)  # its graph not freed by a backward
    )
    return copy if fresh else None


def _cast_recent(recording: bool) -> None:
    """Cast to float16 the CUDA parameters the last region used, in one multi-tensor launch
    per device (per 48 of them) instead of one launch each, and cache the copies; those that
    changed kind since (no longer float32, contiguous or a leaf that requires grad) are left
    to be cast one by one if used."""
    groups: dict[int, list[Tensor]] = {}
    for ref in state.recent.values():
        leaf = ref()
        if (
            leaf is not None
            and id(leaf) not in state.cache
            and leaf._requires_grad
            and leaf.grad_fn is None
            and leaf._base is None
            and leaf._array.dtype == float32
            and multi_tensor.fusable(leaf._array)
        ):
            groups.setdefault(device_id(leaf._array), []).append(leaf)
    for leaves in groups.values():
        arrays = _cast_kernel.cast_multi_tensor(
            [leaf._array for leaf in leaves], float16, checked=True
        )
        for leaf, array in zip(leaves, arrays):
            copy = Cast.apply(leaf, dtype=float16, precomputed=array)
            if copy.grad_fn is not None:
                copy.grad_fn.for_autocast = True
            entry = (leaf, leaf._array, leaf._version[0], recording, float16, copy)
            state.cache[id(leaf)] = entry


__all__ = ["POLICIES", "autocast_inputs"]
