"""In-place shape changes: ``squeeze_``, ``unsqueeze_``, ``transpose_``, ``swapaxes_`` /
``swapdims_`` and ``t_``. The tensor takes the new shape (a view of its memory) and, while
autograd records, the view op's history; as for the other in-place ops, a leaf that
requires grad may only be changed under ``no_grad``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dtrain._tensor.ops.inplace import _check_target, _records
from dtrain._tensor.ops.shape import squeeze, transpose, unsqueeze
from dtrain._tensor.tensor import Tensor, rebase


def _reshape_in_place(tensor: Tensor, compute: Callable[[Tensor], Tensor], name: str) -> Tensor:
    if _records(tensor):
        _check_target(tensor, name)
        result = compute(tensor)
        tensor._array = result._array
        rebase(tensor, result.grad_fn)
    else:
        tensor._array = compute(tensor.detach())._array
    tensor._version[0] += 1
    return tensor


def t(input: Tensor) -> Tensor:
    """The transpose of a matrix; a 0-d or 1-D tensor as it is."""
    if input.ndim > 2:
        raise ValueError(
            f"t: expects a tensor with at most 2 dims, got shape {tuple(input.shape)}; use "
            "transpose(dim0, dim1) or .mT"
        )
    return transpose(input, 0, 1) if input.ndim == 2 else input


def squeeze_(tensor: Tensor, dim: Any = None) -> Tensor:
    """In place: ``squeeze``."""
    return _reshape_in_place(tensor, lambda x: squeeze(x, dim), "squeeze_")


def unsqueeze_(tensor: Tensor, dim: int) -> Tensor:
    """In place: ``unsqueeze``."""
    return _reshape_in_place(tensor, lambda x: unsqueeze(x, dim), "unsqueeze_")


def transpose_(tensor: Tensor, dim0: int, dim1: int) -> Tensor:
    """In place: ``transpose`` (also ``swapaxes_`` / ``swapdims_``)."""
    return _reshape_in_place(tensor, lambda x: transpose(x, dim0, dim1), "transpose_")


def t_(tensor: Tensor) -> Tensor:
    """In place: ``t``."""
    return _reshape_in_place(tensor, t, "t_")
