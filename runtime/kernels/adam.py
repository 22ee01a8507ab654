"""A multi-tensor Adam/AdamW step: every parameter of a list updated in one launch.

The update is ``torch.optim.Adam``'s (and ``dtrain._tensor.optim.adam.adam_update``'s), in
the same order of operations, in float for float16/float32 storage and double for float64::

    g = -g (maximize);  p *= 1 - lr wd (decoupled)  or  g += wd p (L2)
    m = lerp(m, g, 1 - beta1);  v = beta2 v + (1 - beta2) g g;  v_max = max(v_max, v)
    p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

Capturable mode: each parameter's step ``t`` is a float32 device scalar; a first launch
adds 1 to every one of them and the update reads them back on the device, so nothing of
the step lives on the host and a CUDA graph of the two launches replays correctly.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dtrain.runtime.backend import on_device_of, require_cupy
from dtrain.runtime.kernels.build import f64, kernel, launch, register, templated
from dtrain.runtime.kernels.multi_tensor import (
    BLOCK,
    MAX_TENSORS,
    MULTI_TENSOR,
    check_lists,
    tensor_lists,
)

_BODY = (
    MULTI_TENSOR
    + r"""
// List rows: 0 param, 1 grad, 2 exp_avg, 3 exp_avg_sq, 4 max_exp_avg_sq (amsgrad),
// 5 step (float, capturable). Non-capturable launches pass the bias corrections instead.
template <typename T>
__global__ void adam_multi_tensor(const TensorList list, int n, double lr, double beta1,
                                  double beta2, double eps, double weight_decay, int amsgrad,
                                  int maximize, int decoupled, int capturable,
                                  double step_size_host, double bias_correction2_sqrt_host) {
    typedef typename Acc<T>::type A;
    const A a_eps = (A)eps, a_wd = (A)weight_decay, a_decay = (A)(1.0 - lr * weight_decay);
    const A a_beta2 = (A)beta2, a_one_minus_beta2 = (A)(1.0 - beta2);
    const A weight = (A)(1.0 - beta1);
    for_each_owned_chunk(list, n, [&](int t, long long first, long long last) {
        T* p = list_ptr<T>(list, 0, t);
        const T* g = list_ptr<T>(list, 1, t);
        T* m = list_ptr<T>(list, 2, t);
        T* v = list_ptr<T>(list, 3, t);
        T* v_max = list_ptr<T>(list, 4, t);
        double step_size = step_size_host, bias_correction2_sqrt = bias_correction2_sqrt_host;
        if (capturable) {  // per chunk, not per tensor: a few flops per 16384 elements
            const double step = (double)*list_ptr<float>(list, 5, t);
            step_size = lr / (1.0 - pow(beta1, step));
            bias_correction2_sqrt = sqrt(1.0 - pow(beta2, step));
        }
        const A a_step_size = (A)step_size, a_bc2 = (A)bias_correction2_sqrt;
        for (long long i = first + threadIdx.x; i < last; i += blockDim.x) {
            A pi = to_acc(p[i]);
            A gi = to_acc(g[i]);
            if (maximize) gi = -gi;
            if (weight_decay != 0.0) {
                if (decoupled) pi *= a_decay;
                else gi += a_wd * pi;
            }
            A mi = to_acc(m[i]);
            // lerp in PyTorch's two-sided form (exact at both ends)
            mi = weight < A(0.5) ? mi + weight * (gi - mi) : gi - (gi - mi) * (A(1) - weight);
            A vi = to_acc(v[i]) * a_beta2 + a_one_minus_beta2 * gi * gi;
            m[i] = from_acc<T>(mi);
            v[i] = from_acc<T>(vi);
            if (amsgrad) {
                const A old = to_acc(v_max[i]);
                vi = old > vi ? old : vi;
                v_max[i] = from_acc<T>(vi);
            }
            const A denom = dt_sqrt(vi) / a_bc2 + a_eps;
            p[i] = from_acc<T>(pi - (mi * a_step_size) / denom);
        }
    });
}

