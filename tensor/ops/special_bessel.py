"""The Bessel functions of torch.special: ``i0, i0e, i1, i1e`` (differentiable, as PyTorch)
and ``airy_ai``, ``bessel_j0/j1/y0/y1``, ``spherical_bessel_j0``, ``modified_bessel_i0/i1/k0/k1``,
``scaled_modified_bessel_k0/k1`` (no gradient in PyTorch: their results do not require grad
here either)."""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.ops.special_common import as_float as _float
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime import special_airy as _airy
from dtrain.runtime import special_bessel as _bessel_j
from dtrain.runtime import special_bessel_modified as _bessel
from dtrain.runtime.backend import get_array_module


def _tiny(x: Any) -> Any:
    """Where ``|x|`` is below the dtype's epsilon (PyTorch's cut-off for ``I1(x) / x``; NaN
    counts as tiny there, so that the slope at NaN is 1/2, as in PyTorch)."""
    return ~(get_array_module(x).abs(x) >= np.finfo(x.dtype).eps)


class I0(Op):
    """``I0``; d/dx = ``I1``."""

    reads_inputs = True

    def forward(self, x: Any) -> Any:
        self.x = x
        return _bessel.i0(x)

    def backward(self, grad: Any) -> tuple:
        return (grad * _bessel.i1(self.x).astype(grad.dtype, copy=False),)


class I0e(Op):
    """``exp(-|x|) I0``; d/dx = ``i1e(x) - sgn(x) i0e(x)``."""

    reads_inputs = True
    reads_output = True

    def forward(self, x: Any) -> Any:
        self.x = x
        self.out = _bessel.i0e(x)
        return self.out

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        slope = _bessel.i1e(self.x) - xp.sign(self.x) * self.out
        return (grad * slope.astype(grad.dtype, copy=False),)


class I1(Op):
    """``I1``; d/dx = ``I0(x) - I1(x) / x`` (1/2 at 0)."""

    reads_inputs = True
    reads_output = True

    def forward(self, x: Any) -> Any:
        self.x = x
        self.out = _bessel.i1(x)
        return self.out

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        x, tiny = self.x, _tiny(self.x)
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = _bessel.i0(x) - self.out / xp.where(tiny, 1, x)
        slope = xp.where(tiny, 0.5, slope)
        return (grad * slope.astype(grad.dtype, copy=False),)


class I1e(Op):
    """``exp(-|x|) I1``; d/dx = ``i0e(x) - i1e(x) (sgn(x) + 1 / x)`` (1/2 at 0)."""

    reads_inputs = True
    reads_output = True

    def forward(self, x: Any) -> Any:
        self.x = x
        self.out = _bessel.i1e(x)
        return self.out

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        x, tiny = self.x, _tiny(self.x)
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = _bessel.i0e(x) - self.out * (xp.sign(x) + 1 / xp.where(tiny, 1, x))
        slope = xp.where(tiny, 0.5, slope)
        return (grad * slope.astype(grad.dtype, copy=False),)


def i0(input: Tensor) -> Tensor:
    """The modified Bessel function of the first kind of order 0, ``I0``, elementwise."""
    return I0.apply(_float(input))


def i0e(input: Tensor) -> Tensor:
    """The exponentially scaled ``I0``: ``exp(-|x|) I0(x)``, elementwise."""
    return I0e.apply(_float(input))


def i1(input: Tensor) -> Tensor:
    """The modified Bessel function of the first kind of order 1, ``I1``, elementwise."""
    return I1.apply(_float(input))


def i1e(input: Tensor) -> Tensor:
    """The exponentially scaled ``I1``: ``exp(-|x|) I1(x)``, elementwise."""
    return I1e.apply(_float(input))


def _no_grad(function: Any, input: Tensor) -> Tensor:
    return wrap(function(_float(input)._array))


def modified_bessel_i0(input: Tensor) -> Tensor:
    """``I0``, elementwise, without a gradient (as PyTorch; ``i0`` has one)."""
    return _no_grad(_bessel.i0, input)


def modified_bessel_i1(input: Tensor) -> Tensor:
    """``I1``, elementwise, without a gradient (as PyTorch; ``i1`` has one)."""
    return _no_grad(_bessel.i1, input)


def modified_bessel_k0(input: Tensor) -> Tensor:
    """The modified Bessel function of the second kind of order 0, ``K0``: +inf at 0, NaN
    below; no gradient (as PyTorch)."""
    return _no_grad(_bessel.k0, input)


def modified_bessel_k1(input: Tensor) -> Tensor:
    """``K1``, elementwise: +inf at 0, NaN below; no gradient (as PyTorch)."""
    return _no_grad(_bessel.k1, input)


def scaled_modified_bessel_k0(input: Tensor) -> Tensor:
    """``exp(x) K0(x)``, elementwise: +inf at 0, NaN below; no gradient (as PyTorch)."""
    return _no_grad(_bessel.k0e, input)


def scaled_modified_bessel_k1(input: Tensor) -> Tensor:
    """``exp(x) K1(x)``, elementwise: +inf at 0, NaN below; no gradient (as PyTorch)."""
    return _no_grad(_bessel.k1e, input)


def bessel_j0(input: Tensor) -> Tensor:
    """The Bessel function of the first kind of order 0, ``J0``; no gradient (as PyTorch)."""
    return _no_grad(_bessel_j.j0, input)


def bessel_j1(input: Tensor) -> Tensor:
    """The Bessel function of the first kind of order 1, ``J1``; no gradient (as PyTorch)."""
    return _no_grad(_bessel_j.j1, input)


def bessel_y0(input: Tensor) -> Tensor:
    """The Bessel function of the second kind of order 0, ``Y0``: -inf at 0, NaN below; no
    gradient (as PyTorch)."""
    return _no_grad(_bessel_j.y0, input)


def bessel_y1(input: Tensor) -> Tensor:
    """The Bessel function of the second kind of order 1, ``Y1``: -inf at 0, NaN below; no
    gradient (as PyTorch)."""
    return _no_grad(_bessel_j.y1, input)


def spherical_bessel_j0(input: Tensor) -> Tensor:
    """The spherical Bessel function ``j0(x) = sin(x) / x`` (1 at 0, 0 at ±inf); no gradient
    (as PyTorch)."""
    return _no_grad(_bessel_j.spherical_j0, input)


def airy_ai(input: Tensor) -> Tensor:
    """The Airy function ``Ai``, elementwise (NaN at ±inf); no gradient (as PyTorch)."""
    return _no_grad(_airy.airy_ai, input)


__all__ = [
    "airy_ai",
    "bessel_j0",
    "bessel_j1",
    "bessel_y0",
    "bessel_y1",
    "i0",
    "i0e",
    "i1",
    "i1e",
    "modified_bessel_i0",
    "modified_bessel_i1",
    "modified_bessel_k0",
    "modified_bessel_k1",
    "scaled_modified_bessel_k0",
    "scaled_modified_bessel_k1",
    "spherical_bessel_j0",
]
