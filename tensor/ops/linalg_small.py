"""Small linear algebra: dot, vdot, mv, inner, kron, tensordot, trace, addmv, addr,
baddbmm, addbmm, matrix_power, inverse, logdet, slogdet, cross.

Products are built on ``matmul`` (one GEMM each, its gradient included); slogdet runs
numpy's or cupy's LAPACK routine and its gradient is ``inv(A)^T``.
"""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import numpy as np

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.ops._util import normalize_dim
from dtrain._tensor.ops.matmul import matmul
from dtrain._tensor.ops.matrix import _mT, _square, inv
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module

#: What ``slogdet`` returns, as PyTorch's ``torch.return_types.slogdet``.
SignLogAbsDet = namedtuple("SignLogAbsDet", ["sign", "logabsdet"])


def _shapes(*tensors: Tensor) -> str:
    return " and ".join(str(tuple(t.shape)) for t in tensors)


def _count(sizes: Any) -> int:
    """The number of elements of a shape (explicit sizes: ``reshape(-1, 0)`` is ambiguous)."""
    return int(np.prod(list(sizes), dtype=np.int64))


def _same_dtype(name: str, a: Tensor, b: Tensor) -> None:
    if a.dtype != b.dtype:
        raise TypeError(
            f"{name}: expected both tensors to have the same dtype, got {a.dtype} and "
            f"{b.dtype}; convert one (e.g. b.to(a.dtype))"
        )


def dot(input: Tensor, tensor: Tensor) -> Tensor:
    """The inner product of two 1-D tensors of the same size and dtype (a 0-d tensor)."""
    if input.ndim != 1 or tensor.ndim != 1 or input.shape != tensor.shape:
        raise ValueError(
            f"dot: expected two 1-D tensors of the same size, got {_shapes(input, tensor)}"
        )
    _same_dtype("dot", input, tensor)
    return matmul(input, tensor)


def vdot(input: Tensor, other: Tensor) -> Tensor:
    """``dot`` (the first argument's conjugate is itself: dtrain has no complex tensors)."""
    return dot(input, other)


def mv(input: Tensor, vec: Tensor) -> Tensor:
    """The product of a matrix ``(n, m)`` and a vector ``(m,)``."""
    if input.ndim != 2 or vec.ndim != 1 or input.shape[1] != vec.shape[0]:
        raise ValueError(
            f"mv: expected a matrix (n, m) and a vector (m,), got {_shapes(input, vec)}"
        )
    _same_dtype("mv", input, vec)
    return matmul(input, vec)


def inner(input: Tensor, other: Tensor) -> Tensor:
    """The sum of products over the last dims: shape ``input.shape[:-1] + other.shape[:-1]``
    (a product with a 0-d tensor is elementwise)."""
    if input.ndim == 0 or other.ndim == 0:
        return input * other
    if input.shape[-1] != other.shape[-1]:
        raise ValueError(f"inner: the last dims must match, got {_shapes(input, other)}")
    size = input.shape[-1]
    rows_a, rows_b = _count(input.shape[:-1]), _count(other.shape[:-1])  # no -1: size may be 0
    product = matmul(input.reshape(rows_a, size), other.reshape(rows_b, size).transpose(0, 1))
    return product.reshape(*input.shape[:-1], *other.shape[:-1])


def tensordot(a: Tensor, b: Tensor, dims: Any = 2) -> Tensor:
    """Contract the last ``dims`` dims of ``a`` with the first ``dims`` of ``b``, or the dims
    listed in ``dims = (dims_a, dims_b)``."""
    if isinstance(dims, Tensor):
        dims = dims.tolist()
    if isinstance(dims, int):
        if dims < 0 or dims > min(a.ndim, b.ndim):
            raise ValueError(f"tensordot: dims={dims} is out of range for {_shapes(a, b)}")
        axes_a, axes_b = list(range(a.ndim - dims, a.ndim)), list(range(dims))
    else:
        axes_a, axes_b = ([d] if isinstance(d, int) else list(d) for d in dims)
        axes_a = [normalize_dim(d, a.ndim) for d in axes_a]
        axes_b = [normalize_dim(d, b.ndim) for d in axes_b]
    if len(axes_a) != len(axes_b) or any(a.shape[i] != b.shape[j] for i, j in zip(axes_a, axes_b)):
        raise ValueError(
            f"tensordot: contracted dims {axes_a} of {tuple(a.shape)} and {axes_b} of "
            f"{tuple(b.shape)} differ in size"
        )
    free_a = [i for i in range(a.ndim) if i not in axes_a]
    free_b = [i for i in range(b.ndim) if i not in axes_b]
    size = _count(a.shape[i] for i in axes_a)
    left = a.permute(*free_a, *axes_a).reshape(_count(a.shape[i] for i in free_a), size)
    right = b.permute(*axes_b, *free_b).reshape(size, _count(b.shape[i] for i in free_b))
    return matmul(left, right).reshape(*[a.shape[i] for i in free_a], *[b.shape[i] for i in free_b])


