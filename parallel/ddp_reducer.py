"""DDP's reducer: the flat gradient buckets, the post-accumulate-grad hook on each
parameter, and the backward steps (adopt each ``.grad`` as a bucket view, launch each
bucket's comm hook once its last gradient is in, in bucket order, and wait for them all at
backward's end).

``_Reducer`` is a mixin of ``DistributedDataParallel``: its methods run on the DDP, whose
``__init__`` sets the state they share (``_buckets``, ``_bucket_of``, ``_ready``,
``_next_bucket``, ``_syncing``, ``_expect_hooks``, ``stats`` ...).
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from dtrain._tensor.autograd.engine import queue_callback
from dtrain._tensor.autograd.grad_mode import no_grad
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.parallel import api, collectives
from dtrain.parallel.ddp_hooks import GradBucket, _take_future_value
from dtrain.parallel.ddp_stats import BucketTiming, DDPStats
from dtrain.parallel.errors import CollectiveError
from dtrain.parallel.work import Work
from dtrain.runtime.backend import get_array_module

if TYPE_CHECKING:
    from dtrain.parallel.ddp import DistributedDataParallel

FIRST_BUCKET_MB = 1.0  # small, so the first all-reduce starts early in backward (as PyTorch)


class _Bucket:
    """The flat gradients of ``params``; with ``flags`` (``find_unused_parameters=True``),
    then one "used" flag per parameter: 1 unless this rank has no gradient for it. The
    flags ride on the bucket's all-reduce, so after it a flag of 0 says that no rank had
    one (its ``.grad`` is then None, as in PyTorch) at no extra collective; setting them
    back to 1 is a launch per bucket and step on CUDA, paid only by models that ask."""

    def __init__(self, index: int, params: list, xp: Any, dtype: Any, flags: bool) -> None:
        self.index, self.params = index, params
        self.offsets = {}
        total = 0
        for p in params:
            self.offsets[id(p)] = (total, total + p.numel())
            total += p.numel()
        size = total + (len(params) if flags else 0)
        if xp is np:
            self.flat = np.zeros(size, dtype=dtype)
        else:
            with params[0]._array.device:  # beside the parameters, whatever is current
                self.flat = xp.zeros(size, dtype=dtype)
        self.used = self.flat[total:] if flags else None
        self.slot = {id(p): i for i, p in enumerate(params)}
        self.views = {
            id(p): self.flat[a:b].reshape(p.shape)
            for p, (a, b) in ((p, self.offsets[id(p)]) for p in params)
        }
        self.pending = len(params)
        self.work = None


class _GradReadyHook:
    """The post-accumulate-grad hook DDP puts on each parameter. It holds its DDP through a
    weak reference (a dropped DDP is collected, and its finalizer removes the hooks), and a
    deep copy of the parameter gets an inert hook instead of a copy of the DDP (a deep copy
    of the module, e.g. an EMA or teacher model, must not reduce anything)."""

    __slots__ = ("ddp",)

    def __init__(self, ddp: DistributedDataParallel) -> None:
        self.ddp = weakref.ref(ddp)

    def __call__(self, param: Tensor) -> None:
        ddp = self.ddp()
        if ddp is not None and ddp._expect_hooks:
            ddp._grad_ready(param)

    def __deepcopy__(self, memo: dict) -> Callable:
        return _inert_hook

    def __reduce__(self) -> Any:
        return (_inert, ())


def _inert_hook(param: Tensor) -> None:
    """What a deep copy of a parameter gets in place of DDP's hook: nothing to do."""


def _inert() -> Callable:
    return _inert_hook


def _remove_hooks(handles: list) -> None:
    for handle in handles:
        handle.remove()


def _detach_earlier_wrap(params: list) -> None:
    """Wrapping a module again (after a re-init, or to change options): the earlier DDP's
    hooks come off its parameters, so each backward reduces once, and that DDP refuses to
    run (its forward raises) instead of silently not synchronising."""
    for _, param in params:
        hooks = (param._hooks or {}).get("post_accumulate") or []
        for hook in [h for h in hooks if isinstance(h, _GradReadyHook)]:
            hooks.remove(hook)
            earlier = hook.ddp()
            if earlier is not None:
                earlier._superseded = True


