"""``Parameter``: a tensor a module learns; it requires grad unless told otherwise."""

from __future__ import annotations

from typing import Any

from dtrain._tensor.tensor import Tensor


class Parameter(Tensor):
    """A leaf tensor that requires grad, registered by ``Module`` when assigned to it."""

    __slots__ = ()

    def __init__(self, data: Any = None, requires_grad: bool = True) -> None:
        if data is None:
            from dtrain._tensor.creation import empty

            data = empty(0)
        array = data._array if isinstance(data, Tensor) else data
        super().__init__(array, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()