def kron(input: Tensor, other: Tensor) -> Tensor:
    """The Kronecker product: ``out[i*p + k, j*q + l] = input[i, j] * other[k, l]`` (any
    number of dims; the fewer-dim one gets leading 1s)."""
    ndim = max(input.ndim, other.ndim)
    a_shape = (1,) * (ndim - input.ndim) + tuple(input.shape)
    b_shape = (1,) * (ndim - other.ndim) + tuple(other.shape)
    a = input.reshape(*[s for size in a_shape for s in (size, 1)])
    b = other.reshape(*[s for size in b_shape for s in (1, size)])
    return (a * b).reshape(*[p * q for p, q in zip(a_shape, b_shape)])


def trace(input: Tensor) -> Tensor:
    """The sum of a matrix's main diagonal (integers sum in int64)."""
    from dtrain._tensor.ops.reduce import sum
    from dtrain._tensor.ops.shape_extra import diagonal

    if input.ndim != 2:
        raise ValueError(f"trace: expected a matrix, got shape {tuple(input.shape)}")
    return sum(diagonal(input))


def _scaled_sum(name: str, input: Tensor, product: Tensor, beta: float, alpha: float) -> Tensor:
    """``beta * input + alpha * product``; ``beta=0`` ignores ``input``'s values (NaNs
    included) but not its dtype. ``input`` must broadcast *to* the product's shape."""
    try:
        fits = np.broadcast_shapes(tuple(input.shape), tuple(product.shape)) == product.shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(
            f"{name}: input of shape {tuple(input.shape)} does not broadcast to the product's "
            f"shape {tuple(product.shape)}; give input that shape or one that expands to it"
        )
    if alpha != 1:
        product = product * alpha
    if beta == 0:
        zeros = get_array_module(input._array).zeros(input.shape, dtype=input._array.dtype)
        return product + wrap(zeros)  # input's dtype takes part, its values (NaN too) don't
    return product + (input if beta == 1 else input * beta)


def addmv(input: Tensor, mat: Tensor, vec: Tensor, *, beta: float = 1, alpha: float = 1) -> Tensor:
    """``beta * input + alpha * (mat @ vec)``."""
    return _scaled_sum("addmv", input, mv(mat, vec), beta, alpha)


def addr(input: Tensor, vec1: Tensor, vec2: Tensor, *, beta: float = 1, alpha: float = 1) -> Tensor:
    """``beta * input + alpha * outer(vec1, vec2)``."""
    from dtrain._tensor.ops.linalg import outer

    return _scaled_sum("addr", input, outer(vec1, vec2), beta, alpha)


def baddbmm(
    input: Tensor, batch1: Tensor, batch2: Tensor, *, beta: float = 1, alpha: float = 1
) -> Tensor:
    """``beta * input + alpha * bmm(batch1, batch2)``."""
    from dtrain._tensor.ops.linalg import bmm

    return _scaled_sum("baddbmm", input, bmm(batch1, batch2), beta, alpha)


def addbmm(
    input: Tensor, batch1: Tensor, batch2: Tensor, *, beta: float = 1, alpha: float = 1
) -> Tensor:
    """``beta * input + alpha * sum_b(batch1[b] @ batch2[b])``."""
    from dtrain._tensor.ops.linalg import bmm
    from dtrain._tensor.ops.reduce import sum

    product = bmm(batch1, batch2)
    total = sum(product, 0)
    if total.dtype != product.dtype:  # integer sums widen to int64; PyTorch keeps int32
        total = total.to(product.dtype)
    return _scaled_sum("addbmm", input, total, beta, alpha)


def matrix_power(input: Tensor, n: int) -> Tensor:
    """``input`` multiplied by itself ``n`` times (square matrices ``(..., m, m)``): the
    identity for ``n = 0``, powers of the inverse for ``n < 0``."""
    from dtrain._tensor.creation import eye

    if input.ndim < 2 or input.shape[-1] != input.shape[-2]:
        raise ValueError(
            f"matrix_power: expected square matrices (..., m, m), got {tuple(input.shape)}"
        )
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"matrix_power: n must be an int, got {n!r}")
    if n == 0:  # the identity, with a zero gradient to ``input`` (as PyTorch's copy_)
        from dtrain._tensor.ops.select import where

        identity = eye(input.shape[-1], dtype=input.dtype, device=input.device)
        everywhere = get_array_module(input._array).ones((), dtype=bool)
        return where(wrap(everywhere), identity.expand(*input.shape), input)
    base = inv(input) if n < 0 else input
    result = None
    n = abs(n)
    while n:  # binary powering: log2(n) squarings
        if n & 1:
            result = base if result is None else matmul(result, base)
        n >>= 1
        if n:
            base = matmul(base, base)
    return result


