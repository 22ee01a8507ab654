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

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from dtrain._tensor.autograd.grad_mode import is_grad_enabled, no_grad
from dtrain._tensor.tensor import wrap
from dtrain.parallel import api, collectives
from dtrain.parallel.ddp_hooks import GradBucket, _allreduce_over_active_hook, allreduce_hook
from dtrain.parallel.ddp_reducer import broadcast_buffers
from dtrain.parallel.join import Join, JoinHook
from dtrain.runtime.backend import get_array_module

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


def join_step(ddp: DistributedDataParallel, sync_buffers: bool) -> None:
    """An active rank's forward inside ``join()``: tell the context, then the step
    exchange (what the joined ranks shadow), then the buffer broadcast from the highest
    active rank."""
    notified = Join.notify_join_context(ddp)
    backward = is_grad_enabled() and ddp.require_backward_grad_sync and ddp._reducing
    plan = exchange(ddp, candidate=True, buffers=sync_buffers, backward=backward)
    if notified is not None:
        notified.wait()
    if sync_buffers:
        broadcast_buffers(ddp, plan.src)
    if is_grad_enabled():  # a no_grad forward has no backward to decide for
        ddp._join_sync_backward = ddp._join_backward_pending = backward
        ddp._join_divisor = plan.active


def bucket_hook(ddp: DistributedDataParallel) -> tuple[Any, Callable]:
    """The comm hook and its state for this step's buckets (the default all-reduce
    divides by the active ranks under ``join(divide_by_initial_world_size=False)``)."""
    state, hook = ddp._hook
    if hook is allreduce_hook and ddp._join_config.enable and not ddp._divide_by_initial_world_size:
        return (state, ddp._join_divisor), _allreduce_over_active_hook
    return state, hook


def shadow_backward(ddp: DistributedDataParallel, active: int) -> None:
    """A joined rank's side of the active ranks' backward: every bucket's comm hook on
    zeros of its size, in bucket order (fixed since construction, the same on every
    rank); the rank's own gradients stay as they are."""
    ddp._join_divisor = active
    group, hook = bucket_hook(ddp)
    works = []
    for bucket in ddp._buckets:
        zeros = wrap(get_array_module(bucket.flat).zeros_like(bucket.flat))
        works.append(hook(group, GradBucket(bucket.index, zeros, bucket.params)))
    for work in works:
        work.wait()


class DDPJoinHook(JoinHook):
    """A joined rank's side: shadow each step of the active ranks, then agree on the final
    model."""

    def __init__(self, ddp: DistributedDataParallel, divide_by_initial_world_size: bool) -> None:
        self.ddp = ddp
        ddp._divide_by_initial_world_size = bool(divide_by_initial_world_size)
        ddp._join_backward_pending = False  # made as the context is entered: a fresh start

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
        shadow_backward(ddp, plan.active)

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
