"""ReLU's backward, ``grad_x = grad where out > 0, else 0``, in one launch.

cupy needs two (the comparison, then the product); every ReLU of an MLP or a CNN pays it on
each step. Elementwise, grid-stride; the forward stays cupy's one ``maximum``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain.runtime.backend import require_cupy
from dtrain.runtime.kernels.build import (
    ELEMENTWISE_BLOCK,
    contiguous,
    elementwise_grid,
    i64,
    kernel,
    launch,
    on_array_device,
    register,
    templated,
    type_name,
)

_BODY = r"""
template <typename T>
__global__ void relu_backward(const T* grad, const T* out, T* grad_x, long long n) {
    typedef typename Acc<T>::type A;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        grad_x[i] = to_acc(out[i]) > A(0) ? grad[i] : from_acc<T>(A(0));
}
"""

SOURCE = register("relu", _BODY, templated(("relu_backward",)))


def supported(out: Any) -> bool:
    """Whether the kernel takes this ReLU output: a float16/32/64 dtype."""
    return type_name(out.dtype) is not None


@on_array_device
def relu_backward(grad: Any, out: Any) -> Any:
    """The gradient of ReLU's input from the gradient of its output ``out`` (cupy arrays of
    one shape)."""
    cupy = require_cupy("relu_backward")
    out = contiguous(out)
    grad = contiguous(grad, dtype=out.dtype)
    grad_x = cupy.empty_like(out)
    if out.size:
        fn = kernel(SOURCE, f"relu_backward<{type_name(out.dtype)}>")
        args = (grad, out, grad_x, i64(out.size))
        launch(fn, elementwise_grid(out.size), ELEMENTWISE_BLOCK, args)
    return grad_x


def relu_backward_reference(grad: np.ndarray, out: np.ndarray) -> np.ndarray:
    """numpy ``relu_backward``."""
    return np.where(out > 0, grad, 0).astype(out.dtype)
