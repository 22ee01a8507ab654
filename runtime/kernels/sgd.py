"""A multi-tensor SGD step: every parameter of a list updated in one launch.

The update is ``torch.optim.SGD``'s (and ``dtrain._tensor.optim.sgd.sgd_update``'s)::

    g = -g (maximize);  g += wd p
    b = g (first step)  or  b = momentum b + (1 - dampening) g
    g = g + momentum b (nesterov)  or  g = b;    p -= lr g

(the momentum lines only when ``momentum != 0``). A launch is either every parameter's first
momentum step (``first=True``: the buffers, fresh arrays, are written with ``g``) or none's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain.runtime.backend import on_device_of, require_cupy
from dtrain.runtime.kernels.build import f64, kernel, launch, register, templated
from dtrain.runtime.kernels.multi_tensor import BLOCK, MULTI_TENSOR, check_lists, tensor_lists

_BODY = (
    MULTI_TENSOR
    + r"""
// List rows: 0 param, 1 grad, 2 momentum buffer (unused when momentum == 0).
template <typename T>
__global__ void sgd_multi_tensor(const TensorList list, int n, double lr, double momentum,
                                 double dampening, double weight_decay, int nesterov,
                                 int maximize, int first_step) {
    typedef typename Acc<T>::type A;
    const A a_lr = (A)lr, a_momentum = (A)momentum, a_wd = (A)weight_decay;
    const A a_keep = (A)(1.0 - dampening);
    for_each_owned_chunk(list, n, [&](int t, long long first, long long last) {
        T* p = list_ptr<T>(list, 0, t);
        const T* g = list_ptr<T>(list, 1, t);
        T* b = list_ptr<T>(list, 2, t);
        for (long long i = first + threadIdx.x; i < last; i += blockDim.x) {
            const A pi = to_acc(p[i]);
            A gi = to_acc(g[i]);
            if (maximize) gi = -gi;
            if (weight_decay != 0.0) gi += a_wd * pi;
            if (momentum != 0.0) {
                A bi;
                if (first_step) bi = gi;
                else if (dampening == 0.0) bi = to_acc(b[i]) * a_momentum + gi;
                else bi = to_acc(b[i]) * a_momentum + gi * a_keep;
                b[i] = from_acc<T>(bi);
                gi = nesterov ? gi + bi * a_momentum : bi;
            }
            p[i] = from_acc<T>(pi - gi * a_lr);
        }
    });
}
"""
)

SOURCE = register("sgd", _BODY, templated(("sgd_multi_tensor",)))


def sgd_multi_tensor(
    params: list[Any],
    grads: list[Any],
    momentum_buffers: list[Any] | None,
    *,
    first: bool,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
    checked: bool = False,
) -> None:
    """One SGD step over cupy arrays of one dtype and device, in place: one launch per
    ``MAX_TENSORS`` (48) parameters.

    Args:
        params, grads: one C-contiguous array per parameter.
        momentum_buffers: one array per parameter when ``momentum != 0`` (else None); with
            ``first`` they are (uninitialised) new buffers this step fills with ``g``.
        first: whether this is every listed parameter's first momentum step.
        lr, momentum, dampening, weight_decay, nesterov, maximize: as ``torch.optim.SGD``.
        checked: as for ``adam_multi_tensor``.
    """
    require_cupy("sgd_multi_tensor")
    n = len(params)
    if n == 0:
        return
    if momentum != 0 and momentum_buffers is None:
        raise ValueError("sgd_multi_tensor: momentum != 0 needs momentum_buffers")
    buffers = momentum_buffers if momentum != 0 else None
    name = check_lists("sgd_multi_tensor", [params, grads, buffers], checked)
    sgd_launch(
        tensor_lists([params, grads, buffers]),
        name,
        params[0],
        first=first,
        lr=lr,
        momentum=momentum,
        dampening=dampening,
        weight_decay=weight_decay,
        nesterov=nesterov,
        maximize=maximize,
    )


def sgd_launch(
    lists: list[tuple[np.ndarray, int, int]],
    name: str,
    like: Any,
    *,
    first: bool,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
) -> None:
    """``sgd_multi_tensor``'s launches over lists packed already (``tensor_lists`` of its
    rows, or a ``multi_tensor.CachedLists``), unchecked: ``name`` the C type, ``like`` an
    array on the device to launch on."""
    scalars = (
        f64(lr), f64(momentum), f64(dampening), f64(weight_decay),
        np.int32(nesterov), np.int32(maximize), np.int32(first),
    )  # fmt: skip
    with on_device_of(like):
        fn = kernel(SOURCE, f"sgd_multi_tensor<{name}>")
        for struct, count, grid in lists:
            if grid:
                launch(fn, (grid,), BLOCK, (struct, np.int32(count), *scalars))


def sgd_reference(
    param: np.ndarray,
    grad: np.ndarray,
    momentum_buffer: np.ndarray | None,
    *,
    first: bool,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
) -> None:
    """numpy SGD step on one parameter, in place, computed in float64."""
    p, g = param.astype(np.float64), grad.astype(np.float64)
    if maximize:
        g = -g
    g = g + weight_decay * p
    if momentum != 0:
        b = g if first else momentum * momentum_buffer.astype(np.float64) + (1 - dampening) * g
        momentum_buffer[...] = b
        g = g + momentum * b if nesterov else b
    param[...] = p - lr * g
