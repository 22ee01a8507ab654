"""Products and norms beyond ``@``: mm, bmm, outer, einsum, norm; cholesky,
solve_triangular and cholesky_solve."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dtrain._tensor.amp.cast import autocast_inputs
from dtrain._tensor.autograd.op import Op
from dtrain._tensor.ops._util import expand_reduced, normalize_dims, unbroadcast
from dtrain._tensor.ops.matmul import matmul
from dtrain._tensor.ops.shape import _tensor_list, reshape
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.backend import get_array_module
from dtrain.runtime.dtypes import accumulation_dtype


def mm(input: Tensor, mat2: Tensor) -> Tensor:
    """The product of two matrices (2-D only; ``matmul`` broadcasts)."""
    if input.ndim != 2 or mat2.ndim != 2:
        raise ValueError(
            f"mm: expected two 2-D tensors, got shapes {tuple(input.shape)} and "
            f"{tuple(mat2.shape)}; use matmul (or @) for other shapes"
        )
    return matmul(input, mat2)


def bmm(input: Tensor, mat2: Tensor) -> Tensor:
    """Batched matrix product of ``(b, n, m)`` and ``(b, m, p)`` tensors (no broadcasting)."""
    if input.ndim != 3 or mat2.ndim != 3 or input.shape[0] != mat2.shape[0]:
        raise ValueError(
            f"bmm: expected 3-D tensors with the same batch size, got shapes "
            f"{tuple(input.shape)} and {tuple(mat2.shape)}; use matmul to broadcast"
        )
    return matmul(input, mat2)


def outer(input: Tensor, vec2: Tensor) -> Tensor:
    """The outer product of two 1-D tensors: ``out[i, j] = input[i] * vec2[j]``."""
    if input.ndim != 1 or vec2.ndim != 1:
        raise ValueError(
            f"outer: expected two 1-D tensors, got shapes {tuple(input.shape)} and "
            f"{tuple(vec2.shape)}"
        )
    return reshape(input, -1, 1) * reshape(vec2, 1, -1)


# ---- einsum ------------------------------------------------------------------------------
class Einsum(Op):
    """numpy/cupy einsum. The gradient of operand i is the einsum of the output gradient
    with the other operands, written to operand i's subscripts; a letter only operand i
    has (summed in forward) is broadcast back, one where operand i has size 1 but the
    others more (broadcast in forward) is summed."""

    reads_inputs = True

    def forward(self, *arrays: Any, subscripts: list, output: str, sizes: dict) -> Any:
        self.arrays, self.subscripts, self.output, self.sizes = arrays, subscripts, output, sizes
        spec = ",".join(subscripts) + "->" + output
        return get_array_module(*arrays).einsum(spec, *arrays, optimize=_optimize(arrays))

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        grads = []
        for i, needed in enumerate(self.needs_input_grad):
            if not needed:
                grads.append(None)
                continue
            mine, shape = self.subscripts[i], self.arrays[i].shape
            others = [s for j, s in enumerate(self.subscripts) if j != i]
            seen = set(self.output).union(*others)
            # Letters computed by the product: present elsewhere, at full size here.
            kept = "".join(c for c, n in zip(mine, shape) if c in seen and n == self.sizes[c])
            spec = ",".join([self.output, *others]) + "->" + kept
            operands = [grad, *(a for j, a in enumerate(self.arrays) if j != i)]
            part = xp.einsum(spec, *operands, optimize=_optimize(operands))
            for axis, c in enumerate(mine):
                if c not in kept:
                    part = xp.expand_dims(part, axis)
            # (a copy, not ascontiguousarray: that makes a 0-d operand's gradient 1-d)
            grads.append(xp.broadcast_to(part, shape).astype(grad.dtype, copy=True))
        return tuple(grads)


def _optimize(arrays: list) -> bool:
    """Whether einsum should plan its contraction: for three operands or more, and for
    large ones (it then runs as BLAS products, ~3x faster on attention-sized inputs); the
    planning costs ~15 us, more than a tiny product takes."""
    return len(arrays) > 2 or max(a.size for a in arrays) > 4096


def _parse_einsum(equation: str, shapes: list) -> tuple[list, str]:
    """Subscripts per operand and the output's, with ``...`` replaced by letters."""
    equation = equation.replace(" ", "")
    lhs, arrow, rhs = equation.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise ValueError(
            f"einsum: the equation {equation!r} names {len(terms)} operands but "
            f"{len(shapes)} were given"
        )
    used = set(equation) - set(".,->")
    spare = iter(c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz" if c not in used)
    ellipsis_letters = ""
    subscripts = []
    for term, shape in zip(terms, shapes):
        if "..." in term:
            count = len(shape) - (len(term) - 3)
            if count < 0:
                raise ValueError(f"einsum: {term!r} has more letters than its operand has dims")
            while len(ellipsis_letters) < count:
                ellipsis_letters = next(spare) + ellipsis_letters
            term = term.replace("...", ellipsis_letters[len(ellipsis_letters) - count :])
        if len(term) != len(shape):
            raise ValueError(
                f"einsum: subscripts {term!r} do not match an operand of shape {tuple(shape)}"
            )
        if len(set(term)) != len(term):
            raise NotImplementedError(
                f"einsum: a letter repeated within one operand ({term!r}, a diagonal) is not "
                "supported; take the diagonal with dtrain.diag or indexing first"
            )
        subscripts.append(term)
    if arrow:
        output = rhs.replace("...", ellipsis_letters)
    else:  # implicit mode: broadcast dims, then the letters used once, in order
        letters = "".join(subscripts)
        single = sorted(c for c in set(letters) if letters.count(c) == 1 and c in used)
        output = ellipsis_letters + "".join(single)
    return subscripts, output


def einsum(equation: str, *operands: Any) -> Tensor:
    """Einstein summation, as ``torch.einsum('bhqd,bhkd->bhqk', q, k)``; differentiable.
    ``...`` and broadcasting of size-1 dims work; a letter repeated within one operand (a
    diagonal) is refused."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    operands = tuple(_tensor_list(operands, "einsum"))
    operands = autocast_inputs("lower", *operands)
    subscripts, output = _parse_einsum(equation, [t.shape for t in operands])
    sizes: dict = {}
    for term, t in zip(subscripts, operands):
        for c, n in zip(term, t.shape):
            if sizes.get(c, 1) not in (1, n) and n != 1:
                raise ValueError(
                    f"einsum: letter {c!r} has sizes {sizes[c]} and {n} in {equation!r}"
                )
            sizes[c] = max(sizes.get(c, 1), n)
    for c in output:
        if c not in sizes:
            raise ValueError(f"einsum: output letter {c!r} appears in no operand")
    return Einsum.apply(*operands, subscripts=subscripts, output=output, sizes=sizes)


# ---- norm --------------------------------------------------------------------------------
class Norm(Op):
    """The vector p-norm over ``axes``. Where the norm is 0 the gradient is 0 (PyTorch's
    choice), for every p; for p = ±inf the elements that attain it share it evenly."""

    reads_inputs = True
    reads_output = True

    def forward(self, x: Any, p: float, axes: tuple | None, keepdim: bool) -> Any:
        xp = get_array_module(x)
        self.p, self.axes, self.keepdim, self.dtype = p, axes, keepdim, x.dtype
        x = self.x = x.astype(accumulation_dtype(x.dtype), copy=False)  # float16 overflows
        magnitude = xp.abs(x)
        if p == math.inf:
            out = magnitude.max(axis=axes, keepdims=True)
        elif p == -math.inf:
            out = magnitude.min(axis=axes, keepdims=True)
        elif p == 0:
            out = (x != 0).sum(axis=axes, keepdims=True).astype(x.dtype)
        elif p == 1:
            out = magnitude.sum(axis=axes, keepdims=True)
        elif p == 2:
            out = xp.sqrt((x * x).sum(axis=axes, keepdims=True))
        else:
            out = (magnitude**p).sum(axis=axes, keepdims=True) ** (1 / p)
        self.out = xp.asarray(out, dtype=x.dtype)
        result = self.out.astype(self.dtype, copy=False)
        return result if keepdim else result.reshape(_reduced(x.shape, axes))

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        x, p, out = self.x, self.p, self.out
        grad = expand_reduced(grad, self.axes, self.keepdim, x.shape, xp)
        grad = grad.reshape(x.shape) if grad.shape != x.shape else grad
        zero = grad.dtype.type(0)
        if p == 0:
            return (xp.zeros_like(x),)
        if p == 1:
            return (grad * xp.sign(x),)
        if p in (math.inf, -math.inf):
            hit = xp.abs(x) == out
            count = hit.sum(axis=self.axes, keepdims=True).astype(grad.dtype)
            return (grad * xp.sign(x) * hit / xp.maximum(count, 1),)
        safe = xp.where(out == 0, 1, out)
        if p == 2:
            scale = x / safe
        else:  # |x| ** (p - 2) is inf at 0 for p < 2: a zero element's gradient is 0
            with np.errstate(divide="ignore", invalid="ignore"):
                scale = x * xp.abs(x) ** (p - 2) / safe ** (p - 1)
            scale = xp.where(x == 0, 0, scale)
        return (xp.where(out == 0, zero, grad * scale).astype(grad.dtype, copy=False),)


def _reduced(shape: tuple, axes: tuple | None) -> tuple:
    if axes is None:
        return ()
    return tuple(n for i, n in enumerate(shape) if i not in axes)


def norm(
    input: Tensor, p: Any = "fro", dim: Any = None, keepdim: bool = False, dtype: Any = None
) -> Tensor:
    """The vector p-norm of ``input`` over ``dim`` (every element when None): p = 2 (or
    'fro'), 1, inf, -inf, 0 or any other number. Float tensors only, as PyTorch."""
    if dtype is not None:
        input = input.to(dtype)
    if input._array.dtype.kind != "f":
        raise TypeError(
            f"norm: expected a floating-point tensor, got {input.dtype}; call .float() first"
        )
    if p == "fro" or p is None:
        p = 2
    elif isinstance(p, str):
        raise NotImplementedError(
            f"norm: p={p!r} (a matrix norm) is not supported; use p='fro', or a number"
        )
    axes = normalize_dims(dim, input.ndim)
    return Norm.apply(input, p=float(p), axes=axes, keepdim=keepdim)


# ---- cholesky and triangular solves ------------------------------------------------------
def _mT(a: Any) -> Any:  # noqa: N802 - the matrix transpose's name
    return get_array_module(a).swapaxes(a, -1, -2)


def _triangle(a: Any, upper: bool, unitriangular: bool = False) -> Any:
    xp = get_array_module(a)
    t = xp.triu(a) if upper else xp.tril(a)
    if unitriangular:
        n = a.shape[-1]
        t = t * (1 - xp.eye(n, dtype=a.dtype)) + xp.eye(n, dtype=a.dtype)
    return t


def _solve_lower_or_upper(a: Any, b: Any, upper: bool, left: bool, unitriangular: bool) -> Any:
    """``X`` with ``A X = B`` (``X A = B`` if not ``left``), ``A`` the triangle of ``a``:
    LAPACK's general solver on the triangular matrix (numpy and cupy have no triangular one
    without scipy); batch dims broadcast."""
    xp = get_array_module(a)
    t = _triangle(a, upper, unitriangular)
    if not left:
        return _mT(_solve_lower_or_upper(_mT(t), _mT(b), not upper, True, False))
    batch = np.broadcast_shapes(t.shape[:-2], b.shape[:-2])
    t = xp.broadcast_to(t, batch + t.shape[-2:])
    b = xp.broadcast_to(b, batch + b.shape[-2:])
    try:
        return xp.linalg.solve(t, b)
    except np.linalg.LinAlgError:  # a zero on the diagonal: inf/NaN as PyTorch, no raise
        return _substitute(t, b, upper)


def _substitute(t: Any, b: Any, upper: bool) -> Any:
    """Forward (back, if ``upper``) substitution, one row of every matrix per step, so a
    zero pivot gives inf/NaN as LAPACK's ``trtrs`` (PyTorch) instead of raising."""
    xp = get_array_module(t)
    n = t.shape[-1]
    x = xp.zeros(b.shape, dtype=np.result_type(t.dtype, b.dtype))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for i in reversed(range(n)) if upper else range(n):
            partial = xp.matmul(t[..., i : i + 1, :], x)[..., 0, :]  # unsolved rows are 0
            x[..., i, :] = (b[..., i, :] - partial) / t[..., i, i : i + 1]
    return x


