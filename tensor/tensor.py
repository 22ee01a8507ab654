"""``Tensor``: one numpy or cupy array, plus what autograd needs to differentiate it.

A tensor holds its array in ``_array``, its accumulated gradient in ``grad`` and, when an
op produced it with autograd recording, that op in ``grad_fn``. The math lives in
``dtrain._tensor.functions``; the methods here, the named ones of ``methods``, the
operators of ``tensor_operators`` and the Python protocol of ``tensor_protocol`` (repr,
indexing, ``numpy()``, DLPack ...) are the PyTorch-shaped doors to it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from dtrain._tensor import methods as _methods
from dtrain._tensor import tensor_operators as _operators
from dtrain._tensor import tensor_protocol as _protocol
from dtrain._tensor.methods import TensorMethods
from dtrain._tensor.tensor_operators import TensorOperators
from dtrain._tensor.tensor_protocol import TensorProtocol
from dtrain.runtime.backend import is_cuda_array, may_share_memory
from dtrain.runtime.device import Device, cuda_device, device_of
from dtrain.runtime.dtypes import to_dtype

_new = object.__new__


class Tensor(TensorProtocol, TensorOperators, TensorMethods):
    """An n-dimensional array with autograd; create one with ``dtrain.tensor(...)``."""

    __slots__ = (
        "__weakref__",
        "_array",
        "_base",
        "_base_fn",
        "_base_version",
        "_hooks",
        "_requires_grad",
        "_version",
        "grad",
        "grad_fn",
    )

    def __init__(self, *args: Any, requires_grad: bool = False, device: Any = None) -> None:
        """PyTorch's legacy constructor: ``Tensor(2, 3)`` a float32 tensor of that shape
        (zeros: dtrain fills it), ``Tensor([1, 2])`` float32 data, ``Tensor()`` empty
        float32. A tensor is aliased (its dtype kept); a numpy or cupy array is wrapped as
        it is, without a copy (PyTorch copies it to float32). Prefer ``dtrain.tensor``."""
        data = _legacy_data(args, device)
        array = data._array if isinstance(data, Tensor) else data
        if not isinstance(array, np.ndarray) and not is_cuda_array(array):
            array = np.asarray(array)
        self._array = array
        self.grad = None
        self.grad_fn = None
        self._requires_grad = False
        self._version = [0]
        self._base = None
        self._hooks = None
        if requires_grad:
            self.requires_grad = True

    # ---- attributes --------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        """The size of each dim, as a tuple."""
        return self._array.shape

    @property
    def dtype(self) -> np.dtype:
        """The element type (``dtrain.float32`` …)."""
        return self._array.dtype

    @property
    def device(self) -> Device:
        """Where the data lives: ``device(type='cpu')`` or a CUDA device."""
        return device_of(self._array)

    @property
    def is_cuda(self) -> bool:
        """True when the data lives on a GPU."""
        return self.device.type == "cuda"

    @property
    def ndim(self) -> int:
        """The number of dims."""
        return self._array.ndim

    @property
    def T(self) -> Tensor:  # noqa: N802 - PyTorch's name
        """The dims reversed (the transpose, for a matrix)."""
        return _fn.permute(self, *reversed(range(self.ndim)))

    @property
    def mT(self) -> Tensor:  # noqa: N802 - PyTorch's name
        """The last two dims swapped."""
        return _fn.transpose(self, -2, -1)

    @property
    def requires_grad(self) -> bool:
        """Whether autograd tracks operations on this tensor."""
        if self._base is not None:
            _autograd.refresh_if_stale(self)
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        if self.grad_fn is not None and not value:
            raise RuntimeError(
                "requires_grad cannot be turned off on a non-leaf tensor; use .detach() to get "
                "a tensor outside the graph"
            )
        if value and self._array.dtype.kind != "f":
            raise RuntimeError(
                f"only floating-point tensors can require gradients, this one is {self.dtype}; "
                "convert it first with .float()"
            )
        self._requires_grad = bool(value)

    @property
    def is_leaf(self) -> bool:
        """True for tensors no recorded op produced (their ``.grad`` is filled by backward)."""
        return self.grad_fn is None

    @property
    def data(self) -> Tensor:
        """The same memory, outside the graph (prefer ``detach()``)."""
        return self.detach()

    @data.setter
    def data(self, value: Tensor) -> None:
        self._array = value._array if isinstance(value, Tensor) else value

    def size(self, dim: int | None = None) -> Any:
        """The shape, or the size of one dim."""
        return self._array.shape if dim is None else self._array.shape[dim]

    def numel(self) -> int:
        """The number of elements."""
        return int(self._array.size)

    def dim(self) -> int:
        """The number of dims."""
        return self._array.ndim

    def element_size(self) -> int:
        """Bytes per element."""
        return self._array.itemsize

    def is_contiguous(self, memory_format: Any = None) -> bool:
        """True when the elements lie in row-major order without gaps. dtrain has one
        memory format (PyTorch's ``contiguous_format``); another is a ValueError."""
        if memory_format is not None and str(memory_format) not in _ROW_MAJOR:
            raise ValueError(
                f"is_contiguous(memory_format={memory_format!r}): dtrain stores tensors "
                "row-major only (torch.contiguous_format)"
            )
        return bool(self._array.flags.c_contiguous)

    def stride(self, dim: int | None = None) -> Any:
        """The step in elements from one index of each dim to the next (a tuple), or of
        ``dim``, as PyTorch's (a ``flip`` view's is negative, where PyTorch copies)."""
        itemsize = self._array.itemsize
        strides = tuple(step // itemsize for step in self._array.strides)
        return strides if dim is None else strides[dim]

    def data_ptr(self) -> int:
        """The address of the first element (a device address on CUDA)."""
        if is_cuda_array(self._array):
            return int(self._array.data.ptr)
        return int(self._array.__array_interface__["data"][0])

    def storage_offset(self) -> int:
        """The first element's offset, in elements, into the memory this tensor views (0
        for a tensor that owns its memory)."""
        root = self._array
        while getattr(root, "base", None) is not None and hasattr(root.base, "shape"):
            root = root.base
        if root is self._array:
            return 0
        start = self.data_ptr()
        base = int(root.data.ptr) if is_cuda_array(root) else root.__array_interface__["data"][0]
        return (start - base) // self._array.itemsize

    def is_floating_point(self) -> bool:
        """True for float16/32/64 tensors."""
        return self._array.dtype.kind == "f"

    # ---- conversions -------------------------------------------------------------------
    def to(self, *args: Any, **kwargs: Any) -> Tensor:
        """``to(device)``, ``to(dtype)``, ``to(device, dtype)`` or ``to(other_tensor)``;
        ``copy=True`` returns a copy even when nothing changes."""
        device = kwargs.pop("device", None)
        dtype = kwargs.pop("dtype", None)
        kwargs.pop("non_blocking", None)
        copy = kwargs.pop("copy", False)
        if kwargs:
            raise TypeError(f"to() got unexpected arguments {sorted(kwargs)}")
        for arg in args:
            if isinstance(arg, Tensor):
                device, dtype = arg.device, arg.dtype
            elif (
                isinstance(arg, Device)
                or (isinstance(arg, str) and arg.split(":")[0] in ("cpu", "cuda"))
                or (isinstance(arg, (int, np.integer)) and not isinstance(arg, bool))
            ):
                device = arg  # an int is a CUDA index, as PyTorch's to(rank)
            else:
                dtype = arg
        result = self
        if device is not None:
            result = _fn.move(result, Device(device))
        if dtype is not None:
            result = _fn.cast(result, to_dtype(dtype))
        if copy and result is self:  # nothing changed, but a copy was asked for
            result = _fn.clone(self)
        return result

    def cuda(self, device: int | str | Device | None = None) -> Tensor:
        """A copy on a GPU: the current one (``dt.cuda.set_device``) unless ``device`` names
        another."""
        return self.to(cuda_device(device))

    def cpu(self) -> Tensor:
        """A copy on the CPU (the same tensor when it is there already)."""
        return self.to("cpu")

    def float(self) -> Tensor:
        """Cast to float32."""
        return self.to(np.float32)

    def double(self) -> Tensor:
        """Cast to float64."""
        return self.to(np.float64)

    def half(self) -> Tensor:
        """Cast to float16."""
        return self.to(np.float16)

    def long(self) -> Tensor:
        """Cast to int64."""
        return self.to(np.int64)

    def int(self) -> Tensor:
        """Cast to int32."""
        return self.to(np.int32)

    def bool(self) -> Tensor:
        """Cast to bool."""
        return self.to(np.bool_)

    def type_as(self, other: Tensor) -> Tensor:
        """Cast to ``other``'s dtype."""
        return self.to(other.dtype)

    def detach(self) -> Tensor:
        """The same memory outside the graph (an in-place change is seen by both)."""
        out = wrap(self._array)
        out._version = self._version
        return out

    def detach_(self) -> Tensor:
        """Take this tensor out of the graph, in place."""
        self.grad_fn = None
        self._requires_grad = False
        return self

    def clone(self) -> Tensor:
        """A copy with its own memory; gradient flows back to this tensor."""
        return _fn.clone(self)

    def contiguous(self) -> Tensor:
        """This tensor if its memory is row-major without gaps, else such a copy."""
        return self if self._array.flags.c_contiguous else _fn.clone(self)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        """Turn gradient tracking on (or off) for this leaf; returns self."""
        self.requires_grad = requires_grad
        return self

    # ---- autograd ----------------------------------------------------------------------
    def backward(
        self,
        gradient: Tensor | None = None,
        retain_graph: bool | None = None,
        create_graph: bool = False,
        inputs: Any = None,
    ) -> None:
        """Accumulate the gradient of this tensor into the ``.grad`` of every leaf it
        depends on. A non-scalar tensor needs ``gradient`` (d(something)/d(this))."""
        _autograd.backward(self, gradient, retain_graph, create_graph, inputs)

    def register_hook(self, hook: Callable[[Tensor], Tensor | None]) -> Callable[[], None]:
        """Call ``hook(grad)`` when this tensor's gradient is computed; a returned tensor
        replaces the gradient. Returns a function that removes the hook."""
        return _autograd.register_hook(self, hook)

    def register_post_accumulate_grad_hook(self, hook: Callable[[Tensor], None]) -> Callable:
        """Call ``hook(tensor)`` on a leaf once backward has accumulated its ``.grad`` in
        full. Returns a function that removes the hook."""
        return _autograd.register_post_accumulate_grad_hook(self, hook)

    def retain_grad(self) -> None:
        """Keep the gradient of this non-leaf tensor in ``.grad`` after backward."""
        _autograd.retain_grad(self)

    @property
    def retains_grad(self) -> bool:
        """Whether ``retain_grad()`` was called on this non-leaf tensor."""
        return _autograd.retains_grad(self)


_ROW_MAJOR = ("None", "torch.contiguous_format", "contiguous_format", "torch.preserve_format")


def _legacy_data(args: tuple, device: Any) -> Any:
    """What ``Tensor(*args)`` wraps: the data, or a new float32 array for sizes/no data."""
    from dtrain._tensor.size import Size

    if len(args) == 1 and isinstance(args[0], Size):
        args = tuple(args[0])  # Tensor(dt.Size([2, 3])): sizes, as PyTorch
    if len(args) == 1 and (
        isinstance(args[0], (Tensor, np.ndarray, np.generic)) or is_cuda_array(args[0])
    ):
        data = args[0]
        if device is not None:
            raise TypeError("Tensor(data, device=...): use dtrain.tensor(data, device=...)")
        return data
    from dtrain._tensor.creation import tensor, zeros

    if not args or all(isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in args):
        return zeros(*args if args else (0,), device=device)
    if len(args) == 1 and isinstance(args[0], (list, tuple)):
        return tensor(args[0], dtype=np.float32, device=device)
    described = ", ".join(type(a).__name__ for a in args)
    raise TypeError(
        f"Tensor({described}): the legacy constructor takes sizes (Tensor(2, 3)), a list of "
        "data (Tensor([1, 2])), a tensor or an array; use dtrain.tensor(data, dtype=...) "
        "for anything else"
    )


def wrap(array: Any, grad_fn: Any = None) -> Tensor:
    """A tensor around ``array`` with no copy; ``grad_fn`` makes it a non-leaf."""
    t = _new(Tensor)
    t._array = array
    t.grad = None
    t.grad_fn = grad_fn
    t._requires_grad = grad_fn is not None
    t._version = [0]
    t._base = None
    t._hooks = None
    return t


def mark_view(result: Tensor, source: Tensor) -> Tensor:
    """Let ``result`` share ``source``'s version counter when it shares its memory."""
    mine, theirs = result._array, source._array
    if mine is not theirs and may_share_memory(mine, theirs):
        result._version = source._version
        if not _grad_state.enabled:
            return result  # a view made under no_grad is outside the graph, as detach()'s
        base = result._base = source if source._base is None else source._base
        # A recorded in-place op on the base replaces these: the view is then stale_view's.
        result._base_fn, result._base_version = base.grad_fn, base._version[0]
    return result


def rebase(tensor: Tensor, node: Any) -> None:
    """Make ``node`` the tensor's history after a recorded in-place change; a retained
    gradient moves with it (PyTorch keeps the gradient of the newest value)."""
    tensor.grad_fn = node
    if tensor._hooks is not None and "retain" in tensor._hooks:
        tensor.retain_grad()


__all__ = ["Tensor", "mark_view", "rebase", "wrap"]

# Imported last: these modules build on the class above.
from dtrain._tensor import dlpack as _dlpack  # noqa: E402
from dtrain._tensor import functions as _fn  # noqa: E402
from dtrain._tensor.autograd import api as _autograd  # noqa: E402
from dtrain._tensor.autograd.grad_mode import state as _grad_state  # noqa: E402

_methods.bind(_fn.without_out)
_operators.bind(_fn.without_out, Tensor)
_protocol.bind(_fn.without_out, _dlpack)
