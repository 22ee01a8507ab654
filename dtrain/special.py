"""``dtrain.special``: ``torch.special``'s commonly used functions, on dtrain's ops.

Not offered (PyTorch has them): ``i0``, ``i0e``, ``i1``, ``i1e``, ``erfcx``, ``log_ndtr``,
``ndtri``, ``zeta``, ``gammainc``, ``gammaincc``, ``xlog1py``, the Bessel functions and the
orthogonal polynomials.
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
from dtrain._tensor.ops.special import entr
from dtrain._tensor.tensor import Tensor

psi = digamma
expit = sigmoid
multigammaln = mvlgamma


def ndtr(input: Tensor) -> Tensor:
    """The standard normal CDF, ``erfc(-x / sqrt(2)) / 2`` (accurate in the lower tail)."""
    return erfc(input * (-1 / math.sqrt(2))) * 0.5


__all__ = [
    "digamma",
    "entr",
    "erf",
    "erfc",
    "erfinv",
    "exp2",
    "expit",
    "expm1",
    "gammaln",
    "log1p",
    "log_softmax",
    "logit",
    "logsumexp",
    "multigammaln",
    "ndtr",
    "polygamma",
    "psi",
    "round",
    "sinc",
    "softmax",
    "xlogy",
]