class Cholesky(Op):
    """The lower Cholesky factor; backward as PyTorch's (Murray 2016): with
    ``P = tril(L^T gL)`` halved on the diagonal and symmetrised,
    ``gA = L^-T P L^-1`` (symmetric)."""

    reads_output = True

    def forward(self, a: Any, check: bool) -> Any:
        xp = get_array_module(a)
        try:
            self.out = xp.linalg.cholesky(a)
        except np.linalg.LinAlgError:
            raise np.linalg.LinAlgError(
                "linalg.cholesky: the input is not positive-definite; check the matrix, or add "
                "a small multiple of the identity"
            ) from None
        # cupy fills NaN instead of raising: one host read
        if check and type(a) is not np.ndarray and not bool(xp.isfinite(self.out).all()):
            raise np.linalg.LinAlgError(
                "linalg.cholesky: the input is not positive-definite; check the matrix"
            )
        return self.out

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        lower = self.out
        phi = xp.tril(xp.matmul(_mT(lower), grad))
        phi = 0.5 * (phi + _mT(xp.tril(phi, -1)))
        g = _solve_lower_or_upper(_mT(lower), phi, True, True, False)
        g = _solve_lower_or_upper(lower, g, False, False, False)
        return (g.astype(grad.dtype, copy=False),)


