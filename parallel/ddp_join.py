"""``DistributedDataParallel.join()``: DDP's side of the ``Join`` context (uneven inputs).

Each forward of an active rank inside the context, after ``Join.notify_join_context``, runs
one small all-reduce, the *step exchange*: a one-hot of the active ranks, then how many
will broadcast buffers before this forward and how many will reduce gradients in the
backward after it. A joined rank contributes zeros and learns from the sum what to shadow:
the buffer broadcast (from the highest active rank — rank 0 may have joined with stale
buffers, as torch picks), then one all-reduce of zeros per gradient bucket, in bucket order,
through the same comm hook (dtrain's buckets never change order after construction). With
``divide_by_initial_world_size=False`` the default hook sums and divides by the number of
active ranks the exchange counted. When all ranks joined, parameters (and buffers with
``broadcast_buffers``) are broadcast from the highest rank among the last to join.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from dtrain._tensor.autograd.grad_mode import no_grad
from dtrain.parallel import api, collectives
from dtrain.parallel.join import JoinHook

if TYPE_CHECKING:
    from dtrain.parallel.ddp import DistributedDataParallel


class StepPlan:
    """What the step exchange said: who leads and what the active ranks will do."""

    def __init__(self, src: int | None, active: int, buffers: bool, backward: bool) -> None:
        self.src, self.active, self.buffers, self.backward = src, active, buffers, backward


def exchange(
    ddp: DistributedDataParallel, candidate: bool, buffers: bool = False, backward: bool = False
) -> StepPlan:
    """The step exchange (one all-reduce). ``candidate``: this rank may be the source of a
    broadcast (active, or among the last joiners); ``buffers``/``backward``: what this
    active rank will do. Every rank raises when the active ranks disagree.

    Collective: every rank of the DDP's group must call this."""
    group = api._group(ddp.group)
    size = int(group.size)
    counts = np.zeros(size + 2, dtype=np.int32)
    counts[group.rank] = int(candidate)
    counts[size], counts[size + 1] = int(buffers), int(backward)
    collectives.all_reduce(counts, group=ddp.group)
    marked = np.flatnonzero(counts[:size])
    active = int(counts[:size].sum())
    for what, count in (("broadcast buffers", counts[size]), ("reduce gradients", counts[-1])):
        if 0 < count < active:
            raise RuntimeError(
                f"DistributedDataParallel.join: {int(count)} of {active} active ranks "
                f"{what} this step and the others do not; every rank must run the same "
                "step (the same no_sync(), grad mode and broadcast_buffers)"
            )
    src = group.ranks[int(marked[-1])] if marked.size else None
    return StepPlan(src, active, bool(counts[size]), bool(counts[-1]))


def broadcast_buffers(ddp: DistributedDataParallel, src: int) -> None:
    """Broadcast the module's buffers from global rank ``src``."""
    with no_grad():
        works = [
            collectives.broadcast(b, src, group=ddp.group, async_op=True)
            for b in ddp.module.buffers()
        ]
        for work in works:
            work.wait()


class DDPJoinHook(JoinHook):
    """A joined rank's side: shadow each step of the active ranks, then agree on the final
    model."""

    def __init__(self, ddp: DistributedDataParallel, divide_by_initial_world_size: bool) -> None:
        self.ddp = ddp
        ddp._divide_by_initial_world_size = bool(divide_by_initial_world_size)

    def main_hook(self) -> None:
        """The active ranks' step: the exchange, their buffer broadcast, their buckets."""
        ddp = self.ddp
        plan = exchange(ddp, candidate=False)
        if plan.buffers:
            broadcast_buffers(ddp, plan.src)
        # As torch: the next forward's buffer sync follows this step's backward sync.
        ddp.require_forward_param_sync = plan.backward
        if not plan.backward:
            return
        ddp._shadow_backward(plan.active)

    def post_hook(self, is_last_joiner: bool) -> None:
        """Broadcast the model from the highest-ranked of the last ranks to join."""
        ddp = self.ddp
        plan = exchange(ddp, candidate=is_last_joiner)
        if plan.src is None:
            raise RuntimeError(
                "DistributedDataParallel.join: no rank reported joining last; the ranks' join "
                "contexts are out of step"
            )
        tensors: list[Any] = list(ddp.module.parameters())
        if ddp.broadcast_buffers:
            tensors += list(ddp.module.buffers())
        with no_grad():
            works = [
                collectives.broadcast(t, plan.src, group=ddp.group, async_op=True) for t in tensors
            ]
            for work in works:
                work.wait()
