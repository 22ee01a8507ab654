"""Views whose base was changed in place after they were taken.

``v = y[0:2]; y.mul_(3)`` changes ``v``'s values too (they share memory), but ``v``'s
``grad_fn`` still says it is a slice of the old ``y``. PyTorch rebases such a view on its
base's new history when it is next used; so does dtrain. A view taken while autograd
records remembers its base's ``grad_fn`` and version (``mark_view``); ``Op.apply``,
``backward()`` and the other places that read a tensor's history (``refresh_if_stale``)
find a view whose base has another ``grad_fn`` since, and, when the base's values changed
too, give the view a new node, ``ViewOfBase``: the view read where it lies in the base, its
gradient placed there. (A view taken under ``no_grad`` is outside the graph, as
``detach()``'s, and is never rebased.)
"""

from __future__ import annotations

from typing import Any

from dtrain._tensor.autograd.grad_mode import enable_grad
from dtrain._tensor.autograd.grad_mode import state as _grad_state
from dtrain._tensor.autograd.op import Op
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.backend import data_pointer, get_array_module, may_share_memory


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


def refresh_if_stale(tensor: Tensor) -> None:
    """``refresh`` a stale view, while autograd records (for code that reads its history)."""
    if _grad_state.enabled and is_stale(tensor):
        refresh(tensor)


def refresh(view: Tensor) -> None:
    """Give a stale ``view`` its base's current history, in place."""
    base = view._base
    if base._version[0] == view._base_version:  # a new node, same values (detach_)
        view._base_fn = base.grad_fn
        return
    if not base._requires_grad:  # the base left the graph (e.g. fill_): so does the view
        view.grad_fn, view._requires_grad = None, False
        view._base_fn, view._base_version = base.grad_fn, base._version[0]
        return
    array, whole = view._array, base._array
    offset = (data_pointer(array) - data_pointer(whole)) // whole.itemsize
    if not _placeable(array, whole, offset):
        raise RuntimeError(
            f"a view of shape {tuple(array.shape)} was taken from a tensor that was then "
            "changed in place while autograd recorded it, and dtrain cannot place this "
            "view's gradient in its base (an expanded, reinterpreted or reversed view, or "
            "one whose base's memory was replaced). Take the view again after the in-place "
            "change, or change a .clone() instead"
        )
    with enable_grad():  # backward() may be called under no_grad; the node is needed
        node = ViewOfBase.apply(base, array, offset=offset).grad_fn
    view.grad_fn, view._requires_grad = node, True
    view._base_fn, view._base_version = base.grad_fn, base._version[0]
    if view._hooks is not None and "retain" in view._hooks:
        view.retain_grad()  # a retained gradient follows the view's newest history


def _placeable(array: Any, whole: Any, offset: int) -> bool:
    """Whether ``array`` is a view of ``whole``'s memory with elements that a strided
    window of a C-contiguous array of ``whole``'s shape holds, each once."""
    if array.dtype != whole.dtype or not whole.flags.c_contiguous or offset < 0:
        return False
    if array.size == 0:
        return offset <= whole.size
    last = offset
    for size, stride in zip(array.shape, array.strides):
        if size > 1:  # a dim of one element may have any stride (numpy gives None's 0)
            if stride <= 0 or stride % whole.itemsize:
                return False
            last += (size - 1) * stride // whole.itemsize
    return last < whole.size and may_share_memory(array, whole)
