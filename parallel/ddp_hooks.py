"""DDP's communication hooks and what they receive: ``GradBucket``, the default
``allreduce_hook``, ``fp16_compress_hook``, and the hook ``join(divide_by_initial_world_size=
False)`` uses. A hook is ``hook(state, bucket)`` returning something with ``wait()`` that leaves
the averaged values in ``bucket.buffer()``, or a torch-style ``Future``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from dtrain._tensor.tensor import Tensor, wrap
from dtrain.parallel import api, collectives
from dtrain.parallel.reduce_op import ReduceOp
from dtrain.parallel.work import Chained, Future
from dtrain.runtime.backend import is_cuda_array

if TYPE_CHECKING:
    from dtrain.parallel.ddp_reducer import _Bucket


class GradBucket:
    """What a communication hook receives: one bucket's flat gradient buffer."""

    def __init__(self, index: int, buffer: Tensor, params: list) -> None:
        self._index, self._buffer, self._params = index, buffer, params

    def index(self) -> int:
        """The bucket's position (0 holds the last parameters registered)."""
        return self._index

    def buffer(self) -> Tensor:
        """The flat gradients (with ``find_unused_parameters=True``, then one 0/1 "used"
        flag per parameter); a hook leaves the averaged values of all of it here."""
        return self._buffer

    def parameters(self) -> list:
        """The parameters whose gradients the bucket holds."""
        return self._params


def allreduce_hook(group: Any, bucket: GradBucket) -> Any:
    """The default: average the bucket across the group (an async all-reduce)."""
    return collectives.all_reduce(bucket.buffer(), ReduceOp.AVG, group=group, async_op=True)


def _allreduce_over_active_hook(state: tuple, bucket: GradBucket) -> Any:
    """The default hook under ``join(divide_by_initial_world_size=False)``: sum the bucket
    and divide by the number of ranks still active (``state`` is (group, that number))."""
    group, active = state
    flat = bucket.buffer()._array
    work = collectives.all_reduce(bucket.buffer(), ReduceOp.SUM, group=group, async_op=True)
    return Chained(work, lambda: flat.__itruediv__(active))


def fp16_compress_hook(group: Any, bucket: GradBucket) -> Any:
    """Send the bucket as float16 (half the bytes) and write the average back in its dtype.

    Each rank divides by the world size *before* the float16 sum, as PyTorch's hook does, so
    the sum cannot overflow where the average would not. On CUDA the divide-and-cast and the
    cast back are one fused kernel each (``dtrain.runtime.kernels.scale_cast``).
    """
    buffer = bucket.buffer()
    flat = buffer._array
    half = wrap(_scale_cast(flat, 1.0 / api.get_world_size(group), np.float16))
    work = collectives.all_reduce(half, ReduceOp.SUM, group=group, async_op=True)
    return Chained(work, lambda: _scale_cast(half._array, 1.0, flat.dtype, out=flat))


def _scale_cast(flat: Any, factor: float, dtype: Any, out: Any = None) -> Any:
    """``(flat * factor).astype(dtype)`` (into ``out``), one fused kernel on CUDA when it
    casts (the kernel converts between float16 and float32/64; a float16 bucket is scaled by
    cupy)."""
    if is_cuda_array(flat) and flat.flags.c_contiguous and flat.dtype != np.dtype(dtype):
        from dtrain.runtime.kernels import scale_cast

        return scale_cast(flat, factor, dtype, out=out)
    result = (flat * factor if factor != 1.0 else flat).astype(dtype)
    if out is None:
        return result
    out[...] = result
    return out


def _take_future_value(bucket: _Bucket) -> None:
    """A torch-style comm hook returns a Future whose value holds the result (a tensor, or
    a one-tensor list), maybe not in the bucket (``f.value()[0] / n``): copy it in."""
    if not isinstance(bucket.work, Future):
        return
    value = bucket.work.value()
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    array = value._array if isinstance(value, Tensor) else value
    if array is None or array is bucket.flat:
        return
    if getattr(array, "size", None) != bucket.flat.size:
        raise ValueError(
            f"DistributedDataParallel: the comm hook's future gave {type(value).__name__} "
            f"with {getattr(array, 'size', '?')} elements for bucket {bucket.index} of "
            f"{bucket.flat.size}; return the reduced bucket.buffer() (or a tensor shaped as it)"
        )
    bucket.flat[...] = array.reshape(bucket.flat.shape)


__all__ = ["GradBucket", "allreduce_hook", "fp16_compress_hook"]
