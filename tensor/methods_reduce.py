"""The reduction, scan, sort and search methods of ``Tensor``.

Each is a door to the function of the same name in ``dtrain._tensor.functions``, which
``methods.bind`` sets as ``_fn`` here once every op module has loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dtrain._tensor.tensor import Tensor

_fn: Any = None


class ReductionMethods:
    """Mixed into ``Tensor`` through ``TensorMethods``: reductions, scans, sorting and searching."""

    __slots__ = ()

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

    def sort(self, dim: int = -1, descending: bool = False, stable: bool = False) -> Any:
        return _fn.sort(self, dim, descending, stable)

    def topk(self, k: int, dim: int = -1, largest: bool = True, sorted: bool = True) -> Any:
        return _fn.topk(self, k, dim, largest, sorted)

    # More reductions and scans (tensor/ops/reduce_stats.py, reduce_order.py, scan.py).
    def nansum(self, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> Tensor:
        return _fn.nansum(self, dim, keepdim, dtype=dtype)

    def nanmean(self, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> Tensor:
        return _fn.nanmean(self, dim, keepdim, dtype=dtype)

    def count_nonzero(self, dim: Any = None) -> Tensor:
        return _fn.count_nonzero(self, dim)

    def aminmax(self, *, dim: int | None = None, keepdim: bool = False) -> Any:
        return _fn.aminmax(self, dim=dim, keepdim=keepdim)

    def median(self, dim: int | None = None, keepdim: bool = False) -> Any:
        return _fn.median(self, dim, keepdim)

    def nanmedian(self, dim: int | None = None, keepdim: bool = False) -> Any:
        return _fn.nanmedian(self, dim, keepdim)

    def kthvalue(self, k: int, dim: int = -1, keepdim: bool = False) -> Any:
        return _fn.kthvalue(self, k, dim, keepdim)

    def mode(self, dim: int = -1, keepdim: bool = False) -> Any:
        return _fn.mode(self, dim, keepdim)

    def quantile(
        self,
        q: Any,
        dim: int | None = None,
        keepdim: bool = False,
        *,
        interpolation: str = "linear",
    ) -> Tensor:
        return _fn.quantile(self, q, dim, keepdim, interpolation=interpolation)

    def nanquantile(
        self,
        q: Any,
        dim: int | None = None,
        keepdim: bool = False,
        *,
        interpolation: str = "linear",
    ) -> Tensor:
        return _fn.nanquantile(self, q, dim, keepdim, interpolation=interpolation)

    def logcumsumexp(self, dim: int) -> Tensor:
        return _fn.logcumsumexp(self, dim)

    def cummax(self, dim: int) -> Any:
        return _fn.cummax(self, dim)

    def cummin(self, dim: int) -> Any:
        return _fn.cummin(self, dim)

    def diff(self, n: int = 1, dim: int = -1, prepend: Any = None, append: Any = None) -> Tensor:
        return _fn.diff(self, n, dim, prepend, append)

    def histc(self, bins: int = 100, min: float = 0, max: float = 0) -> Tensor:
        return _fn.histc(self, bins, min, max)
