"""Views whose base was changed in place after they were taken.

``v = y[0:2]; y.mul_(3)`` changes ``v``'s values too (they share memory), but ``v``'s
``grad_fn`` still says it is a slice of the old ``y``. PyTorch rebases such a view on its
base's new history when it is next used; so does dtrain: ``Op.apply`` and ``backward()``
find a view whose base's ``grad_fn`` is no longer the one it was taken from, and give it
a new one, ``ViewOfBase``, whose gradient is the view's gradient placed where the view's
elements lie in its base.
"""

from __future__ import annotations

from typing import Any

from dtrain._tensor.autograd.grad_mode import enable_grad
from dtrain._tensor.autograd.op import Op
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.backend import data_pointer, get_array_module


class ViewOfBase(Op):
    """The view, read as it lies in its base's memory (no copy)."""

    def forward(self, base: Any, view: Any, offset: int) -> Any:
        self.base_shape, self.view_strides, self.offset = base.shape, view.strides, offset
        return view

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        full = xp.zeros(self.base_shape, dtype=grad.dtype)
        flat = full.reshape(-1)[self.offset :]
        xp.lib.stride_tricks.as_strided(flat, grad.shape, self.view_strides)[...] = grad
        return (full,)


def is_stale(view: Tensor) -> bool:
    """Whether ``view``'s base got a new history (an in-place op) since it was taken."""
    base = view._base
    return base is not None and base.grad_fn is not view._base_fn


def refresh(view: Tensor) -> None:
    """Give a stale ``view`` its base's current history, in place."""
    base = view._base
    if not base._requires_grad:  # the base left the graph (e.g. fill_): so does the view
        view.grad_fn, view._requires_grad, view._base_fn = None, False, base.grad_fn
        return
    array, whole = view._array, base._array
    if (
        array.dtype != whole.dtype
        or not whole.flags.c_contiguous
        or 0 in array.strides
        or any(stride < 0 for stride in array.strides)
    ):
        raise RuntimeError(
            f"a view of shape {tuple(array.shape)} was taken from a tensor that was then "
            "changed in place while autograd recorded it, and dtrain cannot place this "
            "view's gradient in its base (an expanded, reinterpreted or reversed view). "
            "Take the view again after the in-place change, or change a .clone() instead"
        )
    offset = (data_pointer(array) - data_pointer(whole)) // whole.itemsize
    with enable_grad():  # backward() may be called under no_grad; the node is needed
        node = ViewOfBase.apply(base, array, offset=offset).grad_fn
    view.grad_fn, view._requires_grad, view._base_fn = node, True, base.grad_fn
