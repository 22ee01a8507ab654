"""``nn.utils``: gradient clipping, ``parameters_to_vector`` / ``vector_to_parameters``."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from dtrain._tensor.autograd.grad_mode import no_grad
from dtrain._tensor.ops.shape import cat
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module, is_cuda_array, on_device_of
from dtrain.runtime.dtypes import accumulation_dtype
from dtrain.runtime.kernels.multi_tensor import checked_lists


def _with_grads(parameters: Iterable[Tensor] | Tensor) -> list:
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p for p in parameters if p.grad is not None]


def clip_grad_norm_(
    parameters: Iterable[Tensor] | Tensor,
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> Tensor:
    """Scale all gradients together so that their joint norm is at most ``max_norm``;
    returns the norm before clipping, in the gradients' dtype.

    ``norm_type`` may be ``inf`` (the largest magnitude), ``-inf``, or 0 (as PyTorch, the
    number of gradients with a non-zero element). float16 gradients are summed in float32,
    so their squares do not overflow. A NaN norm scales every gradient by NaN, and an
    infinite one by 0, as in PyTorch. ``foreach`` is accepted for PyTorch compatibility
    and ignored (CUDA gradients always take the multi-tensor kernels).

    Raises:
        RuntimeError: ``error_if_nonfinite`` and the norm is NaN or infinite.
    """
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    tensors = [g for p in parameters if (g := p.grad) is not None]  # the gradients
    norm_type = float(norm_type)
    if not tensors:
        return wrap(get_array_module().zeros((), dtype="float32"))
    grads = [g._array for g in tensors]
    if norm_type == 2.0 and is_cuda_array(grads[0]):
        # checked and packed for the kernels in one walk (None: one of them cannot join)
        lists = checked_lists(grads)
        if lists is not None:
            return _clip_on_gpu(tensors, grads, lists, max_norm, error_if_nonfinite)
    xp = get_array_module(grads[0])
    # As PyTorch: the norm of the per-gradient norms (the same as one norm over every
    # element, except for orders 0 and below). Empty gradients add nothing.
    per_grad = [_vector_norm(xp, g, norm_type) for g in grads if g.size]
    total = float(_vector_norm(xp, xp.stack(per_grad), norm_type)) if per_grad else 0.0
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(_nonfinite_message(norm_type, total))
    coefficient = max_norm / (total + 1e-6)
    if not coefficient >= 1:  # as PyTorch's clamp(coefficient, max=1): NaN scales too
        with no_grad(), np.errstate(invalid="ignore"):  # inf * 0 is NaN, quietly
            for g in tensors:
                g.mul_(coefficient)
    return wrap(xp.asarray(total, dtype=grads[0].dtype))


def _vector_norm(xp: Any, values: Any, order: float) -> Any:
    """The ``order`` norm of all of ``values`` as a 0-d array (no host read), float16 in
    float32."""
    values = values.astype(accumulation_dtype(values.dtype), copy=False)
    if order == 2.0:  # a dot product: no temporaries (this runs every step)
        flat = values.reshape(-1)
        return xp.sqrt(xp.dot(flat, flat))
    magnitude = xp.abs(values)
    if order == math.inf:
        return magnitude.max()
    if order == -math.inf:
        return magnitude.min()
    if order == 0:
        return xp.asarray(xp.count_nonzero(magnitude), dtype=xp.float64)
    with np.errstate(divide="ignore", over="ignore"):  # 0 ** -p is inf; inf ** -1/p is 0
        return (magnitude**order).sum() ** (1.0 / order)


def _nonfinite_message(norm_type: float, total: float) -> str:
    return (
        f"The total norm of order {norm_type} for gradients from `parameters` is non-finite "
        f"({total}), so it cannot be clipped. To disable this error and scale the gradients "
        "by the non-finite norm anyway, set `error_if_nonfinite=False`"
    )


def _clip_on_gpu(
    tensors: list, grads: list, lists: list, max_norm: float, error_if_nonfinite: bool
) -> Tensor:
    """The L2 clip as two multi-tensor kernels over ``lists`` (``grads`` packed); nothing
    waits for the GPU unless ``error_if_nonfinite`` asks to look at the norm (as in
    PyTorch)."""
    from dtrain.runtime.kernels import grad_norm

    xp = get_array_module(grads[0])
    with on_device_of(grads[0]):
        total = xp.empty((), dtype=xp.float64)  # written, not added to: no zeroing launch
        grad_norm.sum_squares_(grads, total, checked=True, overwrite=True, lists=lists)
        if error_if_nonfinite and not math.isfinite(float(total)):
            raise RuntimeError(_nonfinite_message(2.0, math.sqrt(float(total))))
        # (The clip kernel also writes the norm: no launch of its own.)
        norm = grad_norm.clip_(grads, total, max_norm, checked=True, lists=lists)
    for g in tensors:
        g._version[0] += 1
    return wrap(norm)


def clip_grad_value_(
    parameters: Iterable[Tensor] | Tensor, clip_value: float, foreach: bool | None = None
) -> None:
    """Clamp every gradient element to ``[-clip_value, clip_value]`` (NaN stays NaN).
    ``foreach`` is accepted for PyTorch compatibility and ignored."""
    with no_grad():
        for p in _with_grads(parameters):
            p.grad.clamp_(-clip_value, clip_value)


def parameters_to_vector(parameters: Iterable[Tensor]) -> Tensor:
    """Every parameter flattened and joined into one 1-D tensor (differentiable)."""
    flat = []
    device = None
    for p in parameters:
        if device is None:
            device = p.device
        elif p.device != device:
            raise TypeError(
                f"parameters_to_vector: parameters are on {device} and {p.device}; move them "
                "to one device first"
            )
        flat.append(p.reshape(-1))
    if not flat:
        raise ValueError("parameters_to_vector: no parameters given")
    return cat(flat)


def vector_to_parameters(vec: Tensor, parameters: Iterable[Tensor]) -> None:
    """Copy consecutive slices of the 1-D ``vec`` into the parameters, in order.

    Unlike PyTorch (which makes each parameter's ``.data`` a view of ``vec``), the values
    are copied: the parameters keep their own storage.

    Raises:
        TypeError: ``vec`` is not a tensor. ValueError: its size is not the parameters' total.
    """
    if not isinstance(vec, Tensor):
        raise TypeError(f"expected a Tensor, but got: {type(vec).__name__}")
    params = list(parameters)
    total = sum(p.numel() for p in params)
    if vec.ndim != 1 or vec.numel() != total:
        raise ValueError(
            f"vector_to_parameters: vec of shape {tuple(vec.shape)} does not hold the "
            f"parameters' {total} elements; pass a 1-D tensor of {total}"
        )
    offset = 0
    with no_grad():
        for p in params:
            n = p.numel()
            p.copy_(vec[offset : offset + n].reshape(p.shape))
            offset += n
