"""Losses: cross_entropy (one fused op), nll_loss, mse_loss, l1_loss,
binary_cross_entropy_with_logits."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from dtrain._tensor.amp.cast import autocast_inputs
from dtrain._tensor.autograd.op import Op
from dtrain._tensor.ops.activation import softplus
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.backend import get_array_module, is_cuda_array
from dtrain.runtime.kernels import cross_entropy as _ce_kernels
from dtrain.runtime.value_checks import may_check_values

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def legacy_reduction(size_average: bool | None, reduce: bool | None, stacklevel: int = 3) -> str:
    """PyTorch's mapping of the deprecated ``size_average`` / ``reduce`` keywords to a
    ``reduction`` (either left None counts as True), with PyTorch's warning."""
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    reduction = ("mean" if size_average else "sum") if reduce else "none"
    warnings.warn(
        "size_average and reduce args will be deprecated, please use "
        f"reduction='{reduction}' instead.",
        stacklevel=stacklevel,
    )
    return reduction


def _check_class_weight(name: str, weight: Tensor | None, classes: int) -> None:
    if weight is not None and weight.shape != (classes,):
        raise ValueError(
            f"{name}: weight has shape {weight.shape}, expected one weight per class: ({classes},)"
        )


def _check_class_targets(name: str, target: Any, classes: int, ignore_index: int) -> None:
    """Class-index targets must be integers in [0, classes) (or ``ignore_index``)."""
    if target.dtype.kind not in "iu":
        raise TypeError(f"{name}: class-index targets must be integers, got dtype {target.dtype}")
    if not may_check_values(target):  # on CUDA an out-of-range target gives a NaN loss
        return
    bad = target[(target != ignore_index) & ((target < 0) | (target >= classes))]
    if bad.size:
        raise IndexError(
            f"{name}: target {int(bad.reshape(-1)[0])} is out of range for {classes} classes "
            f"(valid: 0..{classes - 1}, or ignore_index={ignore_index})"
        )


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    return loss.sum() if reduction == "sum" else loss


