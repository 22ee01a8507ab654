"""Elementwise losses: binary_cross_entropy, smooth_l1_loss, huber_loss, kl_div.

Each is one op (forward and an analytic backward for input and target) followed by the
reduction. As dtrain's ``mse_loss``, input and target must have the same shape.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from dtrain._tensor.amp.cast import autocast_inputs
from dtrain._tensor.autograd.op import Op
from dtrain._tensor.nn.functional.loss import (
    _check_reduction,
    _check_same_shape,
    _reduce,
    legacy_reduction,
)
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.backend import get_array_module
from dtrain.runtime.value_checks import may_check_values

_LOG_FLOOR = -100.0  # PyTorch clamps BCE's logs here, so p = 0 or 1 gives a finite loss
_BCE_EPSILON = 1e-12  # and the gradient's denominator p (1 - p) at this


class BinaryCrossEntropy(Op):
    reads_inputs = True

    def forward(self, p: Any, t: Any, w: Any) -> Any:
        xp = get_array_module(p)
        with np.errstate(divide="ignore"):
            self.log_p = xp.maximum(xp.log(p), _LOG_FLOOR)
            self.log_q = xp.maximum(xp.log1p(-p), _LOG_FLOOR)
        self.p, self.t, self.w = p, t, w
        loss = -(t * self.log_p + (1 - t) * self.log_q)
        return loss if w is None else loss * w

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        p, t = self.p, self.t
        if self.w is not None:
            grad = grad * self.w
        d_p = grad * (p - t) / xp.maximum((1 - p) * p, _BCE_EPSILON)
        d_t = grad * (self.log_q - self.log_p) if self.needs_input_grad[1] else None
        return d_p.astype(p.dtype, copy=False), d_t, None


def binary_cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Binary cross-entropy of probabilities ``input`` against ``target``:
    ``-w (t log p + (1 - t) log(1 - p))``, each log clamped at -100 (as PyTorch).
    ``weight`` broadcasts to the input's shape.

    Raises:
        ValueError: shapes that differ, or a weight that does not broadcast.
        RuntimeError: an input outside [0, 1] (checked where values may be read).
    """
    if size_average is not None or reduce is not None:
        reduction = legacy_reduction(size_average, reduce)
    input, target, weight = autocast_inputs("float32", input, target, weight)
    _check_reduction(reduction)
    if input.shape != target.shape:
        raise ValueError(
            f"binary_cross_entropy: target size {tuple(target.shape)} differs from input size "
            f"{tuple(input.shape)}; they must match"
        )
    p = input._array
    if may_check_values(p) and p.size and bool(((p < 0) | (p > 1)).any()):
        raise RuntimeError(
            "binary_cross_entropy: all elements of input should be between 0 and 1; apply "
            "sigmoid first, or use binary_cross_entropy_with_logits on the logits"
        )
    w = None
    if weight is not None:
        try:
            w = get_array_module(p).broadcast_to(weight._array, p.shape).astype(p.dtype)
        except ValueError:
            raise ValueError(
                f"binary_cross_entropy: weight of shape {tuple(weight.shape)} does not "
                f"broadcast to the input's shape {tuple(input.shape)}"
            ) from None
    if target._array.dtype != p.dtype:
        target = target.to(input.dtype)
    return _reduce(BinaryCrossEntropy.apply(input, target, w), reduction)


class SmoothL1(Op):
    """``scale * (0.5 d² / beta where |d| < beta, else |d| - beta / 2)`` for ``d = x - t``;
    ``beta = 0`` is ``|d|``."""

    def forward(self, x: Any, t: Any, beta: float, scale: float) -> Any:
        xp = get_array_module(x)
        d = x - t
        magnitude = xp.abs(d)
        self.d, self.small, self.beta, self.scale = d, magnitude < beta, beta, scale
        quadratic = d * d * (0.5 / beta) if beta else magnitude
        loss = xp.where(self.small, quadratic, magnitude - 0.5 * beta)
        return loss * scale if scale != 1 else loss

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        d = self.d
        slope = xp.where(self.small, d / self.beta if self.beta else d, xp.sign(d))
        g = grad * slope
        if self.scale != 1:
            g = g * self.scale
        g = g.astype(d.dtype, copy=False)
        return g, (-g if self.needs_input_grad[1] else None)


