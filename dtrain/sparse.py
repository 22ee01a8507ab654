"""``dt.sparse``: sparse tensors are not offered; each name raises ``NotImplementedError``
saying so (``torch.sparse.mm`` in a ported script fails with that, not an AttributeError)."""

from __future__ import annotations

from typing import Any

from dtrain._tensor.methods_sparse import not_offered


def mm(*args: Any, **kwargs: Any) -> Any:
    """Not offered: raises ``NotImplementedError``."""
    raise not_offered("dt.sparse.mm")


def addmm(*args: Any, **kwargs: Any) -> Any:
    """Not offered: raises ``NotImplementedError``."""
    raise not_offered("dt.sparse.addmm")


def sum(*args: Any, **kwargs: Any) -> Any:
    """Not offered: raises ``NotImplementedError``."""
    raise not_offered("dt.sparse.sum")


def softmax(*args: Any, **kwargs: Any) -> Any:
    """Not offered: raises ``NotImplementedError``."""
    raise not_offered("dt.sparse.softmax")


def sparse_coo_tensor(*args: Any, **kwargs: Any) -> Any:
    """Not offered: raises ``NotImplementedError``."""
    raise not_offered("dt.sparse_coo_tensor")


def sparse_csr_tensor(*args: Any, **kwargs: Any) -> Any:
    """Not offered: raises ``NotImplementedError``."""
    raise not_offered("dt.sparse_csr_tensor")


__all__ = ["addmm", "mm", "softmax", "sparse_coo_tensor", "sparse_csr_tensor", "sum"]
