"""Hub and taps: make the engine hand one node the gradients of several tensors at once.

Each tensor is routed through an identity node, a ``Tap``, and every tap leads to one node,
a ``Hub``. A tap's backward stores its gradient in the hub's slot and sends the hub a token
(``ARRIVED``). The engine runs a node only once every consumer has sent its gradient, so the
hub runs once per backward, with every slot filled that a gradient reached (None in the
others), and returns one gradient per parent. The caller chooses the hub's parents: the
tensors themselves (a module's backward hooks) or other tensors (a checkpointed segment's
inputs and parameters).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.tensor import Tensor, wrap


class Arrived:
    """What a tap sends its hub: the gradient itself goes into the hub's slot. The engine
    adds what several consumers send a node; adding arrivals is one arrival."""

    def __add__(self, other: Any) -> Arrived:
        return self

    __radd__ = __add__


ARRIVED = Arrived()


class Hub(Op):
    """Gathers the taps' gradients, one slot per tap, and hands ``run`` all of them;
    ``run`` returns one gradient per parent (set ``parents`` and ``needs_input_grad``)."""

    returns_own_grads = False  # ``run`` may return arrays it keeps

    def __init__(self, slots: int, run: Callable[[list], tuple]) -> None:
        self.slots: list = [None] * slots
        self.run = run

    def backward(self, grad: Any) -> tuple:
        grads, self.slots = self.slots, [None] * len(self.slots)  # fresh for a retained graph
        return self.run(grads)


class Tap(Op):
    """The identity on one tensor: its gradient goes to the hub's slot."""

    returns_own_grads = False

    def __init__(self, hub: Hub, slot: int) -> None:
        self.hub, self.slot = hub, slot

    def backward(self, grad: Any) -> tuple:
        self.hub.slots[self.slot] = grad
        return (ARRIVED,)


def route(hub: Hub, tensors: list, tap: type[Tap] = Tap, views: bool = False) -> list:
    """``tensors`` (None where there is nothing to route) each routed through a ``tap`` into
    ``hub``'s slot of the same index; the same list with the routed tensors in their places.
    With ``views``, each is a view of its tensor, so changing it in place is refused, as in
    PyTorch: the caller keeps the original, whose history would not see the change."""
    out = []
    for slot, t in enumerate(tensors):
        if t is None:
            out.append(None)
            continue
        node = tap(hub, slot)
        node.parents, node.needs_input_grad = (hub,), (True,)
        routed = wrap(t._array, node)
        routed._version = t._version  # the same memory: in-place changes count for both
        if views:
            base = routed._base = t if t._base is None else t._base
            routed._base_fn, routed._base_version = base.grad_fn, base._version[0]
        out.append(routed)
    return out


def node_of(tensor: Tensor) -> Any:
    """The graph node a gradient for ``tensor`` goes to: its ``grad_fn``, or the leaf."""
    return tensor if tensor.grad_fn is None else tensor.grad_fn


__all__ = ["ARRIVED", "Arrived", "Hub", "Tap", "node_of", "route"]