def inverse(input: Tensor) -> Tensor:
    """The inverse of square matrices (``linalg.inv``)."""
    return inv(input)


class SlogDet(Op):
    """``(sign, log|det(A)|)`` stacked on a new last axis; the gradient reaches ``A`` from
    the second, as ``inv(A)^T``."""

    reads_inputs = True

    def forward(self, a: Any) -> Any:
        xp = get_array_module(a)
        self.a = a
        sign, logabs = xp.linalg.slogdet(a)
        self.singular = xp.asarray(sign) == 0
        return xp.stack([xp.asarray(sign, dtype=a.dtype), xp.asarray(logabs)], axis=-1)

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        a, singular = self.a, self.singular[..., None, None]
        eye = xp.eye(a.shape[-1], dtype=a.dtype)
        inverse_t = _mT(xp.linalg.inv(xp.where(singular, eye, a)))  # numpy would raise
        scale = grad[..., 1, None, None]
        if bool(singular.any()):  # one host read: a singular matrix gets adj(A)^T / 0,
            # ±inf (NaN where adj is 0) as PyTorch, on either device
            over_zero = scale * _adjugate_t(a, xp)
            over_zero = xp.where(over_zero == 0, xp.nan, xp.copysign(xp.inf, over_zero))
            return (xp.where(singular, over_zero, scale * inverse_t).astype(a.dtype),)
        return (scale * inverse_t,)


def _adjugate_t(a: Any, xp: Any) -> Any:
    """``adj(A)^T = det(U) det(V^T) U diag(prod_{j != i} s_j) V^T`` from ``A = U S V^T``:
    defined for singular matrices, where ``inv`` is not."""
    u, s, vh = xp.linalg.svd(a)
    n = s.shape[-1]
    others = xp.prod(xp.where(xp.eye(n, dtype=bool), 1, s[..., None, :]), axis=-1)
    sign = (xp.linalg.det(u) * xp.linalg.det(vh))[..., None, None]
    return sign * ((u * others[..., None, :]) @ vh)


def slogdet(input: Tensor) -> SignLogAbsDet:
    """``(sign, log|det|)`` of square matrices, without det's overflow."""
    _square(input, "slogdet")
    both = SlogDet.apply(input)
    return SignLogAbsDet(both[..., 0].detach(), both[..., 1])


def logdet(input: Tensor) -> Tensor:
    """``log(det(A))``: NaN for a negative determinant, -inf for a zero one."""
    from dtrain._tensor.ops.select import where

    sign, logabs = slogdet(input)
    return where(sign < 0, float("nan"), logabs)


def cross(input: Tensor, other: Tensor, dim: int | None = None) -> Tensor:
    """The cross product of 3-vectors along ``dim`` (broadcasting). Without ``dim``, the
    first dim of size 3, as ``torch.cross`` (``linalg.cross`` defaults to the last)."""
    from dtrain._tensor.ops.shape import stack

    shape = tuple(np.broadcast_shapes(tuple(input.shape), tuple(other.shape)))
    if dim is None:
        dim = next((i for i, size in enumerate(shape) if size == 3), None)
        if dim is None:
            raise ValueError(f"cross: no dim of size 3 in shape {shape}; pass dim")
    axis = normalize_dim(dim, len(shape))
    if shape[axis] != 3:
        raise ValueError(f"cross: dim {dim} must have size 3, got shape {shape}")
    a, b = input.expand(*shape), other.expand(*shape)
    a0, a1, a2 = (a.select(axis, i) for i in range(3))
    b0, b1, b2 = (b.select(axis, i) for i in range(3))
    return stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], dim=axis)


def linalg_cross(input: Tensor, other: Tensor, *, dim: int = -1) -> Tensor:
    """``linalg.cross``: ``cross`` along ``dim`` (the last by default)."""
    return cross(input, other, dim)


def add_product_(
    tensor: Tensor, function: Any, first: Tensor, second: Tensor, *, beta: float, alpha: float
) -> Tensor:
    """In place: ``addmm``, ``addmv``, ``addr``, ``baddbmm`` or ``addbmm`` (``function``)."""
    from dtrain._tensor.ops.inplace_math import _inplace

    return _inplace(
        tensor,
        lambda t: function(t, first, second, beta=beta, alpha=alpha),
        f"{function.__name__}_",
        first,
        second,
    )
