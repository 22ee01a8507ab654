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

from dtrain.runtime.backend import require_cupy
from dtrain.runtime.kernels.build import f64, i64, kernel, launch, register, templated
from dtrain.runtime.kernels.multi_tensor import BLOCK, CHUNK, CHUNK_LOOP, check_lists, table

_BODY = (
    CHUNK_LOOP
    + r"""
// Table rows: 0 param, 1 grad, 2 exp_avg, 3 exp_avg_sq, 4 max_exp_avg_sq (amsgrad),
// 5 step (float, capturable). Non-capturable launches pass the bias corrections.
template <typename T>
__global__ void adam_multi_tensor(const long long* ptrs, const long long* sizes,
                                  const long long* chunk_tensor, const long long* chunk_start,
                                  long long n, long long chunk_size, double lr, double beta1,
                                  double beta2, double eps, double weight_decay, int amsgrad,
                                  int maximize, int decoupled, int capturable,
                                  double step_size_host, double bias_correction2_sqrt_host) {
    typedef typename Acc<T>::type A;
    const Chunk c = block_chunk(sizes, chunk_tensor, chunk_start, chunk_size);
    T* p = table_ptr<T>(ptrs, n, 0, c.t);
    const T* g = table_ptr<T>(ptrs, n, 1, c.t);
    T* m = table_ptr<T>(ptrs, n, 2, c.t);
    T* v = table_ptr<T>(ptrs, n, 3, c.t);
    T* v_max = table_ptr<T>(ptrs, n, 4, c.t);
    double step_size = step_size_host, bias_correction2_sqrt = bias_correction2_sqrt_host;
    if (capturable) {
        const double step = (double)*table_ptr<float>(ptrs, n, 5, c.t);
        step_size = lr / (1.0 - pow(beta1, step));
        bias_correction2_sqrt = sqrt(1.0 - pow(beta2, step));
    }
    const A a_step_size = (A)step_size, a_bc2 = (A)bias_correction2_sqrt, a_eps = (A)eps;
    const A a_wd = (A)weight_decay, a_decay = (A)(1.0 - lr * weight_decay);
    const A a_beta2 = (A)beta2, a_one_minus_beta2 = (A)(1.0 - beta2);
    const A weight = (A)(1.0 - beta1);
    for (long long i = c.first + threadIdx.x; i < c.last; i += blockDim.x) {
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
}

// Capturable mode: step[t] += 1 for every tensor, before the update reads it.
__global__ void adam_increment_steps(const long long* ptrs, long long n) {
    const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t < n) *table_ptr<float>(ptrs, n, 5, t) += 1.0f;
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
) -> None:
    """One Adam(W) step over cupy arrays of one dtype and device, in place, in one launch.

    Args:
        params, grads, exp_avgs, exp_avg_sqs: one C-contiguous array per parameter.
        max_exp_avg_sqs: AMSGrad's running maxima (required when ``amsgrad``), else None.
        step: this step's number, already counted (1 on the first step), shared by every
            parameter; or
        steps: capturable mode: one float32 device array of one element per parameter,
            incremented here on the device before the update uses it.
        lr, beta1, beta2, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay:
            as ``torch.optim.Adam``.

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
    name = check_lists("adam_multi_tensor", [params, grads, exp_avgs, exp_avg_sqs, v_max])
    bad_steps = steps is not None and (
        len(steps) != n
        or any(s.dtype != np.float32 or s.size != 1 or not s.flags.c_contiguous for s in steps)
    )
    if bad_steps:
        raise ValueError(
            "adam_multi_tensor: steps must hold one float32 device scalar per parameter"
        )
    rows = [params, grads, exp_avgs, exp_avg_sqs, v_max or [None] * n, steps or [None] * n]
    with params[0].device:
        tab = table(rows, CHUNK)
        if steps is not None:
            bump = kernel(SOURCE, "adam_increment_steps")
            launch(bump, (math.ceil(n / BLOCK),), BLOCK, (tab.ptrs, i64(n)))
            step_size = bias_correction2_sqrt = 1.0  # read on the device instead
        else:
            step_size = lr / (1 - beta1**step)
            bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        fn = kernel(SOURCE, f"adam_multi_tensor<{name}>")
        flags = (amsgrad, maximize, decoupled_weight_decay, steps is not None)
        args = (
            tab.ptrs, tab.sizes, tab.chunk_tensor, tab.chunk_start, i64(n), i64(CHUNK),
            f64(lr), f64(beta1), f64(beta2), f64(eps), f64(weight_decay),
            *(np.int32(f) for f in flags), f64(step_size), f64(bias_correction2_sqrt),
        )  # fmt: skip
        if tab.chunks:
            launch(fn, (tab.chunks,), BLOCK, args)


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
