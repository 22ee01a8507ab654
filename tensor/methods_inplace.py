"""The in-place methods of ``Tensor`` (the ``name_`` forms).

Each is a door to the function of the same name in ``dtrain._tensor.functions``, which
``methods.bind`` sets as ``_fn`` here once every op module has loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dtrain._tensor.deprecated_order import number_first, value_first

if TYPE_CHECKING:
    from dtrain._tensor.tensor import Tensor

_fn: Any = None


# Named as torch's functions, so that an in-place error names ``igamma_`` (the op modules
# call them gammainc / gammaincc).
def igamma(input: Tensor, other: Any) -> Tensor:
    return _fn.igamma(input, other)


def igammac(input: Tensor, other: Any) -> Tensor:
    return _fn.igammac(input, other)


class InplaceMethods:
    """Mixed into ``Tensor`` through ``TensorMethods``: the in-place forms of the math,
    fill and indexing methods."""

    __slots__ = ()

    def add_(self, other: Any, *rest: Any, alpha: float = 1) -> Tensor:
        other, alpha = number_first("add_", other, rest, alpha)
        return _fn.add_(self, other, alpha)

    def sub_(self, other: Any, *rest: Any, alpha: float = 1) -> Tensor:
        other, alpha = number_first("sub_", other, rest, alpha)
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

    def expm1_(self) -> Tensor:
        return _fn.unary_(self, _fn.expm1)

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

    def i0_(self) -> Tensor:
        return _fn.unary_(self, _fn.i0)

    def igamma_(self, other: Any) -> Tensor:
        return _fn.unary_(self, igamma, other)

    def igammac_(self, other: Any) -> Tensor:
        return _fn.unary_(self, igammac, other)

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

    def addcmul_(self, tensor1: Any, tensor2: Any, *rest: Any, value: Any = None) -> Tensor:
        tensor1, tensor2, value = value_first("addcmul_", tensor1, tensor2, rest, value)
        return _fn.addcmul_(self, tensor1, tensor2, value=value)

    def addcdiv_(self, tensor1: Any, tensor2: Any, *rest: Any, value: Any = None) -> Tensor:
        tensor1, tensor2, value = value_first("addcdiv_", tensor1, tensor2, rest, value)
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
        # imported here: creation_filled imports tensor.py, which imports this module
        from dtrain._tensor.creation_filled import check_fill_value

        return _fn.fill_(self, check_fill_value(value, self.dtype, "fill_"))

    def copy_(self, source: Any) -> Tensor:
        return _fn.copy_(self, source)

    def cumsum_(self, dim: int) -> Tensor:
        return _fn.unary_(self, _fn.cumsum, dim)

    def cumprod_(self, dim: int) -> Tensor:
        return _fn.unary_(self, _fn.cumprod, dim)

    def fmod_(self, other: Any) -> Tensor:
        return _fn.unary_(self, _fn.fmod, other)

    def tril_(self, diagonal: int = 0) -> Tensor:
        return _fn.unary_(self, _fn.tril, diagonal)

    def triu_(self, diagonal: int = 0) -> Tensor:
        return _fn.unary_(self, _fn.triu, diagonal)
