"""Probability distributions, as ``torch.distributions`` (public as ``dtrain.distributions``).

Samples come from dtrain's random generator (``dt.manual_seed``), so a seed draws other
values than PyTorch's; densities, entropies, KL divergences and gradients match.
"""

from dtrain._tensor.distributions import (
    constraints,
    kl_cross,  # noqa: F401 - registers its KLs
    kl_families,  # noqa: F401 - registers its KLs
    kl_more,  # noqa: F401 - registers its KLs
    kl_new,  # noqa: F401 - registers its KLs
)
from dtrain._tensor.distributions.bernoulli import Bernoulli
from dtrain._tensor.distributions.beta_dirichlet import Beta, Dirichlet
from dtrain._tensor.distributions.binomial import Binomial
from dtrain._tensor.distributions.categorical import Categorical
from dtrain._tensor.distributions.cauchy import Cauchy, HalfCauchy
from dtrain._tensor.distributions.continuous_bernoulli import ContinuousBernoulli
from dtrain._tensor.distributions.distribution import Distribution
from dtrain._tensor.distributions.exponential import Exponential
from dtrain._tensor.distributions.fisher_snedecor import FisherSnedecor
from dtrain._tensor.distributions.gamma import Chi2, Gamma
from dtrain._tensor.distributions.geometric import Geometric
from dtrain._tensor.distributions.gumbel import Gumbel
from dtrain._tensor.distributions.half_normal import HalfNormal
from dtrain._tensor.distributions.independent import Independent
from dtrain._tensor.distributions.kl import kl_divergence, register_kl
from dtrain._tensor.distributions.kumaraswamy import Kumaraswamy
from dtrain._tensor.distributions.laplace import Laplace
from dtrain._tensor.distributions.log_normal import LogNormal
from dtrain._tensor.distributions.logistic_normal import LogisticNormal
from dtrain._tensor.distributions.lowrank_multivariate_normal import LowRankMultivariateNormal
from dtrain._tensor.distributions.mixture_same_family import MixtureSameFamily
from dtrain._tensor.distributions.multinomial import Multinomial
from dtrain._tensor.distributions.multivariate_normal import MultivariateNormal
from dtrain._tensor.distributions.negative_binomial import NegativeBinomial
from dtrain._tensor.distributions.normal import Normal
from dtrain._tensor.distributions.one_hot_categorical import OneHotCategorical
from dtrain._tensor.distributions.pareto import Pareto
from dtrain._tensor.distributions.poisson import Poisson
from dtrain._tensor.distributions.relaxed import (
    ExpRelaxedCategorical,
    LogitRelaxedBernoulli,
    RelaxedBernoulli,
    RelaxedOneHotCategorical,
)
from dtrain._tensor.distributions.student_t import StudentT
from dtrain._tensor.distributions.transforms import TransformedDistribution
from dtrain._tensor.distributions.uniform import Uniform
from dtrain._tensor.distributions.von_mises import VonMises
from dtrain._tensor.distributions.weibull import Weibull

__all__ = [
    "ContinuousBernoulli",
    "FisherSnedecor",
    "Kumaraswamy",
    "LogisticNormal",
    "LowRankMultivariateNormal",
    "MixtureSameFamily",
    "Multinomial",
    "NegativeBinomial",
    "Pareto",
    "ExpRelaxedCategorical",
    "LogitRelaxedBernoulli",
    "RelaxedBernoulli",
    "RelaxedOneHotCategorical",
    "VonMises",
    "Weibull",
    "Bernoulli",
    "Beta",
    "Binomial",
    "Categorical",
    "Cauchy",
    "Chi2",
    "Dirichlet",
    "Distribution",
    "Exponential",
    "Gamma",
    "Geometric",
    "Gumbel",
    "HalfCauchy",
    "HalfNormal",
    "Independent",
    "Laplace",
    "LogNormal",
    "MultivariateNormal",
    "Normal",
    "OneHotCategorical",
    "Poisson",
    "StudentT",
    "TransformedDistribution",
    "Uniform",
    "constraints",
    "kl_divergence",
    "register_kl",
]
