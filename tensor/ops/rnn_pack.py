"""``move_rows``: the one op behind packing and unpacking sequences.

Packing takes the rows of each time step's live sequences out of a padded (L·N, *) view;
unpacking puts them back and fills the rest. Both are a move of rows between two arrays by
index arrays that never repeat a row, so the gradient is the reverse move (an assignment,
no scatter-add).
"""

from __future__ import annotations

from typing import Any

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.backend import get_array_module


class MoveRows(Op):
    """``out[target] = x[source]`` for ``out`` of ``rows`` rows filled with ``fill``
    (``source`` None: every row of ``x``; ``target`` None: ``out`` is ``x[source]``)."""

    def forward(self, x: Any, source: Any, target: Any, rows: int, fill: float) -> Any:
        xp = get_array_module(x)
        self.shape, self.source, self.target = x.shape, source, target
        taken = x if source is None else x[source]
        if target is None:
            return taken
        out = xp.full((rows, *x.shape[1:]), fill, dtype=x.dtype)
        out[target] = taken
        return out

    def backward(self, grad: Any) -> tuple:
        taken = grad if self.target is None else grad[self.target]
        if self.source is None:
            return (taken,)
        out = get_array_module(grad).zeros(self.shape, dtype=grad.dtype)
        out[self.source] = taken
        return (out,)


def move_rows(x: Tensor, source: Any, target: Any, rows: int, fill: float = 0.0) -> Tensor:
    """``out[target] = x[source]`` along dim 0, with the other rows of ``out`` (``rows``
    rows) set to ``fill``. ``source`` and ``target``: integer arrays on ``x``'s device (or
    None for all rows in order) that list no row twice; gradients flow back to ``x``."""
    return MoveRows.apply(x, source, target, rows=rows, fill=fill)
