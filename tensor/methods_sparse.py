"""Sparse tensors, which dtrain does not offer: the names PyTorch scripts reach for answer
as a dense-only library should (``is_sparse`` False, ``to_dense`` the tensor itself) or raise
a ``NotImplementedError`` that says so, instead of an ``AttributeError``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dtrain._tensor.tensor import Tensor


def not_offered(name: str) -> NotImplementedError:
    """The error every sparse entry point raises."""
    return NotImplementedError(
        f"{name}: sparse tensors are not offered by dtrain (docs/porting.md); keep the "
        "tensor dense (an adjacency matrix as a dense tensor, multiplied with @)"
    )


class SparseMethods:
    """Mixed into ``Tensor`` through ``TensorMethods``."""

    __slots__ = ()

    @property
    def is_sparse(self) -> bool:
        """False: every dtrain tensor is dense."""
        return False

    def to_dense(self, dtype: Any = None) -> Tensor:
        """The tensor itself (it is dense), or a copy in ``dtype``."""
        return self if dtype is None else self.to(dtype)

    def to_sparse(self, *args: Any, **kwargs: Any) -> Tensor:
        """Not offered: raises ``NotImplementedError``."""
        raise not_offered("Tensor.to_sparse")

    def to_sparse_csr(self, *args: Any, **kwargs: Any) -> Tensor:
        """Not offered: raises ``NotImplementedError``."""
        raise not_offered("Tensor.to_sparse_csr")

    def to_sparse_coo(self, *args: Any, **kwargs: Any) -> Tensor:
        """Not offered: raises ``NotImplementedError``."""
        raise not_offered("Tensor.to_sparse_coo")
