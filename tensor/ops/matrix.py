"""Matrix functions: addmm, cdist, and ``dtrain.linalg`` (norm, vector_norm, matrix_norm,
inv, solve, det). inv/solve/det run numpy's or cupy's LAPACK routines. A singular matrix
makes inv and solve raise numpy's LinAlgError on both devices (cupy does not check by
default: dtrain checks the CUDA result, one host sync); det's gradient is the adjugate,
singular matrices included."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.ops._util import normalize_dim, unbroadcast
from dtrain._tensor.ops.linalg import norm
from dtrain._tensor.ops.matmul import matmul
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.backend import get_array_module, is_cuda_array
from dtrain.runtime.device import as_numpy

_DIRECT_CDIST_ELEMENTS = 1 << 20  # below this many differences cdist subtracts directly


def addmm(
    input: Tensor, mat1: Tensor, mat2: Tensor, *, beta: float = 1, alpha: float = 1
) -> Tensor:
    """``beta * input + alpha * (mat1 @ mat2)`` for 2-D ``mat1``, ``mat2`` (``input``
    broadcasts); ``beta=0`` ignores ``input`` (NaNs in it included), as PyTorch."""
    if mat1.ndim != 2 or mat2.ndim != 2:
        raise ValueError(
            f"addmm: mat1 and mat2 must be 2-D, got shapes {tuple(mat1.shape)} and "
            f"{tuple(mat2.shape)}; use matmul for batches"
        )
    product = matmul(mat1, mat2)
    if alpha != 1:
        product = product * alpha
    if beta == 0:
        return product
    return product + (input if beta == 1 else input * beta)


# ---- cdist -------------------------------------------------------------------------------
class EuclideanDistance(Op):
    """All pairwise distances ``||x1[..., i, :] - x2[..., j, :]||``; the gradient is 0 at
    distance 0 (as PyTorch's)."""

    reads_inputs = True
    reads_output = True

    def forward(self, x1: Any, x2: Any, direct: bool) -> Any:
        xp = get_array_module(x1)
        self.x1, self.x2 = x1, x2
        if direct:
            difference = x1[..., :, None, :] - x2[..., None, :, :]
            squared = (difference * difference).sum(axis=-1)
        else:  # |a|^2 + |b|^2 - 2 a.b: a matrix product, no (P, R, M) temporary
            squared = (x1 * x1).sum(-1)[..., :, None] + (x2 * x2).sum(-1)[..., None, :]
            squared -= 2 * xp.matmul(x1, xp.swapaxes(x2, -1, -2))
            xp.maximum(squared, 0, out=squared)
        self.out = xp.sqrt(squared)
        return self.out

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        weight = xp.where(self.out == 0, 0, grad / xp.where(self.out == 0, 1, self.out))
        grad1 = weight.sum(-1)[..., None] * self.x1 - xp.matmul(weight, self.x2)
        weight_t = xp.swapaxes(weight, -1, -2)
        grad2 = weight_t.sum(-1)[..., None] * self.x2 - xp.matmul(weight_t, self.x1)
        return unbroadcast(grad1, self.x1.shape), unbroadcast(grad2, self.x2.shape)


def cdist(x1: Tensor, x2: Tensor, p: float = 2.0, compute_mode: str | None = None) -> Tensor:
    """The p-norm distance between each row of ``x1`` ``(..., P, M)`` and each row of ``x2``
    ``(..., R, M)``: shape ``(..., P, R)`` (batch dims broadcast). p = 2 is one op (its
    gradient 0 at distance 0): it subtracts directly while the ``(..., P, R, M)``
    differences number under 2^20, else takes the matrix-product form; ``compute_mode``
    ``'use_mm_for_euclid_dist'`` / ``'donot_use_mm_for_euclid_dist'`` forces one. Other p
    go through ``norm`` of the differences."""
    if x1.ndim < 2 or x2.ndim < 2 or x1.shape[-1] != x2.shape[-1]:
        raise ValueError(
            f"cdist: x1 and x2 must be at least 2-D with the same last dim, got shapes "
            f"{tuple(x1.shape)} and {tuple(x2.shape)}"
        )
    if x1._array.dtype.kind != "f" or x2._array.dtype.kind != "f":
        raise TypeError(f"cdist: expected float tensors, got {x1.dtype} and {x2.dtype}")
    if p < 0:
        raise ValueError(f"cdist: p must be non-negative, got {p}")
    modes = (None, "use_mm_for_euclid_dist_if_necessary", "use_mm_for_euclid_dist")
    if compute_mode not in modes + ("donot_use_mm_for_euclid_dist",):
        raise ValueError(f"cdist: unknown compute_mode {compute_mode!r}")
    if p == 2:
        batch = math.prod(np.broadcast_shapes(x1.shape[:-2], x2.shape[:-2]))
        differences = batch * x1.shape[-2] * x2.shape[-2] * x1.shape[-1]
        if compute_mode in modes[:2]:  # the (..., P, R, M) temporary only while it is small
            direct = differences <= _DIRECT_CDIST_ELEMENTS
        else:
            direct = compute_mode == "donot_use_mm_for_euclid_dist"
        return EuclideanDistance.apply(x1, x2, direct=direct)
    return norm(x1.unsqueeze(-2) - x2.unsqueeze(-3), p=p, dim=-1)


# ---- linalg ------------------------------------------------------------------------------
def _square(a: Tensor, what: str) -> None:
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"{what}: expected square matrices (..., n, n), got {tuple(a.shape)}")
    if a._array.dtype.kind != "f":
        raise TypeError(f"{what}: expected a float tensor, got {a.dtype}; call .float() first")


