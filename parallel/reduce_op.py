"""``ReduceOp``: how all_reduce / reduce / reduce_scatter combine the ranks' values."""

from __future__ import annotations

import enum
from typing import Any


class ReduceOp(enum.IntEnum):
    """SUM, AVG (floats only), MAX, MIN, PRODUCT — as ``torch.distributed.ReduceOp``."""

    SUM = 0
    AVG = 1
    MAX = 2
    MIN = 3
    PRODUCT = 4


def combine_into(xp: Any, op: ReduceOp, accumulator: Any, incoming: Any) -> None:
    """``accumulator ⊕= incoming`` in place (AVG sums; the caller divides at the end)."""
    if op in (ReduceOp.SUM, ReduceOp.AVG):
        xp.add(accumulator, incoming, out=accumulator)
    elif op is ReduceOp.MAX:
        xp.maximum(accumulator, incoming, out=accumulator)
    elif op is ReduceOp.MIN:
        xp.minimum(accumulator, incoming, out=accumulator)
    else:
        xp.multiply(accumulator, incoming, out=accumulator)


def check_op(op: Any, dtype: Any) -> ReduceOp:
    """Validate ``op`` for ``dtype``: a clear error for unknown ops and integer AVG."""
    try:
        op = ReduceOp(op)
    except ValueError:
        raise ValueError(
            f"unknown reduce op {op!r}; use dtrain.parallel.ReduceOp.SUM, AVG, MAX, MIN or PRODUCT"
        ) from None
    if op is ReduceOp.AVG and dtype.kind != "f":
        raise TypeError(
            f"ReduceOp.AVG needs a floating-point tensor, got {dtype}; use SUM and "
            "divide, or convert to float"
        )
    return op
