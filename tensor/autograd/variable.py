"""``Variable``: PyTorch's pre-0.4 wrapper, kept for old scripts.

Since PyTorch 0.4 a Variable is simply a tensor that carries a gradient
(``requires_grad=True``); ``Variable(t)`` survives in old code as a wrapper call.
"""

from __future__ import annotations

from typing import Any

from dtrain._tensor.tensor import Tensor


def Variable(data: Any, requires_grad: bool = False, volatile: bool = False) -> Tensor:  # noqa: N802 - PyTorch's name
    """``data`` as a tensor (the same memory when it is a tensor), a leaf that requires
    grad when ``requires_grad``. ``volatile`` was removed by PyTorch 0.4: use ``no_grad``.
    """
    if volatile:
        raise ValueError(
            "Variable(volatile=True) was removed in PyTorch 0.4; wrap the code in "
            "`with dtrain.no_grad():` instead"
        )
    if not isinstance(data, Tensor):
        raise TypeError(
            f"Variable(data) takes a Tensor, got {type(data).__name__}; make one with "
            "dtrain.tensor(data) first"
        )
    leaf = data.detach()
    if requires_grad:
        leaf.requires_grad_(True)
    return leaf
