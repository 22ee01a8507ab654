"""Likelihood losses: poisson_nll_loss and gaussian_nll_loss, composed of differentiable
ops with PyTorch's arguments, clamps and checks."""

from __future__ import annotations

import math

from dtrain._tensor.nn.functional.loss import _reduce, legacy_reduction
from dtrain._tensor.ops.select import where
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module
from dtrain.runtime.value_checks import may_check_values


def poisson_nll_loss(
    input: Tensor,
    target: Tensor,
    log_input: bool = True,
    full: bool = False,
    size_average: bool | None = None,
    eps: float = 1e-8,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Negative log-likelihood of ``target`` under a Poisson distribution of rate ``input``
    (``exp(input)`` when ``log_input``): ``exp(x) - t x``, or ``x - t log(x + eps)``. With
    ``full``, adds Stirling's approximation ``t log t - t + log(2 pi t) / 2`` where ``t > 1``.
    """
    if size_average is not None or reduce is not None:
        reduction = legacy_reduction(size_average, reduce)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(reduction + " is not valid")
    loss = input.exp() - target * input if log_input else input - target * (input + eps).log()
    if full:
        # Differentiable in target, as PyTorch. The clamp keeps the log finite where t <= 1
        # (those terms are dropped), so the select has no NaN to hide.
        big = target.clamp_min(1)
        stirling = big * big.log() - big + (big * (2 * math.pi)).log() * 0.5
        loss = loss + where(target > 1, stirling, 0.0)
    return _reduce(loss, reduction)


def gaussian_nll_loss(
    input: Tensor,
    target: Tensor,
    var: Tensor | float,
    full: bool = False,
    eps: float = 1e-6,
    reduction: str = "mean",
) -> Tensor:
    """Negative log-likelihood of ``target`` under ``N(input, var)``:
    ``(log(max(var, eps)) + (input - target)^2 / max(var, eps)) / 2`` (+ ``log(2 pi) / 2``
    with ``full``). ``var`` has the input's shape, or one dimension fewer or of size 1 (one
    variance shared); as PyTorch, the clamp at ``eps`` passes the gradient through unchanged.

    Raises:
        ValueError: a negative variance, a variance of the wrong size, or a bad reduction.
    """
    if isinstance(var, (int, float)):
        if var < 0:
            raise ValueError("var has negative entry/entries")
        # As PyTorch's var * ones_like(input): not input * 0 + var, NaN where input is inf.
        xp = get_array_module(input._array)
        var = wrap(xp.full(input.shape, float(var), dtype=input._array.dtype))
    elif may_check_values(var._array) and var._array.size and bool((var._array < 0).any()):
        raise ValueError("var has negative entry/entries")
    if var.shape != input.shape:
        if tuple(input.shape[:-1]) == tuple(var.shape):
            var = var.unsqueeze(-1)  # one variance per row of the last dimension
        elif not (
            input.ndim == var.ndim and sum(v for i, v in zip(input.shape, var.shape) if i != v) == 1
        ):
            raise ValueError(
                f"var is of incorrect size: {tuple(var.shape)} for input {tuple(input.shape)}; "
                "give it the input's shape, or that shape without its last dimension or with "
                "one dimension of size 1"
            )
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(reduction + " is not valid")
    v = var._array
    xp = get_array_module(v)
    var = var + wrap(xp.maximum(v, eps) - v)  # the clamp, with an identity gradient
    loss = (var.log() + (input - target) ** 2 / var) * 0.5
    if full:
        loss = loss + 0.5 * math.log(2 * math.pi)
    return _reduce(loss, reduction)
