"""``dtrain.special``: ``torch.special``'s functions, on dtrain's ops.

Every function takes PyTorch's ``out=``. Integer inputs compute in float32 (PyTorch's
default float); ``gammainc``/``gammaincc`` accept them too, where PyTorch refuses integers.
On the CPU ``bessel_j0/j1/y0/y1`` and ``airy_ai`` are computed to ~1e-15; PyTorch's own are
off by up to ~2e-5 relative (J, Y beyond x = 5) and ~3e-6 absolute (Ai). On CUDA J and Y are
``cupyx.scipy.special``'s Cephes kernels (scipy's values, which differ for |x| above ~1e8).
float16 inputs are computed (in float64) and rounded, where PyTorch refuses most of them.

Everything in ``torch.special`` is offered.
"""

from __future__ import annotations

import math

from dtrain._tensor.functions import (
    digamma,
    erf,
    erfc,
    erfinv,
    exp2,
    expm1,
    log1p,
    log_softmax,
    logit,
    logsumexp,
    mvlgamma,
    polygamma,
    round,
    sigmoid,
    sinc,
    softmax,
    xlogy,
)
from dtrain._tensor.functions import lgamma as gammaln
from dtrain._tensor.ops import special_bessel as _bessel
from dtrain._tensor.ops import special_incomplete as _incomplete
from dtrain._tensor.ops import special_normal as _normal
from dtrain._tensor.ops import special_polynomials as _poly
from dtrain._tensor.ops.special import entr as _entr
from dtrain._tensor.out_argument import accepts_out
from dtrain._tensor.tensor import Tensor

psi = digamma
expit = sigmoid
multigammaln = mvlgamma


def ndtr(input: Tensor) -> Tensor:
    """The standard normal CDF, ``erfc(-x / sqrt(2)) / 2`` (accurate in the lower tail)."""
    return erfc(input * (-1 / math.sqrt(2))) * 0.5


ndtr = accepts_out(ndtr)
entr = accepts_out(_entr)
airy_ai = accepts_out(_bessel.airy_ai)
i0 = accepts_out(_bessel.i0)
i0e = accepts_out(_bessel.i0e)
i1 = accepts_out(_bessel.i1)
i1e = accepts_out(_bessel.i1e)
bessel_j0 = accepts_out(_bessel.bessel_j0)
bessel_j1 = accepts_out(_bessel.bessel_j1)
bessel_y0 = accepts_out(_bessel.bessel_y0)
bessel_y1 = accepts_out(_bessel.bessel_y1)
spherical_bessel_j0 = accepts_out(_bessel.spherical_bessel_j0)
modified_bessel_i0 = accepts_out(_bessel.modified_bessel_i0)
modified_bessel_i1 = accepts_out(_bessel.modified_bessel_i1)
modified_bessel_k0 = accepts_out(_bessel.modified_bessel_k0)
modified_bessel_k1 = accepts_out(_bessel.modified_bessel_k1)
scaled_modified_bessel_k0 = accepts_out(_bessel.scaled_modified_bessel_k0)
scaled_modified_bessel_k1 = accepts_out(_bessel.scaled_modified_bessel_k1)
ndtri = accepts_out(_normal.ndtri)
log_ndtr = accepts_out(_normal.log_ndtr)
erfcx = accepts_out(_normal.erfcx)
xlog1py = accepts_out(_normal.xlog1py)
gammainc = accepts_out(_incomplete.gammainc)
gammaincc = accepts_out(_incomplete.gammaincc)
zeta = accepts_out(_incomplete.zeta)
chebyshev_polynomial_t = accepts_out(_poly.chebyshev_polynomial_t)
chebyshev_polynomial_u = accepts_out(_poly.chebyshev_polynomial_u)
chebyshev_polynomial_v = accepts_out(_poly.chebyshev_polynomial_v)
chebyshev_polynomial_w = accepts_out(_poly.chebyshev_polynomial_w)
shifted_chebyshev_polynomial_t = accepts_out(_poly.shifted_chebyshev_polynomial_t)
shifted_chebyshev_polynomial_u = accepts_out(_poly.shifted_chebyshev_polynomial_u)
shifted_chebyshev_polynomial_v = accepts_out(_poly.shifted_chebyshev_polynomial_v)
shifted_chebyshev_polynomial_w = accepts_out(_poly.shifted_chebyshev_polynomial_w)
hermite_polynomial_h = accepts_out(_poly.hermite_polynomial_h)
hermite_polynomial_he = accepts_out(_poly.hermite_polynomial_he)
laguerre_polynomial_l = accepts_out(_poly.laguerre_polynomial_l)
legendre_polynomial_p = accepts_out(_poly.legendre_polynomial_p)

__all__ = [
    "airy_ai",
    "bessel_j0",
    "bessel_j1",
    "bessel_y0",
    "bessel_y1",
    "chebyshev_polynomial_t",
    "chebyshev_polynomial_u",
    "chebyshev_polynomial_v",
    "chebyshev_polynomial_w",
    "digamma",
    "entr",
    "erf",
    "erfc",
    "erfcx",
    "erfinv",
    "exp2",
    "expit",
    "expm1",
    "gammainc",
    "gammaincc",
    "gammaln",
    "hermite_polynomial_h",
    "hermite_polynomial_he",
    "i0",
    "i0e",
    "i1",
    "i1e",
    "laguerre_polynomial_l",
    "legendre_polynomial_p",
    "log1p",
    "log_ndtr",
    "log_softmax",
    "logit",
    "logsumexp",
    "modified_bessel_i0",
    "modified_bessel_i1",
    "modified_bessel_k0",
    "modified_bessel_k1",
    "multigammaln",
    "ndtr",
    "ndtri",
    "polygamma",
    "psi",
    "round",
    "scaled_modified_bessel_k0",
    "scaled_modified_bessel_k1",
    "shifted_chebyshev_polynomial_t",
    "shifted_chebyshev_polynomial_u",
    "shifted_chebyshev_polynomial_v",
    "shifted_chebyshev_polynomial_w",
    "sinc",
    "softmax",
    "spherical_bessel_j0",
    "xlog1py",
    "xlogy",
    "zeta",
]