def _mT(a: Any) -> Any:  # noqa: N802 - the matrix transpose's name
    return get_array_module(a).swapaxes(a, -1, -2)


def _check_singular(a: Any, out: Any, what: str) -> None:
    """Raise numpy's LinAlgError for a singular matrix on CUDA, as numpy does on the CPU:
    cupy returns inf/nan there unless ``cupyx.errstate(linalg='raise')`` is set. A result
    that is not finite from finite input means a zero pivot; one host sync."""
    if not is_cuda_array(out):
        return
    xp = get_array_module(out)
    if bool(xp.logical_and(xp.isfinite(a).all(), ~xp.isfinite(out).all())):
        raise np.linalg.LinAlgError(f"{what}: Singular matrix")


class Inverse(Op):
    reads_output = True

    def forward(self, a: Any) -> Any:
        self.out = get_array_module(a).linalg.inv(a)
        _check_singular(a, self.out, "linalg.inv")
        return self.out

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        inverse_t = _mT(self.out)
        return (-xp.matmul(xp.matmul(inverse_t, grad), inverse_t),)


class Solve(Op):
    """``X`` with ``A @ X = B`` for matrices ``B`` (``solve`` turns a vector into a column)."""

    reads_inputs = True
    reads_output = True

    def forward(self, a: Any, b: Any) -> Any:
        xp = get_array_module(a)
        self.a, self.b_shape = a, b.shape
        batch = xp.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        a = xp.broadcast_to(a, batch + a.shape[-2:])
        b = xp.broadcast_to(b, batch + b.shape[-2:])
        self.out = xp.linalg.solve(a, b)
        _check_singular(xp.concatenate([a.reshape(-1), b.reshape(-1)]), self.out, "linalg.solve")
        return self.out

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        batch = grad.shape[:-2]
        a_t = xp.broadcast_to(_mT(self.a), batch + self.a.shape[-2:])
        grad_b = xp.linalg.solve(a_t, grad)
        grad_a = -xp.matmul(grad_b, _mT(self.out))
        return unbroadcast(grad_a, self.a.shape), unbroadcast(grad_b, self.b_shape)


def _adjugate_t(a: Any) -> Any:
    """``adj(a)^T``, det's derivative, through the SVD ``a = U S Vh``: ``det(U) det(Vh)
    U diag(prod_{j != i} s_j) Vh``. Defined for singular matrices too (rank n-1 gives a
    nonzero gradient), where ``det * inv(a)^T`` is not. Computed on the host: singular
    matrices are the rare case (the mask that picked them out has synchronised already)."""
    u, s, vh = np.linalg.svd(as_numpy(a))
    ones = np.ones_like(s[..., :1])
    before = np.cumprod(np.concatenate([ones, s[..., :-1]], axis=-1), axis=-1)
    after = np.cumprod(np.concatenate([ones, s[..., :0:-1]], axis=-1), axis=-1)[..., ::-1]
    sign = np.linalg.det(u) * np.linalg.det(vh)
    adjugate_t = sign[..., None, None] * ((u * (before * after)[..., None, :]) @ vh)
    return get_array_module(a).asarray(adjugate_t)


class Determinant(Op):
    reads_inputs = True
    reads_output = True

    def forward(self, a: Any) -> Any:
        self.a = a
        self.out = get_array_module(a).linalg.det(a)
        return self.out

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        a = self.a.reshape((-1,) + self.a.shape[-2:])
        det = self.out.reshape(-1)
        singular = det == 0
        if bool(singular.any()):  # one host sync on CUDA; inv would fail (or give inf) there
            cofactors = xp.empty_like(a)
            cofactors[singular] = _adjugate_t(a[singular])
            regular = ~singular
            if bool(regular.any()):
                invertible = a[regular]
                cofactors[regular] = det[regular][:, None, None] * _mT(xp.linalg.inv(invertible))
        else:
            cofactors = det[:, None, None] * _mT(xp.linalg.inv(a))
        return (grad[..., None, None] * cofactors.reshape(self.a.shape),)


