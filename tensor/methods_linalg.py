"""The small linear algebra methods of ``Tensor``: dot, mv, inner, kron, trace, addmv,
addr, baddbmm, addbmm, matrix_power, inverse, det, logdet, slogdet, cross, and the
in-place ``add*_`` forms.

Each is a door to the function of the same name in ``dtrain._tensor.functions``, which
``methods.bind`` sets as ``_fn`` here once every op module has loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dtrain._tensor.tensor import Tensor

_fn: Any = None


class LinalgMethods:
    """Mixed into ``Tensor`` through ``TensorMethods``: products and matrix functions."""

    __slots__ = ()

    def dot(self, tensor: Tensor) -> Tensor:
        return _fn.dot(self, tensor)

    def vdot(self, other: Tensor) -> Tensor:
        return _fn.vdot(self, other)

    def mv(self, vec: Tensor) -> Tensor:
        return _fn.mv(self, vec)

    def inner(self, other: Tensor) -> Tensor:
        return _fn.inner(self, other)

    def kron(self, other: Tensor) -> Tensor:
        return _fn.kron(self, other)

    def trace(self) -> Tensor:
        return _fn.trace(self)

    def addmv(self, mat: Tensor, vec: Tensor, *, beta: float = 1, alpha: float = 1) -> Tensor:
        return _fn.addmv(self, mat, vec, beta=beta, alpha=alpha)

    def addr(self, vec1: Tensor, vec2: Tensor, *, beta: float = 1, alpha: float = 1) -> Tensor:
        return _fn.addr(self, vec1, vec2, beta=beta, alpha=alpha)

    def baddbmm(
        self, batch1: Tensor, batch2: Tensor, *, beta: float = 1, alpha: float = 1
    ) -> Tensor:
        return _fn.baddbmm(self, batch1, batch2, beta=beta, alpha=alpha)

    def addbmm(
        self, batch1: Tensor, batch2: Tensor, *, beta: float = 1, alpha: float = 1
    ) -> Tensor:
        return _fn.addbmm(self, batch1, batch2, beta=beta, alpha=alpha)

    def addmv_(self, mat: Tensor, vec: Tensor, *, beta: float = 1, alpha: float = 1) -> Tensor:
        return _fn.add_product_(self, _fn.addmv, mat, vec, beta=beta, alpha=alpha)

    def addr_(self, vec1: Tensor, vec2: Tensor, *, beta: float = 1, alpha: float = 1) -> Tensor:
        return _fn.add_product_(self, _fn.addr, vec1, vec2, beta=beta, alpha=alpha)

    def baddbmm_(
        self, batch1: Tensor, batch2: Tensor, *, beta: float = 1, alpha: float = 1
    ) -> Tensor:
        return _fn.add_product_(self, _fn.baddbmm, batch1, batch2, beta=beta, alpha=alpha)

    def addbmm_(
        self, batch1: Tensor, batch2: Tensor, *, beta: float = 1, alpha: float = 1
    ) -> Tensor:
        return _fn.add_product_(self, _fn.addbmm, batch1, batch2, beta=beta, alpha=alpha)

    def addmm_(self, mat1: Tensor, mat2: Tensor, *, beta: float = 1, alpha: float = 1) -> Tensor:
        return _fn.add_product_(self, _fn.addmm, mat1, mat2, beta=beta, alpha=alpha)

    def matrix_power(self, n: int) -> Tensor:
        return _fn.matrix_power(self, n)

    def inverse(self) -> Tensor:
        return _fn.inverse(self)

    def det(self) -> Tensor:
        return _fn.det(self)

    def logdet(self) -> Tensor:
        return _fn.logdet(self)

    def slogdet(self) -> Any:
        return _fn.slogdet(self)

    def cross(self, other: Tensor, dim: int | None = None) -> Tensor:
        return _fn.cross(self, other, dim)

    def ger(self, vec2: Tensor) -> Tensor:
        return _fn.ger(self, vec2)