class SolveTriangular(Op):
    reads_inputs = True
    reads_output = True

    def forward(self, a: Any, b: Any, upper: bool, left: bool, unitriangular: bool) -> Any:
        self.a, self.b_shape = a, b.shape
        self.upper, self.left, self.unitriangular = upper, left, unitriangular
        self.out = _solve_lower_or_upper(a, b, upper, left, unitriangular)
        return self.out

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        a_t = _mT(_triangle(self.a, self.upper, self.unitriangular))
        grad_b = _solve_lower_or_upper(a_t, grad, not self.upper, self.left, False)
        grad_a = None
        if self.needs_input_grad[0]:
            if self.left:
                grad_a = -xp.matmul(grad_b, _mT(self.out))
            else:
                grad_a = -xp.matmul(_mT(self.out), grad_b)
            grad_a = (
                xp.triu(grad_a, int(self.unitriangular))
                if self.upper
                else (xp.tril(grad_a, -int(self.unitriangular)))
            )
            grad_a = unbroadcast(grad_a, self.a.shape)
        return grad_a, unbroadcast(grad_b, self.b_shape)


def _check_matrices(what: str, *tensors: Tensor) -> None:
    for t in tensors:
        if t.ndim < 2:
            raise ValueError(f"{what}: expected matrices (..., n, k), got shape {tuple(t.shape)}")
        if t._array.dtype.kind != "f":
            raise TypeError(f"{what}: expected float tensors, got {t.dtype}; call .float() first")


