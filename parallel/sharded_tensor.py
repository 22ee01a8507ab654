"""``ShardedTensor``: one rank's piece of a tensor that no rank holds whole.

FSDP keeps each unit's parameters flattened and cut into equal ranges, so a rank holds a
contiguous range of each original parameter's row-major flattening, not a block of rows.
A ``ShardedTensor`` says which range: the rank's elements as a 1-D tensor, the whole
tensor's shape, and where the range starts. A sharded state dict holds these in place of
tensors, and ``dtrain.distributed.checkpoint`` writes each rank's ranges and reads any
ranges back, so a checkpoint taken on one world size loads on another.

(torch's sharded state dicts hold ``ShardedTensor`` or ``DTensor`` objects sharded by rows;
code that only passes them between ``state_dict`` and ``dcp.save``/``dcp.load`` runs
unchanged.)
"""

from __future__ import annotations

import math
from typing import Any

from dtrain._tensor.tensor import Tensor


class ShardedTensor:
    """Elements ``[offset, offset + local.numel())`` of a tensor of shape ``global_shape``
    flattened in row-major order; ``local`` is 1-D and may be empty."""

    __slots__ = ("_global_shape", "_local", "_offset")

    def __init__(self, local: Tensor, global_shape: tuple[int, ...], offset: int) -> None:
        if not isinstance(local, Tensor) or local.ndim != 1:
            raise ValueError(
                f"ShardedTensor: local must be a 1-D Tensor, got {type(local).__name__} "
                f"of shape {getattr(local, 'shape', None)}; pass the flat range"
            )
        global_shape = tuple(int(n) for n in global_shape)
        total = math.prod(global_shape)
        if offset < 0 or offset + local.numel() > total:
            raise ValueError(
                f"ShardedTensor: range [{offset}, {offset + local.numel()}) lies outside a "
                f"tensor of shape {global_shape} ({total} elements)"
            )
        self._local = local
        self._global_shape = global_shape
        self._offset = int(offset)

    def local_tensor(self) -> Tensor:
        """This rank's elements, 1-D (the tensor itself: writes to it reach the holder)."""
        return self._local

    @property
    def offset(self) -> int:
        """Where this rank's range starts in the row-major flattening."""
        return self._offset

    @property
    def shape(self) -> tuple[int, ...]:
        """The whole tensor's shape."""
        return self._global_shape

    def size(self, dim: int | None = None) -> Any:
        return self._global_shape if dim is None else self._global_shape[dim]

    def numel(self) -> int:
        """Elements of the whole tensor."""
        return math.prod(self._global_shape)

    @property
    def dtype(self) -> Any:
        return self._local.dtype

    @property
    def device(self) -> Any:
        return self._local.device

    def __repr__(self) -> str:
        end = self._offset + self._local.numel()
        return (
            f"ShardedTensor(shape={self._global_shape}, range=[{self._offset}, {end}), "
            f"dtype={self._local.dtype})"
        )
