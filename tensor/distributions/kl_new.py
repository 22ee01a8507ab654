"""PyTorch's closed-form KL divergences within the newer families: ContinuousBernoulli,
Pareto, LogisticNormal and the (low-rank) multivariate normal pairs (registered on import,
by ``dtrain._tensor.distributions``)."""

from __future__ import annotations

import numpy as np

from dtrain._tensor import functions as fn
from dtrain._tensor.distributions.continuous_bernoulli import ContinuousBernoulli
from dtrain._tensor.distributions.distribution import Distribution
from dtrain._tensor.distributions.kl import _kl_normal_normal, register_kl
from dtrain._tensor.distributions.logistic_normal import LogisticNormal
from dtrain._tensor.distributions.lowrank_multivariate_normal import (
    LowRankMultivariateNormal,
    batch_trace_xxt,
    lowrank_logdet,
    lowrank_mahalanobis,
)
from dtrain._tensor.distributions.multivariate_normal import (
    MultivariateNormal,
    batch_mahalanobis,
)
from dtrain._tensor.distributions.pareto import Pareto
from dtrain._tensor.ops.linalg import solve_triangular
from dtrain._tensor.tensor import Tensor

_INF = float("inf")


@register_kl(ContinuousBernoulli, ContinuousBernoulli)
def _kl_continuous_bernoulli_continuous_bernoulli(
    p: ContinuousBernoulli, q: ContinuousBernoulli
) -> Tensor:
    t1 = p.mean * (p.logits - q.logits)
    t2 = p._cont_bern_log_norm() + (-p.probs).log1p()
    t3 = -q._cont_bern_log_norm() - (-q.probs).log1p()
    return t1 + t2 + t3


@register_kl(Pareto, Pareto)
def _kl_pareto_pareto(p: Pareto, q: Pareto) -> Tensor:
    scale_ratio = p.scale / q.scale
    alpha_ratio = q.alpha / p.alpha
    result = q.alpha * scale_ratio.log() - alpha_ratio.log() + alpha_ratio - 1
    return fn.where(p.scale < q.scale, _INF, result)  # q has no mass on [p.scale, q.scale)


@register_kl(LogisticNormal, LogisticNormal)
def _kl_logistic_normal_logistic_normal(p: LogisticNormal, q: LogisticNormal) -> Tensor:
    # Both sides push their base Normal through the same stick-breaking bijection, and KL is
    # invariant under a shared bijection (PyTorch reaches this through TransformedDistribution).
    if p.event_shape != q.event_shape:
        raise NotImplementedError(
            "KL-divergence between LogisticNormals with different event shapes cannot be "
            f"computed: {tuple(p.event_shape)} and {tuple(q.event_shape)}"
        )
    return _kl_normal_normal(p.base_dist, q.base_dist).sum(-1)


def _check_event_shapes(p: Distribution, q: Distribution) -> None:
    if p.event_shape != q.event_shape:
        raise ValueError(
            f"KL-divergence between {type(p).__name__} and {type(q).__name__} with different "
            f"event shapes cannot be computed: {tuple(p.event_shape)} and "
            f"{tuple(q.event_shape)}"
        )


def _woodbury_a(q: LowRankMultivariateNormal) -> Tensor:
    """``A = C^-1 W^T D^-1`` of ``q``: ``cov_q^-1 = D^-1 - A^T A``."""
    wt_dinv = q._unbroadcasted_cov_factor.mT / q._unbroadcasted_cov_diag.unsqueeze(-2)
    return solve_triangular(q._capacitance_tril, wt_dinv, upper=False)


def _q_terms(q: LowRankMultivariateNormal, p_loc: Tensor) -> tuple[Tensor, Tensor]:
    w, d, c = q._unbroadcasted_cov_factor, q._unbroadcasted_cov_diag, q._capacitance_tril
    return lowrank_logdet(w, d, c), lowrank_mahalanobis(w, d, q.loc - p_loc, c)


@register_kl(LowRankMultivariateNormal, LowRankMultivariateNormal)
def _kl_lowrank_lowrank(p: LowRankMultivariateNormal, q: LowRankMultivariateNormal) -> Tensor:
    _check_event_shapes(p, q)
    q_logdet, term3 = _q_terms(q, p.loc)
    p_w, p_d = p._unbroadcasted_cov_factor, p._unbroadcasted_cov_diag
    term1 = q_logdet - lowrank_logdet(p_w, p_d, p._capacitance_tril)
    a = _woodbury_a(q)
    q_d = q._unbroadcasted_cov_diag
    term21 = (p_d / q_d).sum(-1)
    term22 = batch_trace_xxt(p_w * q_d.rsqrt().unsqueeze(-1))
    term23 = batch_trace_xxt(a * p_d.sqrt().unsqueeze(-2))
    term24 = batch_trace_xxt(a @ p_w)
    return 0.5 * (term1 + term21 + term22 - term23 - term24 + term3 - p.event_shape[0])


@register_kl(MultivariateNormal, LowRankMultivariateNormal)
def _kl_mvn_lowrank(p: MultivariateNormal, q: LowRankMultivariateNormal) -> Tensor:
    _check_event_shapes(p, q)
    q_logdet, term3 = _q_terms(q, p.loc)
    p_tril = p._unbroadcasted_scale_tril
    term1 = q_logdet - 2 * p_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    a = _woodbury_a(q)
    term21 = batch_trace_xxt(p_tril * q._unbroadcasted_cov_diag.rsqrt().unsqueeze(-1))
    term22 = batch_trace_xxt(a @ p_tril)
    return 0.5 * (term1 + term21 - term22 + term3 - p.event_shape[0])


@register_kl(LowRankMultivariateNormal, MultivariateNormal)
def _kl_lowrank_mvn(p: LowRankMultivariateNormal, q: MultivariateNormal) -> Tensor:
    _check_event_shapes(p, q)
    q_tril = q._unbroadcasted_scale_tril
    p_w, p_d = p._unbroadcasted_cov_factor, p._unbroadcasted_cov_diag
    term1 = 2 * q_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1) - lowrank_logdet(
        p_w, p_d, p._capacitance_tril
    )
    term3 = batch_mahalanobis(q_tril, q.loc - p.loc)
    n, m = p.event_shape[0], p_w.shape[-1]
    batch = tuple(
        np.broadcast_shapes(tuple(q_tril.shape[:-2]), tuple(p_w.shape[:-2]), tuple(p_d.shape[:-1]))
    )
    q_tril = q_tril.expand(batch + (n, n))
    term21 = batch_trace_xxt(solve_triangular(q_tril, p_w.expand(batch + (n, m)), upper=False))
    p_d_matrix = fn.diag_embed(p_d.sqrt()).expand(batch + (n, n))
    term22 = batch_trace_xxt(solve_triangular(q_tril, p_d_matrix, upper=False))
    return 0.5 * (term1 + term21 + term22 + term3 - n)


__all__: list[str] = []
