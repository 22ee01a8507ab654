"""Gradients that arrive in pieces: the backward of basic indexing (``x[a:b]``, ``split``).

Each piece's backward used to build a zeroed array of the whole input and copy its slice in;
the engine then added those full-size arrays together. A split into three pieces cost three
zeroed arrays, three copies and two full-size additions (eight launches on a GPU). Kept as
(key, value) pairs until the input's gradient is needed, the pieces cost one zeroed array
and one in-place addition each; ``split``'s pieces, which cover the array exactly once, one
array that is never zeroed and a copy each, or on CUDA one launch for all of them
(``runtime/kernels/tile.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain.runtime.backend import data_pointer, get_array_module
from dtrain.runtime.kernels import tile as _tile_kernel


class SliceGrads:
    """The gradient of an array of ``shape``: the sum of ``value`` placed at ``key`` (basic
    indexing, a view) for each part; zero elsewhere."""

    __slots__ = ("owned", "parts", "shape")

    def __init__(self, shape: tuple, key: Any, value: Any) -> None:
        self.shape = shape
        self.parts = [(key, value)]
        # Set by the engine: every part is a view of an array no one else holds.
        self.owned = False

    def dense(self) -> Any:
        """The gradient as one array (overlapping parts add up): a new one, or the array
        the parts already lie in, in their places."""
        first = self.parts[0][1]
        xp = get_array_module(first)
        if self._tiles():  # split()'s pieces: each element is written once, nothing zeroed
            whole = self._whole() if self.owned else None
            if whole is not None:
                return whole
            full = xp.empty(self.shape, dtype=first.dtype)
            values = [value for _, value in self.parts]
            if _tile_kernel.supported(full, values):  # on CUDA: one launch for every piece
                axis = len(self.parts[0][0]) - 1
                starts = [key[-1].start or 0 for key, _ in self.parts]
                _tile_kernel.tile_(full, values, starts, axis)
                return full
            for key, value in self.parts:
                full[key] = value
            return full
        full = xp.zeros(self.shape, dtype=first.dtype)
        for key, value in self.parts:
            view = full[key]
            if isinstance(view, np.generic):  # numpy: integers alone index a scalar copy
                full[key] += value
            else:  # into the view: `full[key] += value` would copy it back onto itself
                view += value
        return full

    def _whole(self) -> Any:
        """The array the parts are views of, when it has the gradient's shape and each part
        lies at its own key in it (a backward that wrote the pieces' gradients into one
        array, as attention does for a split qkv projection); else None. With the tiles
        covering it exactly once, every element is some part's."""
        first = self.parts[0][1]
        base = first
        # cupy and numpy point a view of a view at the array that owns the memory; the
        # walk is for array types that do not (and stops at a base of another type)
        while type(base.base) is type(first):
            base = base.base
        if base is first or base.shape != self.shape or base.dtype != first.dtype:
            return None
        for key, value in self.parts:
            place = base[key]
            if (
                value.shape != place.shape
                or value.strides != place.strides
                or data_pointer(value) != data_pointer(place)
            ):
                return None
        return base

    def _tiles(self) -> bool:
        """Whether the parts are slices of one axis that cover it exactly once, as the keys
        ``split`` and ``chunk`` make: ``(slice(None),) * axis + (slice(start, stop),)``."""
        axis, spans = None, []
        for key, _ in self.parts:
            if not isinstance(key, tuple) or not key or not isinstance(key[-1], slice):
                return False
            if any(part != slice(None) for part in key[:-1]) or key[-1].step not in (None, 1):
                return False
            if axis is None:
                axis = len(key) - 1
            elif len(key) - 1 != axis:
                return False
            spans.append((key[-1].start or 0, key[-1].stop))
        if axis >= len(self.shape):
            return False
        covered = 0
        for start, stop in sorted(spans, key=lambda span: span[0]):
            stop = self.shape[axis] if stop is None else stop
            if start != covered or stop <= start:
                return False
            covered = stop
        return covered == self.shape[axis]


def add_grads(a: Any, b: Any) -> Any:
    """``a + b`` for gradients that are arrays or ``SliceGrads`` of one array; never
    changes ``a`` or ``b`` in place (another holder may share them)."""
    a_parts, b_parts = type(a) is SliceGrads, type(b) is SliceGrads
    if a_parts and b_parts:
        merged = SliceGrads.__new__(SliceGrads)
        merged.shape, merged.parts = a.shape, a.parts + b.parts
        merged.owned = a.owned and b.owned
        return merged
    if a_parts or b_parts:
        parts, other = (a, b) if a_parts else (b, a)
        full = parts.dense()
        full += other
        return full
    return a + b


def densify(grad: Any) -> Any:
    """``grad`` as an array (``SliceGrads`` made dense; arrays and None unchanged)."""
    return grad.dense() if type(grad) is SliceGrads else grad
