"""``dtrain.distributions``: ``torch.distributions``' core distributions, ``kl_divergence``
and ``constraints``.

Samples come from dtrain's random generator (``dt.manual_seed``), so a seed draws other
values than PyTorch's.
"""

from dtrain._tensor.distributions import (
    Bernoulli,
    Categorical,
    Distribution,
    Exponential,
    Independent,
    Laplace,
    LogNormal,
    Normal,
    OneHotCategorical,
    Uniform,
    kl_divergence,
    register_kl,
)
from dtrain.distributions import constraints, kl, utils

__all__ = [
    "Bernoulli",
    "Categorical",
    "Distribution",
    "Exponential",
    "Independent",
    "Laplace",
    "LogNormal",
    "Normal",
    "OneHotCategorical",
    "Uniform",
    "constraints",
    "kl",
    "kl_divergence",
    "register_kl",
    "utils",
]
