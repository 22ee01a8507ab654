"""``Size``: a tuple of dim sizes with ``torch.Size``'s behaviour.

Tensors' ``shape`` and ``size()`` stay plain tuples (cheap, and equal to a ``Size`` of the
same sizes); ``Size`` is for scripts that build one (``dt.Size([2, 3])``) or test for it.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable
from typing import Any


class Size(tuple):
    """A tuple of ints: ``Size([2, 3])``, with ``numel()``; slicing, ``+`` and ``* n`` give
    a Size again, and it equals the plain tuple of the same sizes. As in PyTorch, the ints
    are not checked (``Size([2, -1])`` is allowed, as a ``view`` argument)."""

    __slots__ = ()

    def __new__(cls, sizes: Iterable[Any] = ()) -> Size:
        values = []
        for i, size in enumerate(sizes):
            try:
                values.append(operator.index(size))
            except TypeError:
                raise TypeError(
                    f"Size() takes an iterable of ints (item {i} is {type(size).__name__} "
                    f"{size!r}); convert it with int()"
                ) from None
        return super().__new__(cls, values)

    def numel(self) -> int:
        """The number of elements a tensor of this shape holds (1 for ``Size([])``)."""
        return math.prod(self)

    def __getitem__(self, key: Any) -> Any:
        item = super().__getitem__(key)
        return Size(item) if isinstance(key, slice) else item

    def __add__(self, other: Any) -> Size:
        if not isinstance(other, tuple):
            return NotImplemented
        return Size(tuple(self) + tuple(other))

    def __radd__(self, other: Any) -> Size:
        if not isinstance(other, tuple):
            return NotImplemented
        return Size(tuple(other) + tuple(self))

    def __mul__(self, count: Any) -> Size:
        if not isinstance(count, int):
            return NotImplemented
        return Size(tuple(self) * count)

    __rmul__ = __mul__

    def __repr__(self) -> str:
        return f"dtrain.Size({list(self)})"

    def __reduce__(self) -> tuple:
        return (Size, (tuple(self),))


__all__ = ["Size"]
