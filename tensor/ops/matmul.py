"""Matrix product: 1-D, 2-D and batched (broadcasting batch dimensions)."""

from __future__ import annotations

import math
from typing import Any

from dtrain._tensor.amp.cast import autocast_inputs
from dtrain._tensor.autograd.op import Op
from dtrain._tensor.ops._util import check_broadcast, unbroadcast
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.backend import get_array_module
from dtrain.runtime.linalg import matmul as array_matmul


def stacked_matmul(a: Any, b: Any) -> Any:
    """``a @ b``; a stack of matrices times one matrix runs as one 2-D product (numpy's
    stacked matmul loops over small products, and off BLAS for transposed operands)."""
    if a.ndim > 2 and b.ndim == 2:
        rows = math.prod(a.shape[:-1])  # (not -1: a zero-size dim leaves it undetermined)
        return array_matmul(a.reshape(rows, a.shape[-1]), b).reshape(*a.shape[:-1], b.shape[-1])
    return array_matmul(a, b)


class MatMul(Op):
    reads_inputs = True

    def forward(self, a: Any, b: Any) -> Any:
        self.a, self.b = a, b
        return stacked_matmul(a, b)

    def backward(self, grad: Any) -> tuple:
        a, b = self.a, self.b
        need_a, need_b = self.needs_input_grad
        # Lift 1-D operands to matrices so one formula covers every case. b's axis goes in
        # first: for 1-D @ 1-D the gradient is 0-d and has no axis to index until then.
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        if b.ndim == 1:
            grad = grad[..., None]
        if a.ndim == 1:
            grad = grad[..., None, :]
        if need_a and need_b and grad.ndim > 2 and not grad.flags.c_contiguous:
            # A strided stack (a permuted view) is copied before a batched product: once
            # here rather than once by each of the two products below.
            grad = get_array_module(grad).ascontiguousarray(grad)
        grad_a = grad_b = None
        if need_a:
            grad_a = unbroadcast(stacked_matmul(grad, b2.swapaxes(-1, -2)), a2.shape)
            grad_a = grad_a.reshape(a.shape)
        if need_b:
            if b2.ndim == 2 and a2.ndim > 2:  # sum over the stack inside one 2-D product
                rows = math.prod(a2.shape[:-1])
                flat_a = a2.reshape(rows, a2.shape[-1])
                flat_grad = grad.reshape(rows, grad.shape[-1])
                grad_b = array_matmul(flat_a.T, flat_grad).reshape(b.shape)
            else:
                grad_b = unbroadcast(array_matmul(a2.swapaxes(-1, -2), grad), b2.shape)
                grad_b = grad_b.reshape(b.shape)
        return grad_a, grad_b


def matmul(input: Tensor, other: Tensor) -> Tensor:
    """Matrix product with numpy/PyTorch semantics for 1-D, 2-D and batched operands."""
    if not isinstance(input, Tensor) or not isinstance(other, Tensor):
        raise TypeError(
            f"matmul: both operands must be tensors, got {type(input).__name__} and "
            f"{type(other).__name__}"
        )
    input, other = autocast_inputs("lower", input, other)
    a, b = input._array, other._array
    if a.ndim == 0 or b.ndim == 0:
        raise RuntimeError(
            f"matmul: both operands need at least one dimension, got shapes {a.shape} and "
            f"{b.shape}; use * for a product with a scalar"
        )
    inner_a = a.shape[-1]
    inner_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if inner_a != inner_b:
        raise ValueError(
            f"matmul: shapes {a.shape} and {b.shape} cannot be multiplied ({inner_a} != "
            f"{inner_b}); the last dimension of the first must equal the "
            f"{'only' if b.ndim == 1 else 'second-to-last'} dimension of the second"
        )
    if a.ndim > 2 or b.ndim > 2:
        # Batch dims (all but the last two; a 1-D operand has none) broadcast.
        check_broadcast(
            f"matmul of {a.shape} and {b.shape}: batch dims", a.shape[:-2], b.shape[:-2]
        )
    if a.dtype != b.dtype:
        from dtrain._tensor.ops.arithmetic import _promote

        input, other = _promote(input, other)
    return MatMul.apply(input, other)
