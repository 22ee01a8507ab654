"""``linear``: ``x @ weight.T + bias`` as one op (one output array, no transposed copy)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dtrain._tensor.amp.cast import autocast_inputs
from dtrain._tensor.autograd.op import Op
from dtrain._tensor.ops.activation import relu_gradient
from dtrain._tensor.ops.copy import float32_grad_wanted
from dtrain._tensor.tensor import Tensor
from dtrain.runtime import linear_products
from dtrain.runtime.backend import is_cuda_array
from dtrain.runtime.linalg import matmul, matmul_add_bias, matmul_and_row_sums


class Linear(Op):
    reads_inputs = True

    def forward(self, x: Any, weight: Any, bias: Any = None) -> Any:
        self.x, self.weight = x, weight
        return _product(x, weight, bias, relu=False)

    def backward(self, grad: Any) -> tuple:
        need_x, need_w = self.needs_input_grad[:2]
        need_b = len(self.needs_input_grad) > 2 and self.needs_input_grad[2]
        x, weight = self.x, self.weight
        # Under autocast the weight and bias are float16 casts of float32 parameters: their
        # gradients are then accumulated and written in float32 (no cast launch after).
        wide_w = need_w and float32_grad_wanted(self.parents[1], weight.dtype)
        wide_b = need_b and float32_grad_wanted(self.parents[2], weight.dtype)
        if is_cuda_array(grad):
            found = self._cuda_backward(grad, need_x, need_w, need_b, wide_w, wide_b)
            if found is not None:
                return found
        flat_grad = _rows(grad)
        grad_x = matmul(flat_grad, weight).reshape(x.shape) if need_x else None
        grad_w = grad_b = None
        if need_w and need_b and wide_w == wide_b:
            # One launch on CUDA: the bias gradient from the product's epilogue.
            flat_x = _rows(x)
            grad_w, grad_b = matmul_and_row_sums(
                flat_grad.T, flat_x, np.float32 if wide_w else None
            )
        else:
            if need_w:
                flat_x = _rows(x)
                grad_w = matmul(flat_grad.T, flat_x, np.float32 if wide_w else None)
            if need_b:
                grad_b = flat_grad.sum(axis=0, dtype=np.float32 if wide_b else None)
        return grad_x, grad_w, grad_b

    def _cuda_backward(
        self, grad: Any, need_x: bool, need_w: bool, need_b: bool, wide_w: bool, wide_b: bool
    ) -> tuple | None:
        """The gradients planned on contiguous arrays as they lie (``linear_products``), or
        None where one of them does not apply (then all take the general path)."""
        if need_b and (not need_w or wide_w != wide_b):
            return None  # (rare: frozen weight, or mixed widths) the general path
        if not linear_products.fits(grad, self.x, self.weight):
            return None  # checked before any product: none is made twice
        grad_x = grad_w = grad_b = None
        if need_w:
            both = linear_products.grad_weight(
                grad, self.x, np.float32 if wide_w else None, with_bias=need_b
            )
            if both is None:
                return None
            grad_w, grad_b = both
        if need_x:
            grad_x = linear_products.grad_input(grad, self.weight, self.x.shape)
            if grad_x is None:
                return None
        return grad_x, grad_w, grad_b


def _rows(array: Any) -> Any:
    """``array`` as (rows, last dim): its leading dims flattened (zero-size dims included,
    which ``reshape(-1, 0)`` cannot infer)."""
    return array.reshape(math.prod(array.shape[:-1]), array.shape[-1])


def _product(x: Any, weight: Any, bias: Any, relu: bool) -> Any:
    """``x @ weight.T + bias`` (then ReLU) over ``x``'s last dim: one launch on CUDA where
    cuBLASLt takes the bias (and ReLU) in its epilogue."""
    if is_cuda_array(x):
        out = linear_products.forward(x, weight, bias, relu)
        if out is not None:
            return out
    # Leading dims flattened: one 2-D product (numpy's stacked matmul is far slower).
    flat_x = _rows(x)
    if bias is None:
        out = matmul(flat_x, weight.T)
    else:
        out = matmul_add_bias(flat_x, weight.T, bias, relu=relu)
    return out.reshape(*x.shape[:-1], weight.shape[0])


class LinearReLU(Linear):
    """``relu(x @ weight.T + bias)`` as one op: on CUDA the ReLU rides in the product's
    cuBLASLt epilogue with the bias (one launch, not two), on the CPU it is applied in
    place. ``Sequential`` takes it for a ``Linear`` followed by a ``ReLU``."""

    reads_output = True

    def forward(self, x: Any, weight: Any, bias: Any) -> Any:
        self.x, self.weight = x, weight
        self.out = _product(x, weight, bias, relu=True)
        return self.out

    def backward(self, grad: Any) -> tuple:
        return super().backward(relu_gradient(grad, self.out))


def linear_relu(input: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``relu(linear(input, weight, bias))`` in one op (``LinearReLU``)."""
    input, weight, bias = _checked(input, weight, bias)
    return LinearReLU.apply(input, weight, bias)


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``input @ weight.T + bias`` over the last dim of ``input`` (weight: (out, in))."""
    input, weight, bias = _checked(input, weight, bias)
    if bias is None:
        return Linear.apply(input, weight)
    return Linear.apply(input, weight, bias)


def _checked(input: Tensor, weight: Tensor, bias: Tensor | None) -> tuple:
    """The operands as autocast casts them, after checking their shapes and dtypes."""
    input, weight, bias = autocast_inputs("lower", input, weight, bias)
    if input.shape[-1:] != weight.shape[1:2]:
        raise ValueError(
            f"linear: input of shape {input.shape} has {input.shape[-1] if input.ndim else 0} "
            f"features but weight of shape {weight.shape} expects {weight.shape[1]}"
        )
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(
            f"linear: bias of shape {bias.shape} does not match {weight.shape[0]} outputs"
        )
    if input.dtype != weight.dtype:
        raise TypeError(
            f"linear: input dtype {input.dtype} differs from weight dtype {weight.dtype}; "
            f"convert the input (x.to({weight.dtype}))"
        )
    return input, weight, bias


def bilinear(input1: Tensor, input2: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``y[..., o] = Σ_ij input1[..., i] · weight[o, i, j] · input2[..., j] + bias[o]``: one
    matrix product of ``input1`` with the weight, then a product and sum with ``input2``.

    Raises:
        ValueError: shapes that do not fit ``weight``'s ``(out, in1, in2)``.
    """
    if weight.ndim != 3:
        raise ValueError(
            f"bilinear: weight must be 3-D (out, in1, in2), got shape {tuple(weight.shape)}"
        )
    out, in1, in2 = weight.shape
    if input1.shape[-1] != in1 or input2.shape[-1] != in2 or input1.shape[:-1] != input2.shape[:-1]:
        raise ValueError(
            f"bilinear: inputs of shapes {tuple(input1.shape)} and {tuple(input2.shape)} do not "
            f"fit weight {tuple(weight.shape)}; they need the same leading dims and last dims "
            f"{in1} and {in2}"
        )
    if bias is not None and tuple(bias.shape) != (out,):
        raise ValueError(f"bilinear: bias has shape {tuple(bias.shape)}, expected ({out},)")
    lead = tuple(input1.shape[:-1])
    left = input1.reshape(-1, in1) @ weight.permute(1, 0, 2).reshape(in1, out * in2)
    result = (left.reshape(-1, out, in2) * input2.reshape(-1, 1, in2)).sum(-1)
    if bias is not None:
        result = result + bias
    return result.reshape(*lead, out)