def cholesky(input: Tensor, *, upper: bool = False) -> Tensor:
    """The Cholesky factor ``L`` (lower; ``upper=True`` gives ``L^T``) of symmetric
    positive-definite matrices ``(..., n, n)``; only the lower triangle is read. On CUDA the
    check for a non-positive-definite input reads one flag back from the device.

    Raises:
        ValueError: ``input`` is not a batch of square matrices.
        numpy.linalg.LinAlgError: a matrix is not positive-definite (PyTorch raises its
            ``torch.linalg.LinAlgError``, a RuntimeError).
    """
    _check_matrices("linalg.cholesky", input)
    if input.shape[-1] != input.shape[-2]:
        raise ValueError(f"linalg.cholesky: expected square matrices, got {tuple(input.shape)}")
    out = Cholesky.apply(input, check=True)
    return out.mT if upper else out


def cholesky_unchecked(input: Tensor) -> Tensor:
    """``cholesky`` without the CUDA check (NaN for a non-positive-definite matrix there)."""
    return Cholesky.apply(input, check=False)


def solve_triangular(
    A: Tensor,  # noqa: N803 - PyTorch's name
    B: Tensor,  # noqa: N803
    *,
    upper: bool,
    left: bool = True,
    unitriangular: bool = False,
) -> Tensor:
    """``X`` with ``A X = B`` (``X A = B`` if ``left=False``) for triangular ``A`` (only
    its ``upper`` or lower triangle is read; ``unitriangular`` takes its diagonal as ones).
    Batch dims broadcast. dtrain runs LAPACK's general solver on the triangle (numpy has no
    triangular solver): the same result to rounding, at LU's cost.

    Raises:
        ValueError: the shapes do not fit.
    """
    _check_matrices("linalg.solve_triangular", A, B)
    n = A.shape[-1]
    if A.shape[-2] != n or (B.shape[-2] if left else B.shape[-1]) != n:
        raise ValueError(
            f"linalg.solve_triangular: A {tuple(A.shape)} must be square and fit B "
            f"{tuple(B.shape)} (left={left})"
        )
    if A.dtype != B.dtype:
        raise TypeError(f"linalg.solve_triangular: A is {A.dtype} but B is {B.dtype}")
    return SolveTriangular.apply(A, B, upper=upper, left=left, unitriangular=unitriangular)


