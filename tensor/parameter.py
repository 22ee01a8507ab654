"""``Parameter``: a tensor a module learns; it requires grad unless told otherwise.

``Buffer``: a tensor that is module state but not learned; assigning one to a module
attribute registers it as a buffer. ``UninitializedParameter`` / ``UninitializedBuffer``:
the placeholders of lazy modules (``nn.LazyLinear`` ...) until their first forward gives
them a shape (``materialize``).
"""

from __future__ import annotations

from typing import Any

from dtrain._tensor.tensor import Tensor


def _array_of(data: Any) -> Any:
    if data is None:
        from dtrain._tensor.creation import empty

        data = empty(0)
    return data._array if isinstance(data, Tensor) else data


class Parameter(Tensor):
    """A leaf tensor that requires grad, registered by ``Module`` when assigned to it."""

    __slots__ = ()

    def __init__(self, data: Any = None, requires_grad: bool = True) -> None:
        super().__init__(_array_of(data), requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


class Buffer(Tensor):
    """A tensor that is module state but not learned (running statistics ...): assigned to a
    module attribute it is registered as ``register_buffer(name, t, persistent)`` would.

    As PyTorch's, it shares ``data``'s memory and keeps its ``requires_grad``; unlike
    PyTorch's (a plain ``Tensor`` with a flag), it is a ``Tensor`` subclass.

    Args:
        data: the tensor (or array); None gives an empty one.
        persistent: whether the buffer is part of the module's ``state_dict``.
    """

    __slots__ = ("persistent",)

    def __init__(self, data: Any = None, *, persistent: bool = True) -> None:
        requires_grad = isinstance(data, Tensor) and data.requires_grad
        super().__init__(_array_of(data), requires_grad=requires_grad)
        self.persistent = persistent


_UNINITIALIZED_USE = (
    "Can't access the shape of an uninitialized parameter or buffer (of a lazy module such "
    "as nn.LazyLinear); run one forward pass with a sample batch (or load a state dict) "
    "first to initialize it"
)


class UninitializedTensorMixin:
    """What ``UninitializedParameter`` and ``UninitializedBuffer`` share: no shape until
    ``materialize(shape)`` turns the tensor, in place, into a ``cls_to_become``."""

    __slots__ = ()
    cls_to_become: type = Tensor

    def materialize(self, shape: Any, device: Any = None, dtype: Any = None) -> None:
        """Give this tensor ``shape`` (uninitialised values) on its device and dtype unless
        ``device``/``dtype`` say otherwise, and make it a ``cls_to_become`` in place."""
        from dtrain._tensor.creation import empty

        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        device = self.device if device is None else device
        dtype = self.dtype if dtype is None else dtype
        self._array = empty(shape, dtype=dtype, device=device)._array
        self.__class__ = self.cls_to_become

    def _no_shape(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(_UNINITIALIZED_USE)

    shape = property(_no_shape, doc="Raises: an uninitialized tensor has no shape.")
    ndim = property(_no_shape, doc="Raises: an uninitialized tensor has no shape.")
    size = numel = dim = _no_shape

    def detach(self) -> Any:
        """Itself, as PyTorch's lazy modules put the placeholder in ``state_dict()``."""
        return self

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


class UninitializedParameter(UninitializedTensorMixin, Parameter):
    """A parameter of a lazy module whose shape its first forward decides; it becomes an
    ``nn.Parameter`` then. Until then it has no shape and holds no values."""

    __slots__ = ()
    cls_to_become = Parameter

    def __init__(self, requires_grad: bool = True, device: Any = None, dtype: Any = None) -> None:
        from dtrain._tensor.creation import empty

        super().__init__(empty(0, device=device, dtype=dtype), requires_grad=requires_grad)


class UninitializedBuffer(UninitializedTensorMixin, Buffer):
    """A buffer of a lazy module whose shape its first forward decides; it becomes an
    ``nn.Buffer`` then (PyTorch's becomes a plain ``Tensor`` flagged as a buffer)."""

    __slots__ = ()
    cls_to_become = Buffer

    def __init__(
        self,
        requires_grad: bool = False,
        device: Any = None,
        dtype: Any = None,
        persistent: bool = True,
    ) -> None:
        from dtrain._tensor.creation import empty

        super().__init__(empty(0, device=device, dtype=dtype), persistent=persistent)
        if requires_grad:
            self.requires_grad_(True)


def is_lazy(tensor: Any) -> bool:
    """Whether ``tensor`` is an uninitialized parameter or buffer of a lazy module."""
    return isinstance(tensor, UninitializedTensorMixin)
