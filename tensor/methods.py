"""The math, shape, comparison and in-place methods of ``Tensor``.

Each method is a door to the function of the same name in ``dtrain._tensor.functions``,
where its docstring lives. ``Tensor`` inherits them from ``TensorMethods``; the functions
module is bound by ``tensor.py`` once every op module has loaded (they import ``Tensor``,
so this module cannot import them first).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
        return _fn.as_tensor(self._array.all(axis=dim, keepdims=keepdim))

    def any(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        return _fn.as_tensor(self._array.any(axis=dim, keepdims=keepdim))

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