class CholeskySolve(Op):
    """``X = (L L^T)^-1 B``; backward as PyTorch's: ``gB = (L L^T)^-1 gX`` and the full
    matrix ``gL = -(gB X^T + X gB^T) L`` (``-L (...)`` for an upper factor), whose
    triangle is the true gradient (the other half is what PyTorch returns there too). For a
    factor whose unused triangle is not zero, PyTorch's ``gL`` differs beyond the first
    column; a true Cholesky factor gives both the same."""

    reads_inputs = True
    reads_output = True

    def forward(self, b: Any, factor: Any, upper: bool) -> Any:
        self.factor, self.b_shape, self.upper = factor, b.shape, upper
        self.out = self._solve(factor, b)
        return self.out

    def _solve(self, factor: Any, b: Any) -> Any:
        if self.upper:  # A = U^T U
            y = _solve_lower_or_upper(_mT(factor), b, False, True, False)
            return _solve_lower_or_upper(factor, y, True, True, False)
        y = _solve_lower_or_upper(factor, b, False, True, False)
        return _solve_lower_or_upper(_mT(factor), y, True, True, False)

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        grad_b = self._solve(self.factor, grad)
        grad_factor = None
        if self.needs_input_grad[1]:
            common = xp.matmul(grad_b, _mT(self.out))
            common = common + _mT(common)
            factor = _triangle(self.factor, self.upper)
            grad_factor = -(xp.matmul(factor, common) if self.upper else xp.matmul(common, factor))
            grad_factor = unbroadcast(grad_factor, self.factor.shape)
        return unbroadcast(grad_b, self.b_shape), grad_factor


def cholesky_solve(B: Tensor, L: Tensor, upper: bool = False) -> Tensor:  # noqa: N803
    """``X`` with ``A X = B`` given ``A``'s Cholesky factor ``L`` (``upper``: ``A = U^T U``
    with ``U = L``); only ``L``'s triangle is read. Batch dims broadcast. The gradient for
    ``L`` is PyTorch's full matrix (its other triangle included).

    Raises:
        ValueError: the shapes do not fit.
    """
    _check_matrices("cholesky_solve", B, L)
    n = L.shape[-1]
    if L.shape[-2] != n or B.shape[-2] != n:
        raise ValueError(
            f"cholesky_solve: L {tuple(L.shape)} must be square and fit B {tuple(B.shape)}"
        )
    if L.dtype != B.dtype:
        raise TypeError(f"cholesky_solve: B is {B.dtype} but L is {L.dtype}")
    return CholeskySolve.apply(B, L, upper=upper)
