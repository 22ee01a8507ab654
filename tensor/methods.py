"""The math, shape, comparison and in-place methods of ``Tensor``.

Each method is a door to the function of the same name in ``dtrain._tensor.functions``,
where its docstring lives. ``Tensor`` inherits them from ``TensorMethods``; the functions
module is bound by ``tensor.py`` once every op module has loaded (they import ``Tensor``,
so this module cannot import them first).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from dtrain._tensor.tensor import Tensor

_fn: Any = None


def bind(functions: Any) -> None:
    """Point the methods at ``dtrain._tensor.functions`` (called once, by tensor.py)."""
    global _fn
    _fn = functions


class TensorMethods:
    """Mixed into ``Tensor``: the PyTorch-named methods that compute something."""

    __slots__ = ()

    def add(self, other: Any, alpha: float = 1) -> Tensor:
        return _fn.add(self, other, alpha=alpha)

    def sub(self, other: Any, alpha: float = 1) -> Tensor:
        return _fn.sub(self, other, alpha=alpha)

    def mul(self, other: Any) -> Tensor:
        return _fn.mul(self, other)

    def div(self, other: Any, *, rounding_mode: str | None = None) -> Tensor:
        return _fn.div(self, other, rounding_mode=rounding_mode)

    divide = div

    def floor_divide(self, other: Any) -> Tensor:
        return _fn.floor_divide(self, other)

    def remainder(self, other: Any) -> Tensor:
        return _fn.remainder(self, other)

    def fmod(self, other: Any) -> Tensor:
        return _fn.fmod(self, other)

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

    def tan(self) -> Tensor:
        return _fn.tan(self)

    def erf(self) -> Tensor:
        return _fn.erf(self)

    def erfinv(self) -> Tensor:
        return _fn.erfinv(self)

    def reciprocal(self) -> Tensor:
        return _fn.reciprocal(self)

    def nan_to_num(
        self, nan: float = 0.0, posinf: float | None = None, neginf: float | None = None
    ) -> Tensor:
        return _fn.nan_to_num(self, nan, posinf, neginf)

    def sigmoid(self) -> Tensor:
        return _fn.sigmoid(self)

    def relu(self) -> Tensor:
        return _fn.relu(self)

    def square(self) -> Tensor:
        return _fn.square(self)

    def round(self, decimals: int = 0) -> Tensor:
        return _fn.round(self, decimals)

    def floor(self) -> Tensor:
        return _fn.floor(self)

    def ceil(self) -> Tensor:
        return _fn.ceil(self)

    def trunc(self) -> Tensor:
        return _fn.trunc(self)

    def sign(self) -> Tensor:
        return _fn.sign(self)

    def lerp(self, end: Any, weight: Any) -> Tensor:
        return _fn.lerp(self, end, weight)

    def addcmul(self, tensor1: Any, tensor2: Any, *, value: Any = 1) -> Tensor:
        return _fn.addcmul(self, tensor1, tensor2, value=value)

    def addcdiv(self, tensor1: Any, tensor2: Any, *, value: Any = 1) -> Tensor:
        return _fn.addcdiv(self, tensor1, tensor2, value=value)

    def norm(
        self, p: Any = "fro", dim: Any = None, keepdim: bool = False, dtype: Any = None
    ) -> Tensor:
        return _fn.norm(self, p, dim, keepdim, dtype)

    def clamp(self, min: Any = None, max: Any = None) -> Tensor:
        return _fn.clamp(self, min, max)

    clip = clamp

    def clamp_min(self, min: Any) -> Tensor:
        return _fn.clamp(self, min, None)

    def clamp_max(self, max: Any) -> Tensor:
        return _fn.clamp(self, None, max)

    def maximum(self, other: Tensor) -> Tensor:
        return _fn.maximum(self, other)

    def minimum(self, other: Tensor) -> Tensor:
        return _fn.minimum(self, other)

    def masked_fill(self, mask: Tensor, value: Any) -> Tensor:
        return _fn.masked_fill(self, mask, value)

    def where(self, condition: Tensor, other: Any) -> Tensor:
        return _fn.where(condition, self, other)

    def sum(
        self, dim: Any = None, keepdim: bool = False, dtype: Any = None, *, axis: Any = None
    ) -> Tensor:
        return _fn.sum(self, dim, keepdim, dtype, axis=axis)

    def mean(
        self, dim: Any = None, keepdim: bool = False, dtype: Any = None, *, axis: Any = None
    ) -> Tensor:
        return _fn.mean(self, dim, keepdim, dtype, axis=axis)

    def prod(
        self, dim: int | None = None, keepdim: bool = False, dtype: Any = None, *, axis: Any = None
    ) -> Tensor:
        return _fn.prod(self, dim, keepdim, dtype, axis=axis)

    def max(self, dim: Any = None, keepdim: bool = False, *, axis: Any = None) -> Any:
        return _fn.max(self, dim, keepdim, axis=axis)

    def min(self, dim: Any = None, keepdim: bool = False, *, axis: Any = None) -> Any:
        return _fn.min(self, dim, keepdim, axis=axis)

    def amax(self, dim: Any = None, keepdim: bool = False, *, axis: Any = None) -> Tensor:
        return _fn.amax(self, dim, keepdim, axis=axis)

    def amin(self, dim: Any = None, keepdim: bool = False, *, axis: Any = None) -> Tensor:
        return _fn.amin(self, dim, keepdim, axis=axis)

    def var(
        self,
        dim: Any = None,
        unbiased: bool | None = None,
        keepdim: bool = False,
        *,
        correction: float | None = None,
        axis: Any = None,
    ) -> Tensor:
        return _fn.var(self, dim, unbiased, keepdim, correction=correction, axis=axis)

    def std(
        self,
        dim: Any = None,
        unbiased: bool | None = None,
        keepdim: bool = False,
        *,
        correction: float | None = None,
        axis: Any = None,
    ) -> Tensor:
        return _fn.std(self, dim, unbiased, keepdim, correction=correction, axis=axis)

    def logsumexp(self, dim: Any, keepdim: bool = False) -> Tensor:
        return _fn.logsumexp(self, dim, keepdim)

    def softmax(self, dim: int | None = None, dtype: Any = None) -> Tensor:
        return _fn.softmax(self, dim, dtype)

    def log_softmax(self, dim: int | None = None, dtype: Any = None) -> Tensor:
        return _fn.log_softmax(self, dim, dtype)

    def cumsum(self, dim: Any = None, *, dtype: Any = None, axis: Any = None) -> Tensor:
        return _fn.cumsum(self, dim, dtype=dtype, axis=axis)

    def cumprod(self, dim: Any = None, *, dtype: Any = None, axis: Any = None) -> Tensor:
        return _fn.cumprod(self, dim, dtype=dtype, axis=axis)

    def argmax(self, dim: int | None = None, keepdim: bool = False, *, axis: Any = None) -> Tensor:
        return _fn.argmax(self, dim, keepdim, axis=axis)

    def argmin(self, dim: int | None = None, keepdim: bool = False, *, axis: Any = None) -> Tensor:
        return _fn.argmin(self, dim, keepdim, axis=axis)

    def argsort(self, dim: int = -1, descending: bool = False, stable: bool = False) -> Tensor:
        return _fn.argsort(self, dim, descending, stable)

    def all(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        return _fn.all(self, dim, keepdim)

    def any(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        return _fn.any(self, dim, keepdim)

    def mm(self, mat2: Tensor) -> Tensor:
        return _fn.mm(self, mat2)

    def addmm(self, mat1: Tensor, mat2: Tensor, *, beta: float = 1, alpha: float = 1) -> Tensor:
        return _fn.addmm(self, mat1, mat2, beta=beta, alpha=alpha)

    def bmm(self, mat2: Tensor) -> Tensor:
        return _fn.bmm(self, mat2)

    def outer(self, vec2: Tensor) -> Tensor:
        return _fn.outer(self, vec2)

    def diag(self, diagonal: int = 0) -> Tensor:
        return _fn.diag(self, diagonal)

    def nonzero(self, *, as_tuple: bool = False) -> Any:
        return _fn.nonzero(self, as_tuple=as_tuple)

    def unique(
        self,
        sorted: bool = True,
        return_inverse: bool = False,
        return_counts: bool = False,
        dim: int | None = None,
    ) -> Any:
        return _fn.unique(self, sorted, return_inverse, return_counts, dim)

    def bincount(self, weights: Tensor | None = None, minlength: int = 0) -> Tensor:
        return _fn.bincount(self, weights, minlength)

    def masked_select(self, mask: Tensor) -> Tensor:
        return _fn.masked_select(self, mask)

    def isclose(
        self, other: Any, rtol: float = 1e-5, atol: float = 1e-8, equal_nan: bool = False
    ) -> Tensor:
        return _fn.isclose(self, other, rtol, atol, equal_nan)

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

    def unflatten(self, dim: int, sizes: Any) -> Tensor:
        return _fn.unflatten(self, dim, sizes)

    def transpose(self, dim0: int, dim1: int) -> Tensor:
        return _fn.transpose(self, dim0, dim1)

    def swapaxes(self, axis0: int, axis1: int) -> Tensor:
        return _fn.transpose(self, axis0, axis1)

    swapdims = swapaxes

    def movedim(self, source: Any, destination: Any) -> Tensor:
        return _fn.movedim(self, source, destination)

    moveaxis = movedim

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

    def unbind(self, dim: int = 0) -> tuple:
        return _fn.unbind(self, dim)

    def flip(self, *dims: Any) -> Tensor:
        return _fn.flip(self, *dims)

    def roll(self, shifts: Any, dims: Any = None) -> Tensor:
        return _fn.roll(self, shifts, dims)

    def narrow(self, dim: int, start: Any, length: int) -> Tensor:
        return _fn.narrow(self, dim, start, length)

    def select(self, dim: int, index: int) -> Tensor:
        return _fn.select(self, dim, index)

    def repeat_interleave(
        self, repeats: Any, dim: int | None = None, *, output_size: int | None = None
    ) -> Tensor:
        return _fn.repeat_interleave(self, repeats, dim, output_size=output_size)

    def tile(self, *dims: Any) -> Tensor:
        return _fn.tile(self, *dims)

    def broadcast_to(self, size: Any) -> Tensor:
        return _fn.broadcast_to(self, size)

    def scatter(self, dim: int, index: Tensor, src: Any = None, **kwargs: Any) -> Tensor:
        return _fn.scatter(self, dim, index, src, **kwargs)

    def scatter_add(self, dim: int, index: Tensor, src: Tensor) -> Tensor:
        return _fn.scatter_add(self, dim, index, src)

    def index_add(self, dim: int, index: Tensor, source: Tensor, *, alpha: Any = 1) -> Tensor:
        return _fn.index_add(self, dim, index, source, alpha=alpha)

    def index_fill(self, dim: int, index: Tensor, value: Any) -> Tensor:
        return _fn.index_fill(self, dim, index, value)

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

    def bernoulli(self, p: float | None = None, *, generator: Any = None) -> Tensor:
        return _fn.bernoulli(self, p, generator=generator)

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

    def isinf(self) -> Tensor:
        return _fn.isinf(self)

    def isfinite(self) -> Tensor:
        return _fn.isfinite(self)

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

    clip_ = clamp_

    def floor_divide_(self, other: Any) -> Tensor:
        return _fn.floor_divide_(self, other)

    def remainder_(self, other: Any) -> Tensor:
        return _fn.remainder_(self, other)

    def masked_fill_(self, mask: Tensor, value: Any) -> Tensor:
        return _fn.masked_fill_(self, mask, value)

    def exp_(self) -> Tensor:
        return _fn.exp_(self)

    def sigmoid_(self) -> Tensor:
        return _fn.sigmoid_(self)

    # The in-place forms of the elementwise functions (tensor/ops/inplace_math.py's
    # unary_): a float result into an integer tensor is a TypeError, as PyTorch.
    def abs_(self) -> Tensor:
        return _fn.unary_(self, _fn.abs)

    absolute_ = abs_

    def neg_(self) -> Tensor:
        return _fn.unary_(self, _fn.neg)

    negative_ = neg_

    def log_(self) -> Tensor:
        return _fn.unary_(self, _fn.log)

    def log1p_(self) -> Tensor:
        return _fn.unary_(self, _fn.log1p)

    def sqrt_(self) -> Tensor:
        return _fn.unary_(self, _fn.sqrt)

    def rsqrt_(self) -> Tensor:
        return _fn.unary_(self, _fn.rsqrt)

    def sin_(self) -> Tensor:
        return _fn.unary_(self, _fn.sin)

    def cos_(self) -> Tensor:
        return _fn.unary_(self, _fn.cos)

    def tan_(self) -> Tensor:
        return _fn.unary_(self, _fn.tan)

    def tanh_(self) -> Tensor:
        return _fn.unary_(self, _fn.tanh)

    def square_(self) -> Tensor:
        return _fn.unary_(self, _fn.square)

    def floor_(self) -> Tensor:
        return _fn.unary_(self, _fn.floor)

    def ceil_(self) -> Tensor:
        return _fn.unary_(self, _fn.ceil)

    def trunc_(self) -> Tensor:
        return _fn.unary_(self, _fn.trunc)

    def round_(self, decimals: int = 0) -> Tensor:
        return _fn.unary_(self, _fn.round, decimals)

    def sign_(self) -> Tensor:
        return _fn.unary_(self, _fn.sign)

    def erf_(self) -> Tensor:
        return _fn.unary_(self, _fn.erf)

    def erfinv_(self) -> Tensor:
        return _fn.unary_(self, _fn.erfinv)

    def reciprocal_(self) -> Tensor:
        return _fn.unary_(self, _fn.reciprocal)

    def nan_to_num_(
        self, nan: float = 0.0, posinf: float | None = None, neginf: float | None = None
    ) -> Tensor:
        return _fn.unary_(self, _fn.nan_to_num, nan, posinf, neginf)

    def pow_(self, exponent: Any) -> Tensor:
        return _fn.unary_(self, _fn.pow, exponent)

    def clamp_min_(self, min: Any) -> Tensor:
        return _fn.clamp_(self, min, None)

    def clamp_max_(self, max: Any) -> Tensor:
        return _fn.clamp_(self, None, max)

    def index_fill_(self, dim: int, index: Tensor, value: Any) -> Tensor:
        return _fn.index_fill_(self, dim, index, value)

    def fill_diagonal_(self, fill_value: Any, wrap: bool = False) -> Tensor:
        return _fn.fill_diagonal_(self, fill_value, wrap)

    def relu_(self) -> Tensor:
        return _fn.relu_(self)

    def lerp_(self, end: Any, weight: Any) -> Tensor:
        return _fn.lerp_(self, end, weight)

    def addcmul_(self, tensor1: Any, tensor2: Any, *, value: Any = 1) -> Tensor:
        return _fn.addcmul_(self, tensor1, tensor2, value=value)

    def addcdiv_(self, tensor1: Any, tensor2: Any, *, value: Any = 1) -> Tensor:
        return _fn.addcdiv_(self, tensor1, tensor2, value=value)

    def scatter_(self, dim: int, index: Tensor, src: Any = None, **kwargs: Any) -> Tensor:
        return _fn.scatter_(self, dim, index, src, **kwargs)

    def scatter_add_(self, dim: int, index: Tensor, src: Tensor) -> Tensor:
        return _fn.scatter_add_(self, dim, index, src)

    def index_add_(self, dim: int, index: Tensor, source: Tensor, *, alpha: Any = 1) -> Tensor:
        return _fn.index_add_(self, dim, index, source, alpha=alpha)

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

    def bernoulli_(self, p: Any = 0.5, *, generator: Any = None) -> Tensor:
        return _fn.bernoulli_(self, p, generator)

    def exponential_(self, lambd: float = 1.0, *, generator: Any = None) -> Tensor:
        return _fn.exponential_(self, lambd, generator)

    # ---- new tensors like this one, and dtype conversions ------------------------------
    def new_tensor(self, data: Any, dtype: Any = None, device: Any = None, **kw: Any) -> Tensor:
        """A copy of ``data`` with this tensor's dtype and device unless told otherwise."""
        return _fn.tensor(data, **self._like(dtype, device), **kw)

    def new(self, *args: Any) -> Tensor:
        """Legacy: ``x.new(2, 3)`` a new tensor of those sizes (zeros; PyTorch leaves it
        uninitialised), ``x.new(dt.Size([2, 3]))`` too, ``x.new([1, 2])`` data, ``x.new()``
        empty — with ``x``'s dtype and device. A plain tuple is refused: PyTorch reads it
        as data, but ``x.new(y.shape)`` (a torch.Size there, a tuple here) as sizes."""
        from dtrain._tensor.size import Size

        if len(args) == 1 and isinstance(args[0], Size):
            args = tuple(args[0])
        if not args or all(
            isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in args
        ):
            return _fn.zeros(*args if args else (0,), dtype=self.dtype, device=self.device)
        if len(args) == 1 and isinstance(args[0], tuple):
            raise TypeError(
                f"new({args[0]!r}): ambiguous in dtrain, whose shapes are plain tuples "
                "(PyTorch reads a torch.Size as sizes, a tuple as data); use "
                "x.new_zeros(shape) / x.new_empty(shape) for sizes, x.new_tensor(data) or a "
                "list for data"
            )
        if len(args) == 1:
            return _fn.tensor(args[0], dtype=self.dtype, device=self.device)
        raise TypeError(
            f"new({', '.join(type(a).__name__ for a in args)}): takes sizes (x.new(2, 3)) or "
            "data (x.new([1, 2])); prefer x.new_zeros / x.new_tensor"
        )

    def new_zeros(self, *size: Any, dtype: Any = None, device: Any = None, **kw: Any) -> Tensor:
        """Zeros of ``size``, with this tensor's dtype and device unless told otherwise."""
        return _fn.zeros(*size, **self._like(dtype, device), **kw)

    def new_ones(self, *size: Any, dtype: Any = None, device: Any = None, **kw: Any) -> Tensor:
        """Ones of ``size``, with this tensor's dtype and device unless told otherwise."""
        return _fn.ones(*size, **self._like(dtype, device), **kw)

    def new_empty(self, *size: Any, dtype: Any = None, device: Any = None, **kw: Any) -> Tensor:
        """Uninitialised ``size``, with this tensor's dtype and device unless told otherwise."""
        return _fn.empty(*size, **self._like(dtype, device), **kw)

    def new_full(
        self, size: Any, fill_value: Any, dtype: Any = None, device: Any = None, **kw: Any
    ) -> Tensor:
        """``fill_value`` in ``size``, with this tensor's dtype and device unless told
        otherwise."""
        return _fn.full(size, fill_value, **self._like(dtype, device), **kw)

    def _like(self, dtype: Any, device: Any) -> dict:
        return {
            "dtype": self.dtype if dtype is None else dtype,
            "device": self.device if device is None else device,
        }

    def type(self, dtype: Any = None, non_blocking: bool = False) -> Any:
        """Without ``dtype``, the type's name ('dtrain.FloatTensor', as PyTorch's
        'torch.FloatTensor'); with one (a dtype, or such a name), a cast to it."""
        if dtype is None:
            prefix = "dtrain.cuda." if self.device.type == "cuda" else "dtrain."
            return prefix + _TYPE_NAMES[self.dtype]
        if isinstance(dtype, str) and dtype.split(".")[-1] in _TYPE_DTYPES:
            dtype = _TYPE_DTYPES[dtype.split(".")[-1]]
        return self.to(dtype)

    def nelement(self) -> int:
        return self.numel()

    def ndimension(self) -> int:
        return self.ndim

    def byte(self) -> Tensor:
        """Cast to uint8."""
        return self.to("uint8")

    def char(self) -> Tensor:
        """Cast to int8."""
        return self.to("int8")

    def short(self) -> Tensor:
        """Cast to int16."""
        return self.to("int16")

    def pin_memory(self) -> Tensor:
        """This tensor: host memory is not pinned in dtrain (a CPU copy to a GPU is made
        the same way either way)."""
        return self


_TYPE_NAMES = {
    np.dtype(np.float16): "HalfTensor",
    np.dtype(np.float32): "FloatTensor",
    np.dtype(np.float64): "DoubleTensor",
    np.dtype(np.uint8): "ByteTensor",
    np.dtype(np.int8): "CharTensor",
    np.dtype(np.int16): "ShortTensor",
    np.dtype(np.int32): "IntTensor",
    np.dtype(np.int64): "LongTensor",
    np.dtype(np.bool_): "BoolTensor",
}
_TYPE_DTYPES = {name: dtype for dtype, name in _TYPE_NAMES.items()}
