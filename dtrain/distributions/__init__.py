"""``dtrain.distributions``: ``torch.distributions``' core distributions, ``kl_divergence``
and ``constraints``.

Samples come from dtrain's random generator (``dt.manual_seed``), so a seed draws other
values than PyTorch's.
"""

from dtrain._tensor.distributions import (
    Bernoulli,
    Beta,
    Categorical,
    Chi2,
    Dirichlet,
    Distribution,
    Exponential,
    Gamma,
    Independent,
    Laplace,
    LogNormal,
    MultivariateNormal,
    Normal,
    OneHotCategorical,
    TransformedDistribution,
    Uniform,
    kl_divergence,
    register_kl,
)
from dtrain.distributions import constraints, kl, transforms, utils
from dtrain.distributions.transforms import (
    AffineTransform,
    ComposeTransform,
    ExpTransform,
    SigmoidTransform,
    TanhTransform,
    Transform,
)

__all__ = [
    "Bernoulli",
    "Beta",
    "Categorical",
    "Chi2",
    "Dirichlet",
    "Distribution",
    "Exponential",
    "Gamma",
    "Independent",
    "Laplace",
    "LogNormal",
    "MultivariateNormal",
    "Normal",
    "OneHotCategorical",
    "AffineTransform",
    "ComposeTransform",
    "ExpTransform",
    "SigmoidTransform",
    "TanhTransform",
    "Transform",
    "TransformedDistribution",
    "Uniform",
    "constraints",
    "kl",
    "kl_divergence",
    "register_kl",
    "transforms",
    "utils",
]