// Capturable mode: step[t] += 1 for every tensor of the list, before the update reads it.
__global__ void adam_increment_steps(const TensorList list, int n) {
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t < n) *list_ptr<float>(list, 5, t) += 1.0f;
}
"""
)

SOURCE = register(
    "adam",
    _BODY,
    (*templated(("adam_multi_tensor",)), "adam_increment_steps"),
)


def adam_multi_tensor(
    params: list[Any],
    grads: list[Any],
    exp_avgs: list[Any],
    exp_avg_sqs: list[Any],
    max_exp_avg_sqs: list[Any] | None,
    *,
    step: int | None = None,
    steps: list[Any] | None = None,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    maximize: bool,
    decoupled_weight_decay: bool,
    checked: bool = False,
) -> None:
    """One Adam(W) step over cupy arrays of one dtype and device, in place: one launch per
    ``MAX_TENSORS`` (48) parameters (two in capturable mode).

    Args:
        params, grads, exp_avgs, exp_avg_sqs: one C-contiguous array per parameter.
        max_exp_avg_sqs: AMSGrad's running maxima (required when ``amsgrad``), else None.
        step: this step's number, already counted (1 on the first step), shared by every
            parameter; or
        steps: capturable mode: one float32 device array of one element per parameter,
            incremented here on the device before the update uses it.
        lr, beta1, beta2, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay:
            as ``torch.optim.Adam``.
        checked: the arrays were picked with ``multi_tensor.fusable`` and share a dtype and
            device (``multi_tensor.check_lists``): skip asking each again.

    Raises:
        ValueError: the lists do not line up, or neither / both of ``step`` and ``steps``.
    """
    if (step is None) == (steps is None):
        raise ValueError(
            "adam_multi_tensor: pass step (an int) or steps (device scalars), not both"
        )
    if amsgrad and max_exp_avg_sqs is None:
        raise ValueError("adam_multi_tensor: amsgrad=True needs max_exp_avg_sqs")
    require_cupy("adam_multi_tensor")
    n = len(params)
    if n == 0:
        return
    v_max = max_exp_avg_sqs if amsgrad else None
    lists = [params, grads, exp_avgs, exp_avg_sqs, v_max]
    name = check_lists("adam_multi_tensor", lists, checked)
    bad_steps = steps is not None and (
        len(steps) != n
        or any(s.dtype != np.float32 or s.size != 1 or not s.flags.c_contiguous for s in steps)
    )
    if bad_steps:
        raise ValueError(
            "adam_multi_tensor: steps must hold one float32 device scalar per parameter"
        )
    rows = [params, grads, exp_avgs, exp_avg_sqs, v_max, steps]
    adam_launch(
        tensor_lists(rows),
        name,
        params[0],
        step=step,
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        weight_decay=weight_decay,
        amsgrad=amsgrad,
        maximize=maximize,
        decoupled_weight_decay=decoupled_weight_decay,
    )


def adam_launch(
    lists: list[tuple[np.ndarray, int, int]],
    name: str,
    like: Any,
    *,
    step: int | None,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    maximize: bool,
    decoupled_weight_decay: bool,
) -> None:
    """``adam_multi_tensor``'s launches over lists packed already (``tensor_lists`` of its
    rows, or a ``multi_tensor.CachedLists``), unchecked: ``name`` the C type, ``like`` an
    array on the device to launch on, ``step`` None for capturable device steps (row 5)."""
    if step is None:
        step_size = bias_correction2_sqrt = 1.0  # read on the device instead
    else:
        step_size = lr / (1 - beta1**step)
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
    scalars = (
        f64(lr), f64(beta1), f64(beta2), f64(eps), f64(weight_decay),
        np.int32(amsgrad), np.int32(maximize), np.int32(decoupled_weight_decay),
        np.int32(step is None), f64(step_size), f64(bias_correction2_sqrt),
    )  # fmt: skip
    with on_device_of(like):
        update = kernel(SOURCE, f"adam_multi_tensor<{name}>")
        bump = kernel(SOURCE, "adam_increment_steps") if step is None else None
        for struct, count, grid in lists:
            if bump is not None:
                launch(bump, (1,), MAX_TENSORS, (struct, np.int32(count)))
            if grid:
                launch(update, (grid,), BLOCK, (struct, np.int32(count), *scalars))


def adam_reference(
    param: np.ndarray,
    grad: np.ndarray,
    exp_avg: np.ndarray,
    exp_avg_sq: np.ndarray,
    max_exp_avg_sq: np.ndarray | None,
    *,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    maximize: bool,
    decoupled_weight_decay: bool,
) -> None:
    """numpy Adam step on one parameter, in place, computed in float64 (``step`` counted)."""
    p, g = param.astype(np.float64), grad.astype(np.float64)
    m, v = exp_avg.astype(np.float64), exp_avg_sq.astype(np.float64)
    if maximize:
        g = -g
    if weight_decay != 0:
        if decoupled_weight_decay:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
    m = m + (1 - beta1) * (g - m)
    v = beta2 * v + (1 - beta2) * g * g
    exp_avg[...], exp_avg_sq[...] = m, v
    if amsgrad:
        v = np.maximum(max_exp_avg_sq.astype(np.float64), v)
        max_exp_avg_sq[...] = v
    denom = np.sqrt(v) / math.sqrt(1 - beta2**step) + eps
    param[...] = p - lr / (1 - beta1**step) * m / denom
