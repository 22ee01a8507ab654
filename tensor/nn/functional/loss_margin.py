"""Margin and embedding losses: margin_ranking_loss, hinge_embedding_loss,
cosine_embedding_loss, triplet_margin_loss, triplet_margin_with_distance_loss,
soft_margin_loss, multilabel_soft_margin_loss, multilabel_margin_loss, multi_margin_loss.

Each is composed of differentiable ops (no fused kernel: they are a few elementwise passes
and a reduction, as PyTorch's own composite implementations); masks built from integer or
±1 targets are constants. Arguments, checks and the legacy ``size_average`` / ``reduce``
keywords follow PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable

from dtrain._tensor.nn.functional.distance import pairwise_distance
from dtrain._tensor.nn.functional.loss import _check_reduction, _reduce, legacy_reduction
from dtrain._tensor.ops.activation import logsigmoid, softplus
from dtrain._tensor.ops.select import minimum, where
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module
from dtrain.runtime.value_checks import may_check_values

_COSINE_EPSILON = 1e-12  # PyTorch's, added to each squared norm


def _reduction(size_average: bool | None, reduce: bool | None, reduction: str) -> str:
    if size_average is not None or reduce is not None:
        return legacy_reduction(size_average, reduce, stacklevel=4)
    _check_reduction(reduction)
    return reduction


def margin_ranking_loss(
    input1: Tensor,
    input2: Tensor,
    target: Tensor,
    margin: float = 0,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    """``max(0, -y (x1 - x2) + margin)``: ``y = 1`` ranks ``x1`` first, ``y = -1`` ``x2``.

    Raises:
        RuntimeError: inputs and target with different numbers of dimensions.
    """
    reduction = _reduction(size_average, reduce, reduction)
    if not input1.ndim == input2.ndim == target.ndim:
        raise RuntimeError(
            "margin_ranking_loss : All input tensors should have same dimension but got sizes: "
            f"input1: {tuple(input1.shape)}, input2: {tuple(input2.shape)}, "
            f"target: {tuple(target.shape)} "
        )
    return _reduce((-target * (input1 - input2) + margin).clamp_min(0), reduction)


def hinge_embedding_loss(
    input: Tensor,
    target: Tensor,
    margin: float = 1.0,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    """``x`` where ``y = 1``, ``max(0, margin - x)`` where ``y = -1`` (as PyTorch: a target
    that is neither gets both terms)."""
    reduction = _reduction(size_average, reduce, reduction)
    margin_term = where(target != 1, (margin - input).clamp_min(0), 0.0)
    self_term = where(target != -1, input, 0.0)
    return _reduce(margin_term + self_term, reduction)


def cosine_embedding_loss(
    input1: Tensor,
    input2: Tensor,
    target: Tensor,
    margin: float = 0,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    """``1 - cos(x1, x2)`` where ``y = 1``, ``max(0, cos(x1, x2) - margin)`` where ``y = -1``;
    rows of ``(N, D)`` inputs with an ``(N,)`` target, or ``(D,)`` inputs with a 0-d one.

    Raises:
        RuntimeError: shapes that do not fit, as PyTorch.
    """
    reduction = _reduction(size_average, reduce, reduction)
    if target.ndim > 1:
        raise RuntimeError("0D or 1D target tensor expected, multi-target not supported")
    if input1.shape != input2.shape:
        raise RuntimeError(
            f"cosine_embedding_loss: Input1 {tuple(input1.shape)} and Input2 "
            f"{tuple(input2.shape)} must have the same size"
        )
    # A target of one element broadcasts over the rows, as in PyTorch.
    if target.ndim == 1 and (input1.ndim != 2 or target.shape[0] not in (1, input1.shape[0])):
        raise RuntimeError(
            f"cosine_embedding_loss: 2D input tensors of {target.shape[0]} rows (or a target of "
            f"one element) expected for a 1D target, got input shape {tuple(input1.shape)}"
        )
    if target.ndim == 0 and input1.ndim != 1:
        raise RuntimeError(
            "cosine_embedding_loss: 1D input tensors expected for a 0D target, got input shape "
            f"{tuple(input1.shape)}"
        )
    dim = target.ndim
    product = (input1 * input2).sum(dim)
    squares1 = (input1 * input1).sum(dim) + _COSINE_EPSILON
    squares2 = (input2 * input2).sum(dim) + _COSINE_EPSILON
    cos = product / (squares1 * squares2).sqrt()
    zero = cos * 0
    loss = where(target == 1, 1 - cos, zero) + where(
        target == -1, (cos - margin).clamp_min(0), zero
    )
    return _reduce(loss, reduction)


def _check_triplet_dims(anchor: Tensor, positive: Tensor, negative: Tensor) -> None:
    if not anchor.ndim == positive.ndim == negative.ndim:
        raise RuntimeError(
            "The anchor, positive, and negative tensors are expected to have the same number "
            f"of dimensions, but got: anchor {anchor.ndim}D, positive {positive.ndim}D, and "
            f"negative {negative.ndim}D inputs"
        )


def triplet_margin_loss(
    anchor: Tensor,
    positive: Tensor,
    negative: Tensor,
    margin: float = 1.0,
    p: float = 2,
    eps: float = 1e-6,
    swap: bool = False,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    """``max(0, margin + d(a, p) - d(a, n))`` with ``d`` the ``p``-norm pairwise distance;
    ``swap`` uses ``min(d(a, n), d(p, n))`` for the negative distance.

    Raises:
        ValueError: ``margin <= 0``, as PyTorch.
    """
    reduction = _reduction(size_average, reduce, reduction)
    if margin <= 0:
        raise ValueError(f"margin must be greater than 0, got {margin}")
    _check_triplet_dims(anchor, positive, negative)
    d_pos = pairwise_distance(anchor, positive, p, eps)
    d_neg = pairwise_distance(anchor, negative, p, eps)
    if swap:
        d_neg = minimum(d_neg, pairwise_distance(positive, negative, p, eps))
    return _reduce((margin + d_pos - d_neg).clamp_min(0), reduction)


def triplet_margin_with_distance_loss(
    anchor: Tensor,
    positive: Tensor,
    negative: Tensor,
    *,
    distance_function: Callable[[Tensor, Tensor], Tensor] | None = None,
    margin: float = 1.0,
    swap: bool = False,
    reduction: str = "mean",
) -> Tensor:
    """``triplet_margin_loss`` with any distance (default: ``pairwise_distance``).

    Raises:
        ValueError: ``margin <= 0`` or an unknown reduction.
    """
    _check_reduction(reduction)
    if margin <= 0:
        raise ValueError(f"margin must be greater than 0, got {margin}")
    _check_triplet_dims(anchor, positive, negative)
    distance = distance_function if distance_function is not None else pairwise_distance
    d_pos = distance(anchor, positive)
    d_neg = distance(anchor, negative)
    if swap:
        d_neg = minimum(d_neg, distance(positive, negative))
    return _reduce((margin + d_pos - d_neg).clamp_min(0), reduction)


def soft_margin_loss(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Two-class logistic loss ``log(1 + exp(-y x))`` (computed as a stable softplus)."""
    reduction = _reduction(size_average, reduce, reduction)
    return _reduce(softplus(-(input * target)), reduction)