def _pointwise_inputs(name: str, input: Tensor, target: Tensor, reduction: str) -> tuple:
    input, target = autocast_inputs("float32", input, target)
    _check_reduction(reduction)
    _check_same_shape(name, input, target)
    return input, target


def smooth_l1_loss(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    beta: float = 1.0,
) -> Tensor:
    """``0.5 d² / beta`` where ``|d| < beta``, else ``|d| - 0.5 beta``; ``beta=0`` is L1."""
    if size_average is not None or reduce is not None:
        reduction = legacy_reduction(size_average, reduce)
    if beta < 0:
        raise ValueError(f"smooth_l1_loss: beta={beta}; it must be >= 0")
    input, target = _pointwise_inputs("smooth_l1_loss", input, target, reduction)
    return _reduce(SmoothL1.apply(input, target, beta=float(beta), scale=1.0), reduction)


def huber_loss(
    input: Tensor, target: Tensor, reduction: str = "mean", delta: float = 1.0
) -> Tensor:
    """``0.5 d²`` where ``|d| < delta``, else ``delta (|d| - 0.5 delta)``: ``delta`` times
    ``smooth_l1_loss(beta=delta)``."""
    if delta <= 0:
        raise ValueError(f"huber_loss: delta={delta}; it must be > 0")
    input, target = _pointwise_inputs("huber_loss", input, target, reduction)
    delta = float(delta)
    return _reduce(SmoothL1.apply(input, target, beta=delta, scale=delta), reduction)


class KLDiv(Op):
    """Pointwise ``t (log t - x)`` (``xlogy(t, t) - t x``, 0 where ``t = 0``), or with
    ``log_target`` ``e^t (t - x)``."""

    reads_inputs = True

    def forward(self, x: Any, t: Any, log_target: bool) -> Any:
        xp = get_array_module(x)
        self.x, self.t, self.log_target = x, t, log_target
        if log_target:
            self.weight = xp.exp(t)
            return self.weight * (t - x)
        self.weight = t
        with np.errstate(divide="ignore", invalid="ignore"):
            self.log_t = xp.log(t)
            xlogy = xp.where(t == 0, 0, t * self.log_t)
        return (xlogy - t * x).astype(x.dtype, copy=False)

    def backward(self, grad: Any) -> tuple:
        d_x = -grad * self.weight
        d_t = None
        if self.needs_input_grad[1]:
            if self.log_target:
                d_t = grad * self.weight * (self.t - self.x + 1)
            else:
                d_t = grad * (self.log_t + 1 - self.x)
        return d_x, d_t


def kl_div(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    log_target: bool = False,
) -> Tensor:
    """Kullback-Leibler divergence of log-probabilities ``input`` from ``target``
    (probabilities, or log-probabilities with ``log_target=True``). ``reduction`` is also
    ``"batchmean"``: the sum over the batch size (the true KL divergence); ``"mean"``
    divides by every element, with PyTorch's warning."""
    if size_average is not None or reduce is not None:
        reduction = legacy_reduction(size_average, reduce)
    if reduction == "mean":
        warnings.warn(
            "reduction: 'mean' divides the total loss by both the batch size and the support "
            "size.'batchmean' divides only by the batch size, and aligns with the KL div math "
            "definition.'mean' will be changed to behave the same as 'batchmean' in the next "
            "major release.",
            stacklevel=2,
        )
    if reduction != "batchmean":
        _check_reduction(reduction)
    input, target = autocast_inputs("float32", input, target)
    _check_same_shape("kl_div", input, target)
    loss = KLDiv.apply(input, target, log_target=bool(log_target))
    if reduction == "batchmean":
        return loss.sum() / (input.shape[0] if input.ndim else 1)
    return _reduce(loss, reduction)
