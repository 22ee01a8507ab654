"""PyTorch's closed-form KL divergences for Gumbel, Cauchy, HalfNormal, Poisson, Geometric
and Binomial pairs of one family (registered on import, by ``dtrain._tensor.distributions``)."""

from __future__ import annotations

from dtrain._tensor import functions as fn
from dtrain._tensor.distributions.binomial import Binomial
from dtrain._tensor.distributions.cauchy import Cauchy
from dtrain._tensor.distributions.geometric import Geometric
from dtrain._tensor.distributions.gumbel import EULER_GAMMA, Gumbel
from dtrain._tensor.distributions.half_normal import HalfNormal
from dtrain._tensor.distributions.kl import _kl_normal_normal, register_kl
from dtrain._tensor.distributions.poisson import Poisson
from dtrain._tensor.ops.special import lgamma
from dtrain._tensor.tensor import Tensor


@register_kl(Gumbel, Gumbel)
def _kl_gumbel_gumbel(p: Gumbel, q: Gumbel) -> Tensor:
    ct1 = p.scale / q.scale
    ct2 = q.loc / q.scale
    ct3 = p.loc / q.scale
    t1 = -ct1.log() - ct2 + ct3
    t2 = ct1 * EULER_GAMMA
    t3 = (ct2 + lgamma(1 + ct1) - ct3).exp()
    return t1 + t2 + t3 - (1 + EULER_GAMMA)


@register_kl(Cauchy, Cauchy)
def _kl_cauchy_cauchy(p: Cauchy, q: Cauchy) -> Tensor:
    t1 = ((p.scale + q.scale).pow(2) + (p.loc - q.loc).pow(2)).log()
    return t1 - (4 * p.scale * q.scale).log()


@register_kl(HalfNormal, HalfNormal)
def _kl_halfnormal_halfnormal(p: HalfNormal, q: HalfNormal) -> Tensor:
    return _kl_normal_normal(p.base_dist, q.base_dist)


@register_kl(Poisson, Poisson)
def _kl_poisson_poisson(p: Poisson, q: Poisson) -> Tensor:
    return p.rate * (p.rate.log() - q.rate.log()) - (p.rate - q.rate)


@register_kl(Geometric, Geometric)
def _kl_geometric_geometric(p: Geometric, q: Geometric) -> Tensor:
    return -p.entropy() - (-q.probs).log1p() / p.probs - q.logits


@register_kl(Binomial, Binomial)
def _kl_binomial_binomial(p: Binomial, q: Binomial) -> Tensor:
    """``inf`` where ``p`` has more trials than ``q``.

    Raises:
        NotImplementedError: ``q`` has more trials than ``p`` somewhere (one host read).
    """
    if bool((p.total_count < q.total_count).any()):
        raise NotImplementedError(
            "KL between Binomials where q.total_count > p.total_count is not implemented"
        )
    kl = p.total_count * (p.probs * (p.logits - q.logits) + (-p.probs).log1p() - (-q.probs).log1p())
    return fn.where(p.total_count > q.total_count, float("inf"), kl)


__all__: list[str] = []
