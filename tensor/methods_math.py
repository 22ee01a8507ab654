"""The arithmetic, elementwise and matrix-product methods of ``Tensor``.

Each is a door to the function of the same name in ``dtrain._tensor.functions``, which
``methods.bind`` sets as ``_fn`` here once every op module has loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dtrain._tensor.deprecated_order import number_first, value_first

if TYPE_CHECKING:
    from dtrain._tensor.tensor import Tensor

_fn: Any = None


class MathMethods:
    """Mixed into ``Tensor`` through ``TensorMethods``: arithmetic,
    elementwise math and matrix products."""

    __slots__ = ()

    def add(self, other: Any, *rest: Any, alpha: float = 1) -> Tensor:
        other, alpha = number_first("add", other, rest, alpha)
        return _fn.add(self, other, alpha=alpha)

    def sub(self, other: Any, *rest: Any, alpha: float = 1) -> Tensor:
        other, alpha = number_first("sub", other, rest, alpha)
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

    def expm1(self) -> Tensor:
        return _fn.expm1(self)

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

    def lgamma(self) -> Tensor:
        return _fn.lgamma(self)

    def i0(self) -> Tensor:
        return _fn.i0(self)

    def igamma(self, other: Any) -> Tensor:
        return _fn.igamma(self, other)

    def igammac(self, other: Any) -> Tensor:
        return _fn.igammac(self, other)

    def digamma(self) -> Tensor:
        return _fn.digamma(self)

    def polygamma(self, n: int) -> Tensor:
        return _fn.polygamma(n, self)

    def mvlgamma(self, p: int) -> Tensor:
        return _fn.mvlgamma(self, p)

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

    def addcmul(self, tensor1: Any, tensor2: Any, *rest: Any, value: Any = None) -> Tensor:
        tensor1, tensor2, value = value_first("addcmul", tensor1, tensor2, rest, value)
        return _fn.addcmul(self, tensor1, tensor2, value=value)

    def addcdiv(self, tensor1: Any, tensor2: Any, *rest: Any, value: Any = None) -> Tensor:
        tensor1, tensor2, value = value_first("addcdiv", tensor1, tensor2, rest, value)
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