def inv(A: Tensor) -> Tensor:  # noqa: N803 - PyTorch's argument name
    """The inverse of square matrices ``(..., n, n)``; a singular one raises numpy's
    LinAlgError, on CUDA too (checked on the device: one host sync)."""
    _square(A, "linalg.inv")
    return Inverse.apply(A)


def solve(A: Tensor, B: Tensor, *, left: bool = True) -> Tensor:  # noqa: N803
    """``X`` with ``A @ X = B``; ``B`` of shape ``(..., n)`` (one more dim than A less one,
    as PyTorch) is a vector, ``(..., n, k)`` matrices. ``left=False`` solves ``X @ A = B``."""
    _square(A, "linalg.solve")
    if not left:
        return solve(A.mT, B.mT).mT
    if B.ndim == 1 or (B.ndim == A.ndim - 1 and B.shape == A.shape[:-1]):
        return Solve.apply(A, B.unsqueeze(-1)).squeeze(-1)
    if B.shape[-2] != A.shape[-1]:
        raise ValueError(
            f"linalg.solve: B of shape {tuple(B.shape)} does not match A of shape "
            f"{tuple(A.shape)}; B needs {A.shape[-1]} rows"
        )
    return Solve.apply(A, B)


def det(A: Tensor) -> Tensor:  # noqa: N803
    """The determinant of square matrices ``(..., n, n)``; its gradient is the adjugate's
    transpose, as PyTorch's (also for singular matrices: nonzero at rank n-1)."""
    _square(A, "linalg.det")
    return Determinant.apply(A)


def vector_norm(
    x: Tensor, ord: float = 2, dim: Any = None, keepdim: bool = False, *, dtype: Any = None
) -> Tensor:
    """The vector ``ord``-norm over ``dim`` (every element when None): 2, 1, inf, -inf, 0
    or any number."""
    if isinstance(ord, str):
        raise ValueError(f"linalg.vector_norm: ord must be a number, got {ord!r}")
    return norm(x, ord, dim, keepdim, dtype)


def matrix_norm(
    A: Tensor,  # noqa: N803
    ord: Any = "fro",
    dim: tuple = (-2, -1),
    keepdim: bool = False,
    *,
    dtype: Any = None,
) -> Tensor:
    """The matrix norm over the two dims ``dim``: 'fro', or 1, -1, inf, -inf (the largest /
    smallest absolute column or row sum). 'nuc', 2 and -2 need singular values, which
    dtrain does not compute: a NotImplementedError."""
    if dtype is not None:
        A = A.to(dtype)  # noqa: N806 - PyTorch's argument name
    if len(dim) != 2:
        raise ValueError(f"linalg.matrix_norm: dim must name two dims, got {dim!r}")
    rows, cols = (normalize_dim(d, A.ndim) for d in dim)
    if rows == cols:
        raise ValueError(f"linalg.matrix_norm: dim {dim!r} names one dim twice")
    if ord == "fro":
        return norm(A, 2, (rows, cols), keepdim)
    if ord in (1, -1, math.inf, -math.inf):
        summed, kept = (rows, cols) if abs(ord) == 1 else (cols, rows)
        sums = A.abs().sum(summed, keepdim=True)
        out = sums.amax(kept, keepdim=True) if ord > 0 else sums.amin(kept, keepdim=True)
        return out if keepdim else out.squeeze((rows, cols))
    raise NotImplementedError(
        f"linalg.matrix_norm: ord={ord!r} needs singular values, which dtrain does not "
        "compute; use 'fro', 1, -1, inf or -inf"
    )


def linalg_norm(
    x: Tensor, ord: Any = None, dim: Any = None, keepdim: bool = False, *, dtype: Any = None
) -> Tensor:
    """``torch.linalg.norm``: a vector norm when ``dim`` is an int (or ``x`` is 1-D), a
    matrix norm when ``dim`` names two dims (or ``x`` is 2-D and ``ord`` is given); with
    neither ``ord`` nor ``dim``, the 2-norm of all the elements."""
    if ord is None and dim is None:
        return norm(x, 2, None, keepdim, dtype)
    if isinstance(dim, int) or (dim is not None and len(dim) == 1):
        return vector_norm(x, 2 if ord is None else ord, dim, keepdim, dtype=dtype)
    if dim is None:
        if x.ndim == 1:
            return vector_norm(x, ord, None, keepdim, dtype=dtype)
        if x.ndim != 2:
            raise ValueError(
                f"linalg.norm: ord={ord!r} without dim needs a 1-D or 2-D input, got "
                f"{x.ndim}-D; pass dim"
            )
        dim = (-2, -1)
    return matrix_norm(x, "fro" if ord is None else ord, tuple(dim), keepdim, dtype=dtype)


__all__ = [
    "addmm",
    "cdist",
    "det",
    "inv",
    "linalg_norm",
    "matrix_norm",
    "solve",
    "vector_norm",
]