def broadcast_buffers(ddp: DistributedDataParallel, src: int) -> None:
    """Broadcast the module's buffers from global rank ``src``."""
    with no_grad():
        works = [
            collectives.broadcast(b, src, group=ddp.group, async_op=True)
            for b in ddp.module.buffers()
        ]
        for work in works:
            work.wait()


class _Reducer:
    """The bucket and backward methods of ``DistributedDataParallel`` (a mixin)."""

    def _build_buckets(self, cap_mb: float) -> list[_Bucket]:
        buckets, current, size = [], [], 0
        cap = min(FIRST_BUCKET_MB, cap_mb) * 2**20
        key = None
        for _, param in reversed(self._params):
            xp = get_array_module(param._array)
            param_key = (xp, param.dtype)
            if current and (size + param._array.nbytes > cap or param_key != key):
                buckets.append(_Bucket(len(buckets), current, *key, self.find_unused_parameters))
                current, size, cap = [], 0, cap_mb * 2**20
            current.append(param)
            size += param._array.nbytes
            key = param_key
        if current:
            buckets.append(_Bucket(len(buckets), current, *key, self.find_unused_parameters))
        return buckets

    def _mark_backward_start(self, grad: Tensor) -> None:
        self._backward_start = DDPStats._now()

    def _grad_ready(self, param: Tensor) -> None:
        if id(param) not in self._bucket_of:
            return  # not one of ours (a hook that outlived a change of parameters)
        enabled = self._join_config.enable  # inside join(): as the forward told the others
        if not (self._join_sync_backward if enabled else self.require_backward_grad_sync):
            self._adopt(param)  # accumulating under no_sync: nothing to send yet
            if self._syncing is False:
                self._syncing = None  # a local backward: clear the gate when it ends
                queue_callback(self._end_local_backward)
            return
        if self._syncing is None:
            self._syncing = False  # no_sync was left in the middle of a backward
        if not self._syncing:
            self._syncing = True
            self._ready.clear()
            self._next_bucket = 0
            for bucket in self._buckets:
                bucket.pending, bucket.work = len(bucket.params), None
                if bucket.used is not None:
                    bucket.used[...] = 1  # one fill a bucket; _finish clears the unused
            if self.stats is not None:
                self._step = self.stats._begin(self._backward_start)
                self._backward_start = None
            queue_callback(self._finish)
        self._adopt(param)
        if id(param) in self._ready:
            return
        self._ready.add(id(param))
        bucket = self._bucket_of[id(param)]
        bucket.pending -= 1
        self._launch_ready()

    def _abandon_backward(self) -> None:
        """The previous backward raised partway, so its end-of-backward step (``_finish``,
        queued on the engine) never ran and this wrapper still thinks it is reducing. Wait
        for the buckets it launched (a rank that got further launched them too), then start
        clean, so the next step's reduction does not drift between ranks."""
        local = self._syncing is None  # under no_sync: nothing was launched
        try:
            for bucket in self._buckets:
                if bucket.work is not None:
                    bucket.work.wait()
        finally:
            for bucket in self._buckets:
                bucket.work = None
            self._syncing = False
            self._expect_hooks = self._join_backward_pending = False
            self._ready.clear()
            self._next_bucket = 0
        if not local:
            warnings.warn(
                "DistributedDataParallel: the previous backward raised before it finished, "
                "so its gradients were only partly averaged across ranks; zero them "
                "(optimizer.zero_grad()) before the next backward",
                stacklevel=3,
            )

    def _end_local_backward(self) -> None:
        self._syncing = False
        self._expect_hooks = False

    def _adopt(self, param: Tensor) -> None:
        """Make ``param.grad`` its bucket view. After ``zero_grad(set_to_none=True)`` backward
        made a fresh array: one copy into the bucket (cheaper than zeroing the bucket and
        accumulating into it); once ``.grad`` is the view, backward accumulates in place."""
        view = self._bucket_of[id(param)].views[id(param)]
        if param.grad._array is not view:
            view[...] = param.grad._array
            param.grad = wrap(view)

    def _launch_ready(self) -> None:
        # In bucket order on every rank, so all ranks issue the same collective sequence.
        while self._next_bucket < len(self._buckets):
            bucket = self._buckets[self._next_bucket]
            if bucket.pending > 0:
                return
            self._launch(bucket)
            self._next_bucket += 1

    def _launch(self, bucket: _Bucket) -> None:
        group, hook = self._bucket_hook()
        step = self._step if self.stats is not None else None
        if step is None:
            bucket.work = hook(group, GradBucket(bucket.index, wrap(bucket.flat), bucket.params))
            return
        timing = BucketTiming(bucket.index, bucket.flat.nbytes, DDPStats._now())
        step.buckets.append(timing)
        bucket.work = hook(group, GradBucket(bucket.index, wrap(bucket.flat), bucket.params))
        # The group runs its collectives in order on one thread: a job queued right behind
        # this bucket's all-reduce runs the moment it finished, and stamps that moment.
        self._stamps.append(
            api._group(self.group).executor.submit(
                lambda: setattr(timing, "done", DDPStats._now()), Work("ddp stats stamp")
            )
        )

    def _finish(self) -> None:
        """End of backward: reduce buckets whose parameters got no gradient, then wait."""
        step = self._step if self.stats is not None else None
        if step is not None:
            step.compute_end = DDPStats._now()
        unused = [name for name, p in self._params if id(p) not in self._ready]
        flagged = []  # buckets in which this rank flagged a parameter unused
        if unused:
            if not self._warned_unused:
                kept = (
                    "they keep grad None where no rank had a gradient"
                    if self.find_unused_parameters
                    else "pass find_unused_parameters=True to keep grad None where no rank "
                    "had a gradient, as PyTorch does (optimizers then skip them)"
                )
                warnings.warn(
                    f"DistributedDataParallel: parameters {unused} received no gradient this "
                    "step; they are reduced as zeros (or as whatever they held), so every rank "
                    f"stays in step; {kept}",
                    stacklevel=2,
                )
                self._warned_unused = True
            for _, param in self._params:
                if id(param) in self._ready:
                    continue
                bucket = self._bucket_of[id(param)]
                if param.grad is None:  # nothing accumulated: contribute zeros, flag unused
                    bucket.views[id(param)][...] = 0
                    if bucket.used is not None:
                        bucket.used[bucket.slot[id(param)]] = 0
                        flagged.append(bucket)
                    param.grad = wrap(bucket.views[id(param)])
                else:  # gradients accumulated under no_sync: reduce them as they are
                    self._adopt(param)
            for bucket in self._buckets[self._next_bucket :]:
                bucket.pending = 0
            self._launch_ready()
        try:
            for bucket in self._buckets:
                if bucket.work is not None:
                    bucket.work.wait()
                    _take_future_value(bucket)
        except CollectiveError:
            raise
        finally:
            self._syncing = False
            self._expect_hooks = self._join_backward_pending = False
            if step is not None:
                step.end = DDPStats._now()
                for stamp in self._stamps:  # the last stamp may still be queued
                    stamp.wait()
                self._stamps.clear()
                self._step = None
        if flagged:
            self._drop_gradients_no_rank_had(flagged)
        for _, param in self._params:
            if param.grad is not None:
                param.grad._version[0] += 1

    def _drop_gradients_no_rank_had(self, flagged: list) -> None:
        """``.grad = None`` where every rank flagged the parameter unused (PyTorch leaves
        those None, so optimizers skip them: no momentum or weight decay step). A flag can
        be 0 only where this rank's was: one host copy per bucket it flagged in."""
        for bucket in dict.fromkeys(flagged):
            flags = bucket.used.tolist()
            for param in bucket.params:
                if flags[bucket.slot[id(param)]] == 0:
                    param.grad = None