def multilabel_soft_margin_loss(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Per-class logistic loss of ``(N, C)`` logits against 0/1 targets, averaged over the
    classes (one loss per sample before the reduction); ``weight`` scales each class."""
    reduction = _reduction(size_average, reduce, reduction)
    loss = -(target * logsigmoid(input) + (1 - target) * logsigmoid(-input))
    if weight is not None:
        loss = loss * weight
    classes = input.shape[-1] if input.ndim else 1
    return _reduce(loss.sum(input.ndim - 1) / classes if input.ndim else loss, reduction)


def _class_rows(name: str, input: Tensor, target: Tensor, target_shape: tuple) -> None:
    if input.ndim > 2 or (input.ndim and input.shape[-1] == 0):
        raise RuntimeError(
            f"{name}: Expected non-empty vector or matrix with optional 0-dim batch size, but "
            f"got: {tuple(input.shape)}"
        )
    if target.dtype.kind not in "iu":
        raise TypeError(f"{name}: target must hold class indices (integers), got {target.dtype}")
    if tuple(target.shape) != target_shape:
        raise RuntimeError(
            f"{name}: inconsistent target size: {tuple(target.shape)} for input of size: "
            f"{tuple(input.shape)}; expected {target_shape}"
        )


def multilabel_margin_loss(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Multi-label hinge loss: ``Σ_j Σ_i max(0, 1 - (x[y_j] - x[i])) / C`` over the listed
    targets ``y_j`` (each row's class indices, ended by the first -1) and the classes ``i``
    that are not targets.

    Raises:
        RuntimeError: a target of the wrong shape or out of ``[-1, C)``.
    """
    reduction = _reduction(size_average, reduce, reduction)
    _class_rows("multilabel_margin_loss", input, target, tuple(input.shape))
    unbatched = input.ndim < 2
    x = input.reshape(1, -1) if unbatched else input
    t = target._array.reshape(x.shape)
    classes = x.shape[1]
    if may_check_values(t) and t.size and bool(((t < -1) | (t >= classes)).any()):
        raise RuntimeError(
            f"multilabel_margin_loss: target values must be in [-1, {classes}), got "
            f"{t.min()}..{t.max()}"
        )
    xp = get_array_module(t)
    # (int8, not bool: cupy's cumprod of bools is not to be relied on)
    listed = xp.cumprod((t != -1).astype(xp.int8), axis=1).astype(bool)  # before the first -1
    safe = xp.where(listed, t, 0)
    hits = (safe[:, :, None] == xp.arange(classes)) & listed[:, :, None]
    others = ~hits.any(axis=1)  # (N, C): not a target
    pairs = (listed[:, :, None] & others[:, None, :]).astype(x.dtype)
    chosen = x.gather(1, wrap(safe.astype(xp.int64)))
    hinge = (1 - chosen.unsqueeze(2) + x.unsqueeze(1)).clamp_min(0) * wrap(pairs)
    loss = hinge.sum((1, 2)) / classes
    return _reduce(loss.reshape(()) if unbatched else loss, reduction)


def multi_margin_loss(
    input: Tensor,
    target: Tensor,
    p: int = 1,
    margin: float = 1.0,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Multi-class hinge loss: ``Σ_{i≠y} max(0, margin - x[y] + x[i])^p / C`` per sample
    (times ``weight[y]``), for ``(N, C)`` input and ``(N,)`` class indices.

    Raises:
        ValueError: ``p`` other than 1 or 2, or a weight that is not 1-D.
        RuntimeError: a target of the wrong shape or out of range.
    """
    reduction = _reduction(size_average, reduce, reduction)
    if p not in (1, 2):
        raise ValueError(f"only p == 1 and p == 2 supported, got p={p}")
    if weight is not None and weight.ndim != 1:
        raise ValueError(f"weight must be one-dimensional, got shape {tuple(weight.shape)}")
    unbatched = input.ndim < 2
    expected = () if unbatched else (input.shape[0],)
    if target.ndim <= 1 and target.numel() == (1 if unbatched else input.shape[0]):
        target = target.reshape(expected)  # PyTorch takes any 0-d or 1-D target of that size
    _class_rows("multi_margin_loss", input, target, expected)
    x = input.reshape(1, -1) if unbatched else input
    classes = x.shape[1]
    t = target._array.reshape(-1)
    if may_check_values(t) and t.size and bool(((t < 0) | (t >= classes)).any()):
        raise RuntimeError(
            f"multi_margin_loss: target out of range [0, {classes}): got {t.min()}..{t.max()}"
        )
    xp = get_array_module(t)
    index = wrap(t.astype(xp.int64)[:, None])
    chosen = x.gather(1, index)
    others = (xp.arange(classes) != t[:, None]).astype(x.dtype)
    hinge = (margin - chosen + x).clamp_min(0)
    if p == 2:
        hinge = hinge * hinge
    if weight is not None:
        hinge = hinge * weight[index]
    loss = (hinge * wrap(others)).sum(1) / classes
    return _reduce(loss.reshape(()) if unbatched else loss, reduction)
