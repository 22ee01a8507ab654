"""More elementwise methods of ``Tensor``: inverse and hyperbolic trigonometry, log2,
exp2, erfc, hypot, copysign, xlogy, the bitwise and NumPy-style aliases, and their in-place
``name_`` forms.

Each is a door to the function of the same name in ``dtrain._tensor.functions``, which
``methods.bind`` sets as ``_fn`` here once every op module has loaded. The in-place forms go
through ``unary_`` (tensor/ops/inplace_math.py): a float result into an integer tensor is a
TypeError, as PyTorch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dtrain.runtime.dtypes import float64

if TYPE_CHECKING:
    from dtrain._tensor.tensor import Tensor

_fn: Any = None


class PointwiseMethods:
    """Mixed into ``Tensor`` through ``TensorMethods``: more elementwise math."""

    __slots__ = ()

    def acos(self) -> Tensor:
        return _fn.acos(self)

    def acos_(self) -> Tensor:
        return _fn.unary_(self, _fn.acos)

    def asin(self) -> Tensor:
        return _fn.asin(self)

    def asin_(self) -> Tensor:
        return _fn.unary_(self, _fn.asin)

    def atan(self) -> Tensor:
        return _fn.atan(self)

    def atan_(self) -> Tensor:
        return _fn.unary_(self, _fn.atan)

    def sinh(self) -> Tensor:
        return _fn.sinh(self)

    def sinh_(self) -> Tensor:
        return _fn.unary_(self, _fn.sinh)

    def cosh(self) -> Tensor:
        return _fn.cosh(self)

    def cosh_(self) -> Tensor:
        return _fn.unary_(self, _fn.cosh)

    def acosh(self) -> Tensor:
        return _fn.acosh(self)

    def acosh_(self) -> Tensor:
        return _fn.unary_(self, _fn.acosh)

    def asinh(self) -> Tensor:
        return _fn.asinh(self)

    def asinh_(self) -> Tensor:
        return _fn.unary_(self, _fn.asinh)

    def atanh(self) -> Tensor:
        return _fn.atanh(self)

    def atanh_(self) -> Tensor:
        return _fn.unary_(self, _fn.atanh)

    def log2(self) -> Tensor:
        return _fn.log2(self)

    def log2_(self) -> Tensor:
        return _fn.unary_(self, _fn.log2)

    def log10(self) -> Tensor:
        return _fn.log10(self)

    def log10_(self) -> Tensor:
        return _fn.unary_(self, _fn.log10)

    def exp2(self) -> Tensor:
        return _fn.exp2(self)

    def exp2_(self) -> Tensor:
        return _fn.unary_(self, _fn.exp2)

    def erfc(self) -> Tensor:
        return _fn.erfc(self)

    def erfc_(self) -> Tensor:
        return _fn.unary_(self, _fn.erfc)

    def sinc(self) -> Tensor:
        return _fn.sinc(self)

    def sinc_(self) -> Tensor:
        return _fn.unary_(self, _fn.sinc)

    def frac(self) -> Tensor:
        return _fn.frac(self)

    def frac_(self) -> Tensor:
        return _fn.unary_(self, _fn.frac)

    def deg2rad(self) -> Tensor:
        return _fn.deg2rad(self)

    def deg2rad_(self) -> Tensor:
        return _fn.unary_(self, _fn.deg2rad)

    def rad2deg(self) -> Tensor:
        return _fn.rad2deg(self)

    def rad2deg_(self) -> Tensor:
        return _fn.unary_(self, _fn.rad2deg)

    def sgn(self) -> Tensor:
        return _fn.sgn(self)

    def sgn_(self) -> Tensor:
        return _fn.unary_(self, _fn.sgn)

    def logit(self, eps: float | None = None) -> Tensor:
        return _fn.logit(self, eps)

    def logit_(self, eps: float | None = None) -> Tensor:
        return _fn.unary_(self, _fn.logit, eps)

    def signbit(self) -> Tensor:
        return _fn.signbit(self)

    def isposinf(self) -> Tensor:
        return _fn.isposinf(self)

    def isneginf(self) -> Tensor:
        return _fn.isneginf(self)

    def isreal(self) -> Tensor:
        return _fn.isreal(self)

    def positive(self) -> Tensor:
        return _fn.positive(self)

    def negative(self) -> Tensor:
        return _fn.negative(self)

    def atan2(self, other: Any) -> Tensor:
        return _fn.atan2(self, other)

    def hypot(self, other: Any) -> Tensor:
        return _fn.hypot(self, other)

    def logaddexp(self, other: Any) -> Tensor:
        return _fn.logaddexp(self, other)

    def logaddexp2(self, other: Any) -> Tensor:
        return _fn.logaddexp2(self, other)

    def copysign(self, other: Any) -> Tensor:
        return _fn.copysign(self, other)

    def fmax(self, other: Any) -> Tensor:
        return _fn.fmax(self, other)

    def fmin(self, other: Any) -> Tensor:
        return _fn.fmin(self, other)

    def xlogy(self, other: Any) -> Tensor:
        return _fn.xlogy(self, other)

    def ldexp(self, other: Any) -> Tensor:
        return _fn.ldexp(self, other)

    def heaviside(self, values: Any) -> Tensor:
        return _fn.heaviside(self, values)

    def nextafter(self, other: Any) -> Tensor:
        return _fn.nextafter(self, other)

    def gcd(self, other: Any) -> Tensor:
        return _fn.gcd(self, other)

    def lcm(self, other: Any) -> Tensor:
        return _fn.lcm(self, other)

    def bitwise_and(self, other: Any) -> Tensor:
        return _fn.bitwise_and(self, other)

    def bitwise_or(self, other: Any) -> Tensor:
        return _fn.bitwise_or(self, other)

    def bitwise_xor(self, other: Any) -> Tensor:
        return _fn.bitwise_xor(self, other)

    def bitwise_left_shift(self, other: Any) -> Tensor:
        return _fn.bitwise_left_shift(self, other)

    def bitwise_right_shift(self, other: Any) -> Tensor:
        return _fn.bitwise_right_shift(self, other)

    def logical_xor(self, other: Any) -> Tensor:
        return _fn.logical_xor(self, other)

    def atan2_(self, other: Any) -> Tensor:
        return _fn.unary_(self, _fn.atan2, other)

    def hypot_(self, other: Any) -> Tensor:
        return _fn.unary_(self, _fn.hypot, other)

    def copysign_(self, other: Any) -> Tensor:
        return _fn.unary_(self, _fn.copysign, other)

    def xlogy_(self, other: Any) -> Tensor:
        return _fn.unary_(self, _fn.xlogy, other)

    def ldexp_(self, other: Any) -> Tensor:
        return _fn.unary_(self, _fn.ldexp, other)

    def heaviside_(self, values: Any) -> Tensor:
        return _fn.unary_(self, _fn.heaviside, values)

    def nextafter_(self, other: Any) -> Tensor:
        return _fn.unary_(self, _fn.nextafter, other)

    def gcd_(self, other: Any) -> Tensor:
        return _fn.unary_(self, _fn.gcd, other)

    def lcm_(self, other: Any) -> Tensor:
        return _fn.unary_(self, _fn.lcm, other)

    def bitwise_and_(self, other: Any) -> Tensor:
        return _fn.unary_(self, _fn.bitwise_and, other)

    def bitwise_or_(self, other: Any) -> Tensor:
        return _fn.unary_(self, _fn.bitwise_or, other)

    def bitwise_xor_(self, other: Any) -> Tensor:
        return _fn.unary_(self, _fn.bitwise_xor, other)

    def bitwise_left_shift_(self, other: Any) -> Tensor:
        return _fn.unary_(self, _fn.bitwise_left_shift, other)

    def bitwise_right_shift_(self, other: Any) -> Tensor:
        return _fn.unary_(self, _fn.bitwise_right_shift, other)

    def logical_xor_(self, other: Any) -> Tensor:
        return _fn.unary_(self, _fn.logical_xor, other)

    def logical_and_(self, other: Any) -> Tensor:
        return _fn.unary_(self, _fn.logical_and, other)

    def logical_or_(self, other: Any) -> Tensor:
        return _fn.unary_(self, _fn.logical_or, other)

    def eq_(self, other: Any) -> Tensor:
        return _fn.unary_(self, _fn.eq, other)

    def ne_(self, other: Any) -> Tensor:
        return _fn.unary_(self, _fn.ne, other)

    def lt_(self, other: Any) -> Tensor:
        return _fn.unary_(self, _fn.lt, other)

    def le_(self, other: Any) -> Tensor:
        return _fn.unary_(self, _fn.le, other)

    def gt_(self, other: Any) -> Tensor:
        return _fn.unary_(self, _fn.gt, other)

    def ge_(self, other: Any) -> Tensor:
        return _fn.unary_(self, _fn.ge, other)

    def logical_not_(self) -> Tensor:
        return _fn.unary_(self, _fn.logical_not)

    def bitwise_not(self) -> Tensor:
        return _fn.bitwise_not(self)

    def bitwise_not_(self) -> Tensor:
        return _fn.unary_(self, _fn.bitwise_not)

    def float_power(self, exponent: Any) -> Tensor:
        return _fn.float_power(self, exponent)

    def float_power_(self, exponent: Any) -> Tensor:
        if self.dtype != float64:
            raise TypeError(
                f"float_power_: the result is float64 but the tensor is {self.dtype}; use "
                "x = x.float_power(exponent), or x.double() first"
            )
        return _fn.unary_(self, _fn.float_power, exponent)

    def subtract(self, other: Any, *, alpha: float = 1) -> Tensor:
        return _fn.sub(self, other, alpha=alpha)

    def subtract_(self, other: Any, *, alpha: float = 1) -> Tensor:
        return _fn.sub_(self, other, alpha)

    def multiply_(self, other: Any) -> Tensor:
        return _fn.mul_(self, other)

    def true_divide(self, other: Any) -> Tensor:
        return _fn.div(self, other)

    def true_divide_(self, other: Any) -> Tensor:
        return _fn.div_(self, other)

    def divide_(self, other: Any, *, rounding_mode: str | None = None) -> Tensor:
        return _fn.divide_(self, other, rounding_mode=rounding_mode)

    def multiply(self, other: Any) -> Tensor:
        return _fn.mul(self, other)

    def greater(self, other: Any) -> Tensor:
        return _fn.gt(self, other)

    def greater_equal(self, other: Any) -> Tensor:
        return _fn.ge(self, other)

    def less(self, other: Any) -> Tensor:
        return _fn.lt(self, other)

    def less_equal(self, other: Any) -> Tensor:
        return _fn.le(self, other)

    def not_equal(self, other: Any) -> Tensor:
        return _fn.ne(self, other)

    def greater_(self, other: Any) -> Tensor:
        return _fn.unary_(self, _fn.gt, other)

    def greater_equal_(self, other: Any) -> Tensor:
        return _fn.unary_(self, _fn.ge, other)

    def less_(self, other: Any) -> Tensor:
        return _fn.unary_(self, _fn.lt, other)

    def less_equal_(self, other: Any) -> Tensor:
        return _fn.unary_(self, _fn.le, other)

    def not_equal_(self, other: Any) -> Tensor:
        return _fn.unary_(self, _fn.ne, other)

    arccos, arcsin, arctan = acos, asin, atan
    arccosh, arcsinh, arctanh = acosh, asinh, atanh
    arccos_, arcsin_, arctan_ = acos_, asin_, atan_
    arccosh_, arcsinh_, arctanh_ = acosh_, asinh_, atanh_
    arctan2, arctan2_ = atan2, atan2_

    def fix(self) -> Tensor:
        return _fn.trunc(self)

    def fix_(self) -> Tensor:
        return _fn.unary_(self, _fn.trunc)

    def absolute(self) -> Tensor:
        return _fn.abs(self)
