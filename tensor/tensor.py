"""``Tensor``: one numpy or cupy array, plus what autograd needs to differentiate it.

A tensor holds its array in ``_array``, its accumulated gradient in ``grad`` and, when an
op produced it with autograd recording, that op in ``grad_fn``. The math lives in
``dtrain._tensor.functions``; the methods here are the PyTorch-shaped doors to it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from dtrain.runtime.backend import is_cuda_array
from dtrain.runtime.device import Device, as_numpy, device_of
from dtrain.runtime.dtypes import to_dtype

_new = object.__new__


class Tensor:
    """An n-dimensional array with autograd; create one with ``dtrain.tensor(...)``."""

    __slots__ = (
        "__weakref__",
        "_array",
        "_base",
        "_hooks",
        "_requires_grad",
        "_version",
        "grad",
        "grad_fn",
    )
    __array_ufunc__ = None  # numpy defers to our reflected operators: ndarray + Tensor → Tensor
    __hash__ = object.__hash__  # == is elementwise; identity keys graph dicts

    def __init__(self, data: Any, requires_grad: bool = False) -> None:
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

    def is_contiguous(self) -> bool:
        """True when the elements lie in row-major order without gaps."""
        return bool(self._array.flags.c_contiguous)

    def is_floating_point(self) -> bool:
        """True for float16/32/64 tensors."""
        return self._array.dtype.kind == "f"

    # ---- conversions -------------------------------------------------------------------
    def numpy(self) -> np.ndarray:
        """The data as a numpy array, sharing memory on the CPU."""
        if self._requires_grad:
            raise RuntimeError(
                "numpy() on a tensor that requires grad would leave the graph silently; "
                "call .detach().numpy() instead"
            )
        if self.device.type != "cpu":
            raise TypeError(
                f"numpy() needs a CPU tensor, this one is on {self.device}; call .cpu() first"
            )
        return self._array

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        array = as_numpy(self.detach()._array)
        return array if dtype is None else array.astype(dtype, copy=False)

    def item(self) -> Any:
        """The value of a one-element tensor as a Python number."""
        if self._array.size != 1:
            raise ValueError(
                f"item() needs a tensor with one element, this one has shape {self.shape}; "
                "index or reduce it first"
            )
        return self._array.item() if self._array.ndim == 0 else self._array.reshape(()).item()

    def tolist(self) -> Any:
        """The data as (nested) Python lists."""
        return as_numpy(self._array).tolist()

    def to(self, *args: Any, **kwargs: Any) -> Tensor:
        """``to(device)``, ``to(dtype)``, ``to(device, dtype)`` or ``to(other_tensor)``."""
        device = kwargs.pop("device", None)
        dtype = kwargs.pop("dtype", None)
        kwargs.pop("non_blocking", None)
        kwargs.pop("copy", None)
        if kwargs:
            raise TypeError(f"to() got unexpected arguments {sorted(kwargs)}")
        for arg in args:
            if isinstance(arg, Tensor):
                device, dtype = arg.device, arg.dtype
            elif isinstance(arg, Device) or (
                isinstance(arg, str) and arg.split(":")[0] in ("cpu", "cuda")
            ):
                device = arg
            else:
                dtype = arg
        result = self
        if device is not None:
            result = _fn.move(result, Device(device))
        if dtype is not None:
            result = _fn.cast(result, to_dtype(dtype))
        return result

    def cuda(self, device: int | None = None) -> Tensor:
        """A copy on a GPU (``cuda:0`` unless ``device`` names another)."""
        return self.to(Device("cuda", device if device is not None else 0))

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

    # ---- Python protocol ---------------------------------------------------------------
    def __repr__(self) -> str:
        return _fn.format_tensor(self)

    def __len__(self) -> int:
        if self._array.ndim == 0:
            raise TypeError("len() of a 0-d tensor; use .item() or .numel()")
        return self._array.shape[0]

    def __iter__(self) -> Iterator[Tensor]:
        if self._array.ndim == 0:
            raise TypeError("iteration over a 0-d tensor; use .item()")
        return (self[i] for i in range(self._array.shape[0]))

    def __bool__(self) -> bool:
        if self._array.size != 1:
            raise RuntimeError(
                f"the truth value of a tensor with {self._array.size} elements is ambiguous; "
                "use .any() or .all()"
            )
        return bool(self._array.reshape(()))

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __index__(self) -> int:
        if self._array.dtype.kind not in "iu" or self._array.size != 1:
            raise TypeError("only one-element integer tensors can be used as an index")
        return int(self.item())

    def __getitem__(self, key: Any) -> Tensor:
        return _fn.getitem(self, key)

    def __setitem__(self, key: Any, value: Any) -> None:
        _fn.setitem(self, key, value)

    # ---- operators ---------------------------------------------------------------------
    def __add__(self, other: Any) -> Tensor:
        return _fn.binary(_fn.Add, self, other)

    def __radd__(self, other: Any) -> Tensor:
        return _fn.binary(_fn.Add, other, self)

    def __sub__(self, other: Any) -> Tensor:
        return _fn.binary(_fn.Sub, self, other)

    def __rsub__(self, other: Any) -> Tensor:
        return _fn.binary(_fn.Sub, other, self)

    def __mul__(self, other: Any) -> Tensor:
        return _fn.binary(_fn.Mul, self, other)

    def __rmul__(self, other: Any) -> Tensor:
        return _fn.binary(_fn.Mul, other, self)

    def __truediv__(self, other: Any) -> Tensor:
        return _fn.div(self, other)

    def __rtruediv__(self, other: Any) -> Tensor:
        return _fn.div(other, self)

    def __pow__(self, other: Any) -> Tensor:
        return _fn.pow(self, other)

    def __rpow__(self, other: Any) -> Tensor:
        return _fn.pow(other, self)

    def __matmul__(self, other: Tensor) -> Tensor:
        return _fn.matmul(self, other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return _fn.matmul(_fn.as_tensor(other), self)

    def __neg__(self) -> Tensor:
        return _fn.Neg.apply(self)

    def __pos__(self) -> Tensor:
        return self

    def __abs__(self) -> Tensor:
        return _fn.abs(self)

    def __iadd__(self, other: Any) -> Tensor:
        return _fn.add_(self, other)

    def __isub__(self, other: Any) -> Tensor:
        return _fn.sub_(self, other)

    def __imul__(self, other: Any) -> Tensor:
        return _fn.mul_(self, other)

    def __itruediv__(self, other: Any) -> Tensor:
        return _fn.div_(self, other)

    def __eq__(self, other: Any) -> Tensor:  # type: ignore[override]
        return _fn.eq(self, other)

    def __ne__(self, other: Any) -> Tensor:  # type: ignore[override]
        return _fn.ne(self, other)

    def __lt__(self, other: Any) -> Tensor:
        return _fn.lt(self, other)

    def __le__(self, other: Any) -> Tensor:
        return _fn.le(self, other)

    def __gt__(self, other: Any) -> Tensor:
        return _fn.gt(self, other)

    def __ge__(self, other: Any) -> Tensor:
        return _fn.ge(self, other)

    def __and__(self, other: Any) -> Tensor:
        return _fn.bitwise("bitwise_and", self, other)

    def __or__(self, other: Any) -> Tensor:
        return _fn.bitwise("bitwise_or", self, other)

    def __xor__(self, other: Any) -> Tensor:
        return _fn.bitwise("bitwise_xor", self, other)

    def __invert__(self) -> Tensor:
        return _fn.bitwise("invert", self)

    # ---- math (see dtrain._tensor.functions for each function's docstring) --------------
    def add(self, other: Any, alpha: float = 1) -> Tensor:
        return _fn.add(self, other, alpha=alpha)

    def sub(self, other: Any, alpha: float = 1) -> Tensor:
        return _fn.sub(self, other, alpha=alpha)

    def mul(self, other: Any) -> Tensor:
        return _fn.mul(self, other)

    def div(self, other: Any) -> Tensor:
        return _fn.div(self, other)

    def pow(self, exponent: Any) -> Tensor:
        return _fn.pow(self, exponent)

    def matmul(self, other: Tensor) -> Tensor:
        return _fn.matmul(self, other)

    def neg(self) -> Tensor:
        return _fn.neg(self)

    def abs(self) -> Tensor:
        return _fn.abs(self)

    def exp(self) -> Tensor:
        return _fn.exp(self)

    def log(self) -> Tensor:
        return _fn.log(self)

    def log1p(self) -> Tensor:
        return _fn.log1p(self)

    def sqrt(self) -> Tensor:
        return _fn.sqrt(self)

    def rsqrt(self) -> Tensor:
        return _fn.rsqrt(self)

    def sin(self) -> Tensor:
        return _fn.sin(self)

    def cos(self) -> Tensor:
        return _fn.cos(self)

    def tanh(self) -> Tensor:
        return _fn.tanh(self)

    def sigmoid(self) -> Tensor:
        return _fn.sigmoid(self)

    def relu(self) -> Tensor:
        return _fn.relu(self)

    def clamp(self, min: Any = None, max: Any = None) -> Tensor:
        return _fn.clamp(self, min, max)

    clip = clamp

    def maximum(self, other: Tensor) -> Tensor:
        return _fn.maximum(self, other)

    def minimum(self, other: Tensor) -> Tensor:
        return _fn.minimum(self, other)

    def masked_fill(self, mask: Tensor, value: Any) -> Tensor:
        return _fn.masked_fill(self, mask, value)

    def sum(self, dim: Any = None, keepdim: bool = False, dtype: Any = None) -> Tensor:
        return _fn.sum(self, dim, keepdim, dtype)

    def mean(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        return _fn.mean(self, dim, keepdim)

    def prod(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        return _fn.prod(self, dim, keepdim)

    def max(self, dim: Any = None, keepdim: bool = False) -> Any:
        return _fn.max(self, dim, keepdim)

    def min(self, dim: Any = None, keepdim: bool = False) -> Any:
        return _fn.min(self, dim, keepdim)

    def amax(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        return _fn.amax(self, dim, keepdim)

    def amin(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        return _fn.amin(self, dim, keepdim)

    def var(
        self,
        dim: Any = None,
        unbiased: bool | None = None,
        keepdim: bool = False,
        *,
        correction: float | None = None,
    ) -> Tensor:
        return _fn.var(self, dim, unbiased, keepdim, correction=correction)

    def std(
        self,
        dim: Any = None,
        unbiased: bool | None = None,
        keepdim: bool = False,
        *,
        correction: float | None = None,
    ) -> Tensor:
        return _fn.std(self, dim, unbiased, keepdim, correction=correction)

    def logsumexp(self, dim: Any, keepdim: bool = False) -> Tensor:
        return _fn.logsumexp(self, dim, keepdim)

    def softmax(self, dim: int) -> Tensor:
        return _fn.softmax(self, dim)

    def log_softmax(self, dim: int) -> Tensor:
        return _fn.log_softmax(self, dim)

    def cumsum(self, dim: int) -> Tensor:
        return _fn.cumsum(self, dim)

    def argmax(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        return _fn.argmax(self, dim, keepdim)

    def argmin(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        return _fn.argmin(self, dim, keepdim)

    def all(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        return wrap(self._array.all(axis=dim, keepdims=keepdim))

    def any(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        return wrap(self._array.any(axis=dim, keepdims=keepdim))

    # ---- shape -------------------------------------------------------------------------
    def reshape(self, *shape: Any) -> Tensor:
        return _fn.reshape(self, *shape)

    def view(self, *shape: Any) -> Tensor:
        return _fn.view(self, *shape)

    def view_as(self, other: Tensor) -> Tensor:
        return _fn.view(self, other.shape)

    reshape_as = view_as

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        return _fn.flatten(self, start_dim, end_dim)

    def transpose(self, dim0: int, dim1: int) -> Tensor:
        return _fn.transpose(self, dim0, dim1)

    def t(self) -> Tensor:
        if self.ndim > 2:
            raise ValueError(f"t() expects at most 2 dims, got {self.ndim}; use transpose()")
        return self.T

    def permute(self, *dims: Any) -> Tensor:
        return _fn.permute(self, *dims)

    def squeeze(self, dim: Any = None) -> Tensor:
        return _fn.squeeze(self, dim)

    def unsqueeze(self, dim: int) -> Tensor:
        return _fn.unsqueeze(self, dim)

    def expand(self, *sizes: Any) -> Tensor:
        return _fn.expand(self, *sizes)

    def expand_as(self, other: Tensor) -> Tensor:
        return _fn.expand(self, other.shape)

    def repeat(self, *repeats: Any) -> Tensor:
        return _fn.repeat(self, *repeats)

    def split(self, split_size: Any, dim: int = 0) -> tuple:
        return _fn.split(self, split_size, dim)

    def chunk(self, chunks: int, dim: int = 0) -> tuple:
        return _fn.chunk(self, chunks, dim)

    def tril(self, diagonal: int = 0) -> Tensor:
        return _fn.tril(self, diagonal)

    def triu(self, diagonal: int = 0) -> Tensor:
        return _fn.triu(self, diagonal)

    def gather(self, dim: int, index: Tensor) -> Tensor:
        return _fn.gather(self, dim, index)

    def index_select(self, dim: int, index: Tensor) -> Tensor:
        return _fn.index_select(self, dim, index)

    def sort(self, dim: int = -1, descending: bool = False, stable: bool = False) -> Any:
        return _fn.sort(self, dim, descending, stable)

    def topk(self, k: int, dim: int = -1, largest: bool = True, sorted: bool = True) -> Any:
        return _fn.topk(self, k, dim, largest, sorted)

    def multinomial(
        self, num_samples: int, replacement: bool = False, generator: Any = None
    ) -> Tensor:
        return _fn.multinomial(self, num_samples, replacement, generator)

    # ---- comparisons -------------------------------------------------------------------
    def eq(self, other: Any) -> Tensor:
        return _fn.eq(self, other)

    def ne(self, other: Any) -> Tensor:
        return _fn.ne(self, other)

    def lt(self, other: Any) -> Tensor:
        return _fn.lt(self, other)

    def le(self, other: Any) -> Tensor:
        return _fn.le(self, other)

    def gt(self, other: Any) -> Tensor:
        return _fn.gt(self, other)

    def ge(self, other: Any) -> Tensor:
        return _fn.ge(self, other)

    def logical_not(self) -> Tensor:
        return _fn.logical_not(self)

    def logical_and(self, other: Any) -> Tensor:
        return _fn.logical_and(self, other)

    def logical_or(self, other: Any) -> Tensor:
        return _fn.logical_or(self, other)

    def isnan(self) -> Tensor:
        return _fn.isnan(self)

    def equal(self, other: Tensor) -> bool:
        return _fn.equal(self, other)

    def allclose(self, other: Tensor, rtol: float = 1e-5, atol: float = 1e-8) -> bool:
        return _fn.allclose(self, other, rtol, atol)

    # ---- in place ----------------------------------------------------------------------
    def add_(self, other: Any, alpha: float = 1) -> Tensor:
        return _fn.add_(self, other, alpha)

    def sub_(self, other: Any, alpha: float = 1) -> Tensor:
        return _fn.sub_(self, other, alpha)

    def mul_(self, other: Any) -> Tensor:
        return _fn.mul_(self, other)

    def div_(self, other: Any) -> Tensor:
        return _fn.div_(self, other)

    def clamp_(self, min: Any = None, max: Any = None) -> Tensor:
        return _fn.clamp_(self, min, max)

    def zero_(self) -> Tensor:
        return _fn.zero_(self)

    def fill_(self, value: Any) -> Tensor:
        return _fn.fill_(self, value)

    def copy_(self, source: Any) -> Tensor:
        return _fn.copy_(self, source)

    def normal_(self, mean: float = 0.0, std: float = 1.0, generator: Any = None) -> Tensor:
        return _fn.normal_(self, mean, std, generator)

    def uniform_(self, a: float = 0.0, b: float = 1.0, generator: Any = None) -> Tensor:
        return _fn.uniform_(self, a, b, generator)


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
    if result._array is not source._array and np.may_share_memory(result._array, source._array):
        result._version = source._version
        result._base = source if source._base is None else source._base
    return result


__all__ = ["Tensor", "mark_view", "wrap"]

# Imported last: these modules build on the class above.
from dtrain._tensor import functions as _fn  # noqa: E402
from dtrain._tensor.autograd import api as _autograd  # noqa: E402