class CrossEntropy(Op):
    """log_softmax and the negative log-likelihood fused; the class dim is the last one.

    On cupy logits with class-index targets, no class weights and no label smoothing, the
    fused CUDA kernels (``dtrain.runtime.kernels.cross_entropy``) run instead: forward keeps
    the logits and one log-sum-exp per row, not the softmax (so backward checks that the
    logits were not changed in place since).
    """

    reads_inputs = True
    fused = False

    def forward(
        self,
        logits: Any,
        target: Any,
        weight: Any,
        *,
        ignore_index: int,
        smoothing: float,
        reduction: str,
        probabilities: bool,
    ) -> Any:
        if (
            is_cuda_array(logits)
            and weight is None
            and not smoothing
            and not probabilities
            and logits.size
            and _ce_kernels.supported(logits.reshape(-1, logits.shape[-1]))
        ):
            return self._fused_forward(logits, target, ignore_index, reduction)
        xp = get_array_module(logits)
        classes = logits.shape[-1]
        shifted = logits - logits.max(axis=-1, keepdims=True)
        exp = xp.exp(shifted)
        total = exp.sum(axis=-1, keepdims=True)
        log_probs = shifted - xp.log(total)
        self.probs = exp / total
        dtype = logits.dtype
        w = xp.ones(classes, dtype=dtype) if weight is None else weight.astype(dtype, copy=False)
        if probabilities:
            # Soft targets: q_c = w_c t_c, smoothed toward the uniform distribution.
            t = target.astype(dtype, copy=False)
            if smoothing:
                t = t * (1 - smoothing) + smoothing / classes
            q = t * w
            denominator = dtype.type(max(q.size // classes, 1))  # the number of samples
        else:
            keep = target != ignore_index
            safe = xp.where(keep, target, 0)  # the caller checked the range
            picked = xp.zeros_like(logits)
            xp.put_along_axis(picked, safe[..., None], 1, axis=-1)
            q = picked * ((1 - smoothing) * w)
            if smoothing:
                q = q + (smoothing / classes) * w
            q *= keep[..., None]
            denominator = (w[safe] * keep).sum()
        self.q = q
        loss = -(q * log_probs).sum(axis=-1)
        self.reduction = reduction
        if reduction == "none":
            return loss
        if reduction == "sum":
            return loss.sum()
        self.denominator = denominator
        with np.errstate(divide="ignore", invalid="ignore"):  # every target ignored: NaN
            return loss.sum() / denominator

    def _fused_forward(self, logits: Any, target: Any, ignore_index: int, reduction: str) -> Any:
        self.fused, self.reduction, self.ignore_index = True, reduction, ignore_index
        self.shape = logits.shape
        self.logits = logits.reshape(-1, logits.shape[-1])
        self.target = target.reshape(-1)
        if reduction == "mean":
            # Counted on the device: nothing here waits for the GPU (CUDA-graph capturable);
            # the mean comes from the loss's own launch.
            _, self.lse, mean, self.denominator = _ce_kernels.cross_entropy_forward(
                self.logits, self.target, ignore_index, mean=True
            )
            return mean
        loss, self.lse = _ce_kernels.cross_entropy_forward(self.logits, self.target, ignore_index)
        if reduction == "none":
            return loss.reshape(logits.shape[:-1])
        return loss.sum()

    def backward(self, grad: Any) -> tuple:
        if self.fused:
            divisor = self.denominator if self.reduction == "mean" else None
            scale = grad.reshape(-1)  # one per row ("none"), or one for every row
            local = _ce_kernels.cross_entropy_backward(
                self.logits, self.target, self.lse, scale, self.ignore_index, divisor
            )
            return local.reshape(self.shape), None, None
        # d/dz of -sum_c q_c log softmax(z)_c  =  (sum_c q_c) softmax(z) - q
        q = self.q
        local = self.probs * q.sum(axis=-1, keepdims=True) - q
        if self.reduction == "none":
            scaled = local * grad[..., None]
        elif self.reduction == "sum":
            scaled = local * grad
        else:
            # Nothing counted (every target ignored): the loss is NaN but, as in PyTorch,
            # the gradient is 0, not 0 * inf. Decided on the device: no host read.
            xp = get_array_module(local)
            with np.errstate(divide="ignore", invalid="ignore"):
                factor = xp.where(self.denominator == 0, 0, grad / self.denominator)
            scaled = local * factor.astype(local.dtype, copy=False)
        return scaled, None, None


def cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    """Softmax cross-entropy of logits ``input`` (N, C) or (N, C, d1, ...) against class
    indices (N,) / (N, d1, ...) or class probabilities shaped like ``input``.
    ``size_average`` / ``reduce`` are PyTorch's deprecated forms of ``reduction``."""
    if size_average is not None or reduce is not None:
        reduction = legacy_reduction(size_average, reduce)
    input, target, weight = autocast_inputs("float32", input, target, weight)
    _check_reduction(reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    logits = input
    probabilities = target._array.dtype.kind == "f"
    if input.ndim > 2:  # (N, C, d...) → class dim last
        logits = input.permute(0, *range(2, input.ndim), 1)
        if probabilities:
            target = target.permute(0, *range(2, target.ndim), 1)
    elif input.ndim == 1:
        logits = input.unsqueeze(0)
        target = target.reshape(1, -1) if probabilities else target.reshape(1)
    expected = logits.shape if probabilities else logits.shape[:-1]
    if target.shape != expected:
        raise ValueError(
            f"cross_entropy: target of shape {target.shape} does not fit input of shape "
            f"{input.shape}; expected class indices of shape {expected} or probabilities "
            f"of shape {logits.shape}"
        )
    if not probabilities:
        _check_class_targets("cross_entropy", target._array, logits.shape[-1], ignore_index)
    _check_class_weight("cross_entropy", weight, logits.shape[-1])
    w = None if weight is None else weight._array
    loss = CrossEntropy.apply(
        logits,
        target._array,
        w,
        ignore_index=ignore_index,
        smoothing=label_smoothing,
        reduction=reduction,
        probabilities=probabilities,
    )
    if reduction == "none" and input.ndim == 1:
        return loss.reshape(())
    return loss


class NllLoss(Op):
    def forward(
        self, log_probs: Any, target: Any, weight: Any, *, ignore_index: int, reduction: str
    ) -> Any:
        xp = get_array_module(log_probs)
        keep = target != ignore_index
        safe = xp.where(keep, target, 0)
        w = xp.ones(log_probs.shape[-1], dtype=log_probs.dtype) if weight is None else weight
        picked_w = w[safe] * keep
        self.safe, self.picked_w, self.shape, self.reduction = (
            safe,
            picked_w,
            log_probs.shape,
            reduction,
        )
        loss = -xp.take_along_axis(log_probs, safe[..., None], axis=-1)[..., 0] * picked_w
        self.denominator = picked_w.sum()
        if reduction == "none":
            return loss.astype(log_probs.dtype, copy=False)
        if reduction == "sum":
            return loss.sum()
        with np.errstate(invalid="ignore"):  # every target ignored: NaN, as PyTorch's
            return loss.sum() / self.denominator

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        scale = -self.picked_w
        if self.reduction == "mean":  # every target ignored: a 0 denominator, 0 gradients
            denominator = xp.where(self.denominator == 0, 1, self.denominator)
            scale = scale * (grad / denominator)
        else:
            scale = scale * grad
        full = xp.zeros(self.shape, dtype=grad.dtype)
        xp.put_along_axis(full, self.safe[..., None], scale[..., None].astype(grad.dtype), axis=-1)
        return full, None, None


def nll_loss(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Negative log-likelihood of log-probabilities ``input`` (N, C, ...) at ``target``."""
    if size_average is not None or reduce is not None:
        reduction = legacy_reduction(size_average, reduce)
    input, weight = autocast_inputs("float32", input, weight)
    _check_reduction(reduction)
    log_probs = input.permute(0, *range(2, input.ndim), 1) if input.ndim > 2 else input
    if log_probs.shape[:-1] != target.shape:
        raise ValueError(
            f"nll_loss: target of shape {target.shape} does not fit input of shape {input.shape}; "
            f"expected class indices of shape {log_probs.shape[:-1]}"
        )
    _check_class_targets("nll_loss", target._array, log_probs.shape[-1], ignore_index)
    _check_class_weight("nll_loss", weight, log_probs.shape[-1])
    w = None if weight is None else weight._array
    return NllLoss.apply(
        log_probs, target._array, w, ignore_index=ignore_index, reduction=reduction
    )


def _check_same_shape(name: str, input: Tensor, target: Tensor) -> None:
    if input.shape != target.shape:
        raise ValueError(
            f"{name}: input shape {input.shape} and target shape {target.shape} differ; "
            "they must match"
        )


def mse_loss(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Mean (or sum) of squared differences."""
    if size_average is not None or reduce is not None:
        reduction = legacy_reduction(size_average, reduce)
    input, target = autocast_inputs("float32", input, target)
    _check_reduction(reduction)
    _check_same_shape("mse_loss", input, target)
    diff = input - target
    return _reduce(diff * diff, reduction)


def l1_loss(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Mean (or sum) of absolute differences."""
    if size_average is not None or reduce is not None:
        reduction = legacy_reduction(size_average, reduce)
    input, target = autocast_inputs("float32", input, target)
    _check_reduction(reduction)
    _check_same_shape("l1_loss", input, target)
    return _reduce((input - target).abs(), reduction)


def binary_cross_entropy_with_logits(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    pos_weight: Tensor | None = None,
) -> Tensor:
    """Sigmoid + binary cross-entropy in the stable form
    ``(1 - t) x + (1 + (pw - 1) t) softplus(-x)``."""
    if size_average is not None or reduce is not None:
        reduction = legacy_reduction(size_average, reduce)
    input, target, weight, pos_weight = autocast_inputs(
        "float32", input, target, weight, pos_weight
    )
    _check_reduction(reduction)
    _check_same_shape("binary_cross_entropy_with_logits", input, target)
    log_weight = 1 if pos_weight is None else (pos_weight - 1) * target + 1
    loss = (1 - target) * input + log_weight * softplus(-input)
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)
