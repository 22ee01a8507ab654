"""``DistributedDataParallel``: average gradients across ranks while backward still runs.

Synchronisation points (every rank must reach each, in the same order):
1. construction — parameter names, shapes and dtypes are compared across ranks, then rank
   0's parameters and buffers are broadcast;
2. each forward with ``broadcast_buffers=True`` whose previous forward ran with grad enabled
   outside ``no_sync()`` (torch's ``require_forward_param_sync``) — rank 0's buffers are
   broadcast;
3. each backward outside ``no_sync()`` that follows a forward through the wrapper with grad
   enabled (torch's ``prepare_for_backward``) — one all-reduce per gradient bucket, launched
   as soon as the bucket's last gradient is accumulated, in bucket order; ``backward()``
   returns once every bucket is averaged. A backward through ``.module`` (or a copy of it)
   alone stays local.
4. inside ``join()``, each forward first runs the join context's notify all-reduce and the
   step exchange (``ddp_join.py``), and the buffers come from the highest active rank; a
   rank out of inputs answers all of these, and the bucket all-reduces, with zeros.

Gradients live in flat buckets (parameters in reverse registration order, a small first
bucket, then ``bucket_cap_mb``); each parameter's ``.grad`` is a view into its bucket, so
nothing is copied in or out.

Instrumentation (off by default, see ``ddp_stats.py``): ``model.stats = DDPStats()`` records
each synchronised backward's compute time, per-bucket all-reduce spans and the all-reduce time
backward did not hide.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from dtrain._tensor.autograd.engine import queue_callback
from dtrain._tensor.autograd.grad_mode import is_grad_enabled, no_grad
from dtrain._tensor.nn.module import Module
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.parallel import api, collectives, ddp_join
from dtrain.parallel.ddp_stats import BucketTiming, DDPStats, StepStats
from dtrain.parallel.errors import CollectiveError
from dtrain.parallel.join import Join, Joinable, JoinHook, _JoinConfig
from dtrain.parallel.objects import all_gather_object
from dtrain.parallel.reduce_op import ReduceOp
from dtrain.parallel.work import Chained, Future, Work
from dtrain.runtime.backend import get_array_module, is_cuda_array

log = logging.getLogger(__name__)

FIRST_BUCKET_MB = 1.0  # small, so the first all-reduce starts early in backward (as PyTorch)


class GradBucket:
    """What a communication hook receives: one bucket's flat gradient buffer."""

    def __init__(self, index: int, buffer: Tensor, params: list) -> None:
        self._index, self._buffer, self._params = index, buffer, params

    def index(self) -> int:
        """The bucket's position (0 holds the last parameters registered)."""
        return self._index

    def buffer(self) -> Tensor:
        """The flat gradients (with ``find_unused_parameters=True``, then one 0/1 "used"
        flag per parameter); a hook leaves the averaged values of all of it here."""
        return self._buffer

    def parameters(self) -> list:
        """The parameters whose gradients the bucket holds."""
        return self._params


def allreduce_hook(group: Any, bucket: GradBucket) -> Any:
    """The default: average the bucket across the group (an async all-reduce)."""
    return collectives.all_reduce(bucket.buffer(), ReduceOp.AVG, group=group, async_op=True)


def _allreduce_over_active_hook(state: tuple, bucket: GradBucket) -> Any:
    """The default hook under ``join(divide_by_initial_world_size=False)``: sum the bucket
    and divide by the number of ranks still active (``state`` is (group, that number))."""
    group, active = state
    flat = bucket.buffer()._array
    work = collectives.all_reduce(bucket.buffer(), ReduceOp.SUM, group=group, async_op=True)
    return Chained(work, lambda: flat.__itruediv__(active))


def fp16_compress_hook(group: Any, bucket: GradBucket) -> Any:
    """Send the bucket as float16 (half the bytes) and write the average back in its dtype.

    Each rank divides by the world size *before* the float16 sum, as PyTorch's hook does, so
    the sum cannot overflow where the average would not. On CUDA the divide-and-cast and the
    cast back are one fused kernel each (``dtrain.runtime.kernels.scale_cast``).
    """
    buffer = bucket.buffer()
    flat = buffer._array
    half = wrap(_scale_cast(flat, 1.0 / api.get_world_size(group), np.float16))
    work = collectives.all_reduce(half, ReduceOp.SUM, group=group, async_op=True)
    return Chained(work, lambda: _scale_cast(half._array, 1.0, flat.dtype, out=flat))


def _scale_cast(flat: Any, factor: float, dtype: Any, out: Any = None) -> Any:
    """``(flat * factor).astype(dtype)`` (into ``out``), one fused kernel on CUDA when it
    casts (the kernel converts between float16 and float32/64; a float16 bucket is scaled by
    cupy)."""
    if is_cuda_array(flat) and flat.flags.c_contiguous and flat.dtype != np.dtype(dtype):
        from dtrain.runtime.kernels import scale_cast

        return scale_cast(flat, factor, dtype, out=out)
    result = (flat * factor if factor != 1.0 else flat).astype(dtype)
    if out is None:
        return result
    out[...] = result
    return out


def _take_future_value(bucket: _Bucket) -> None:
    """A torch-style comm hook returns a Future whose value holds the result (a tensor, or
    a one-tensor list), maybe not in the bucket (``f.value()[0] / n``): copy it in."""
    if not isinstance(bucket.work, Future):
        return
    value = bucket.work.value()
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    array = value._array if isinstance(value, Tensor) else value
    if array is None or array is bucket.flat:
        return
    if getattr(array, "size", None) != bucket.flat.size:
        raise ValueError(
            f"DistributedDataParallel: the comm hook's future gave {type(value).__name__} "
            f"with {getattr(array, 'size', '?')} elements for bucket {bucket.index} of "
            f"{bucket.flat.size}; return the reduced bucket.buffer() (or a tensor shaped as it)"
        )
    bucket.flat[...] = array.reshape(bucket.flat.shape)


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


class DistributedDataParallel(Module, Joinable):
    """Wrap ``module`` so that ``loss.backward()`` leaves every rank with the same averaged
    gradients. Construction is collective: every rank of the group must call it."""

    def __init__(
        self,
        module: Module,
        device_ids: Any = None,
        output_device: Any = None,
        broadcast_buffers: bool = True,
        process_group: Any = None,
        bucket_cap_mb: float = 25.0,
        find_unused_parameters: bool = False,
        gradient_as_bucket_view: bool = True,
        static_graph: bool = False,
        init_sync: bool = True,
        _reduce_at_world_size_1: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(
                f"DistributedDataParallel wraps an nn.Module, got {type(module).__name__}"
            )
        if bucket_cap_mb <= 0:
            raise ValueError(f"bucket_cap_mb must be positive, got {bucket_cap_mb}")
        self.module = module
        self.group = process_group
        self.device_ids = device_ids  # accepted, as torch's; the module's device is used
        self._options = dict(
            broadcast_buffers=broadcast_buffers,
            process_group=process_group,
            bucket_cap_mb=bucket_cap_mb,
            find_unused_parameters=find_unused_parameters,
            _reduce_at_world_size_1=_reduce_at_world_size_1,
        )
        self.world_size = api.get_world_size(process_group)
        self.broadcast_buffers = broadcast_buffers
        self.require_backward_grad_sync = True
        self.gradient_as_bucket_view = gradient_as_bucket_view
        self.find_unused_parameters = find_unused_parameters
        self._hook: tuple[Any, Callable] = (process_group, allreduce_hook)
        self._warned_unused = False
        self._params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        # Off by default; the reducer only tests ``is not None`` (see ddp_stats.py).
        self.stats: DDPStats | None = None
        self._step: StepStats | None = None
        self._backward_start: float | None = None
        self._stamps: list[Work] = []
        # ``_reduce_at_world_size_1`` is for measurement only (bench/ddp_overhead.py): it runs
        # the bucket/hook/all-reduce machinery on a one-rank group, which users never need.
        self._reducing = self.world_size > 1 or _reduce_at_world_size_1
        # As torch's prepare_for_backward: hooks act only in a backward that follows a
        # forward through this wrapper (not one through .module, or a copy of it).
        self._expect_hooks = False
        self._superseded = False
        # torch's flag: buffers are broadcast before a forward when the previous forward
        # ran with grad enabled and synchronising (so eval under no_grad syncs at most once).
        self.require_forward_param_sync = True
        self._syncing: bool | None = False  # reducing a backward now (None: a local one)
        # join(): off outside the context; the backward decision and the divisor of a step
        # are fixed at its forward (what the step exchange told the joined ranks).
        self._join_config = _JoinConfig.construct_disabled_join_config()
        self._divide_by_initial_world_size = True
        self._join_sync_backward = True
        self._join_divisor = self.world_size
        if not self._reducing:  # nothing to synchronise: a pass-through, no hooks
            self._buckets = []
            return
        if init_sync:  # torch's init_sync=False skips both (every rank built the same)
            self._check_same_parameters()
            self._broadcast_state()
        self._buckets = self._build_buckets(bucket_cap_mb)
        self._bucket_of = {id(p): b for b in self._buckets for p in b.params}
        self._ready: set = set()
        self._next_bucket = 0
        _detach_earlier_wrap(self._params)
        hook = _GradReadyHook(self)
        handles = [p.register_post_accumulate_grad_hook(hook) for _, p in self._params]
        # Removed when this DDP is collected; the handles do not reference it.
        self._unhook = weakref.finalize(self, _remove_hooks, handles)

    def __deepcopy__(self, memo: dict) -> DistributedDataParallel:
        """A DDP over a deep copy of the module, with the same group, options and comm hook,
        built without collectives (the copy starts from this rank's values), so one rank
        may make it alone; using it is collective as usual."""
        clone = DistributedDataParallel(
            copy.deepcopy(self.module, memo), init_sync=False, **self._options
        )
        clone._hook = self._hook
        clone.require_backward_grad_sync = self.require_backward_grad_sync
        return clone

    @property
    def process_group(self) -> Any:
        """The group gradients are averaged over (the default group when none was given)."""
        return api._group(self.group)

    def remove_hooks(self) -> None:
        """Take this DDP's hooks off the parameters (it then no longer reduces); done for
        you when the DDP is garbage collected or the module is wrapped again."""
        if self._reducing:
            self._unhook()
        self._superseded = True

    # ---- construction -------------------------------------------------------------------
    def _check_same_parameters(self) -> None:
        mine = [[n, list(p.shape), str(p.dtype)] for n, p in self._params]
        everyone: list = [None] * self.world_size
        all_gather_object(everyone, mine, group=self.group)
        reference = everyone[0]
        for rank, theirs in enumerate(everyone):
            if theirs == reference:
                continue
            ranks = api._group(self.group).ranks
            for ours, other in zip(reference, theirs):
                if ours != other:
                    raise ValueError(
                        f"DistributedDataParallel: rank {ranks[rank]}'s parameter {other[0]!r} "
                        f"(shape {tuple(other[1])}, {other[2]}) differs from rank {ranks[0]}'s "
                        f"{ours[0]!r} (shape {tuple(ours[1])}, {ours[2]}); every rank must build "
                        "the same model"
                    )
            raise ValueError(
                f"DistributedDataParallel: rank {ranks[rank]} has {len(theirs)} parameters "
                f"requiring grad but rank {ranks[0]} has {len(reference)}; every rank must "
                "build the same model"
            )

    def _broadcast_state(self) -> None:
        src = api._group(self.group).ranks[0]
        with no_grad():
            works = [
                collectives.broadcast(t, src, group=self.group, async_op=True)
                for t in (*self.module.parameters(), *self.module.buffers())
            ]
            for work in works:
                work.wait()

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

    # ---- the step -------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self._superseded:
            raise RuntimeError(
                "DistributedDataParallel: this wrapper's hooks were removed (its module was "
                "wrapped again by another DistributedDataParallel, or remove_hooks() was "
                "called); use the newer wrapper"
            )
        if self._syncing is not False:  # the last backward raised before it ended
            self._abandon_backward()
        buffers = list(self.module.buffers()) if self.broadcast_buffers else []
        sync_buffers = self.require_forward_param_sync and bool(buffers) and self.world_size > 1
        if self._join_config.enable:
            self._join_step(sync_buffers)
        elif sync_buffers:
            ddp_join.broadcast_buffers(self, api._group(self.group).ranks[0])
        output = self.module(*args, **kwargs)
        training = is_grad_enabled() and self.require_backward_grad_sync
        self.require_forward_param_sync = training
        # Accumulating under no_sync still adopts the bucket views: expected either way.
        # Only set here: an eval forward (no_grad) between a training forward and its
        # backward must not turn that backward's reduction off; backward's end clears it.
        if is_grad_enabled() and self._reducing:
            self._expect_hooks = True
        tracked = isinstance(output, Tensor) and output.requires_grad
        if self.stats is not None and self._reducing and tracked:
            output.register_hook(self._mark_backward_start)
        return output

    def _join_step(self, sync_buffers: bool) -> None:
        """An active rank's forward inside ``join()``: tell the context, then the step
        exchange (what the joined ranks shadow), then the buffer broadcast from the highest
        active rank."""
        notified = Join.notify_join_context(self)
        backward = is_grad_enabled() and self.require_backward_grad_sync and self._reducing
        plan = ddp_join.exchange(self, candidate=True, buffers=sync_buffers, backward=backward)
        if notified is not None:
            notified.wait()
        if sync_buffers:
            ddp_join.broadcast_buffers(self, plan.src)
        self._join_sync_backward = backward
        self._join_divisor = plan.active

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
            self._expect_hooks = False
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

    def _bucket_hook(self) -> tuple[Any, Callable]:
        """The comm hook and its state for this step's buckets (the default all-reduce
        divides by the active ranks under ``join(divide_by_initial_world_size=False)``)."""
        state, hook = self._hook
        if (
            hook is allreduce_hook
            and self._join_config.enable
            and not self._divide_by_initial_world_size
        ):
            return (state, self._join_divisor), _allreduce_over_active_hook
        return state, hook

    def _shadow_backward(self, active: int) -> None:
        """A joined rank's side of the active ranks' backward: every bucket's comm hook on
        zeros of its size, in bucket order (fixed since construction, the same on every
        rank); the rank's own gradients stay as they are."""
        self._join_divisor = active
        group, hook = self._bucket_hook()
        works = []
        for bucket in self._buckets:
            zeros = wrap(get_array_module(bucket.flat).zeros_like(bucket.flat))
            works.append(hook(group, GradBucket(bucket.index, zeros, bucket.params)))
        for work in works:
            work.wait()

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
            self._expect_hooks = False
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

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Accumulate gradients locally (no communication) inside the block; the first
        backward after it reduces the accumulated sum."""
        previous = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        try:
            yield
        finally:
            self.require_backward_grad_sync = previous

    def join(
        self,
        divide_by_initial_world_size: bool = True,
        enable: bool = True,
        throw_on_early_termination: bool = False,
    ) -> Join:
        """Context manager for uneven inputs: ``with model.join(): for batch in loader:
        ...``. A rank out of batches shadows the others' steps (buffer broadcast, one
        all-reduce of zeros per bucket) until every rank is out; then every rank leaves with
        the model of the highest-ranked of the last ranks to finish.

        Args:
            divide_by_initial_world_size: average gradients over the initial world size
                (a finished rank counts as zeros); False: over the ranks still active (with
                the default comm hook; a custom hook divides as it does).
            enable: False turns the context off (even inputs).
            throw_on_early_termination: every rank raises ``RuntimeError`` as soon as one
                rank runs out of inputs.

        Each forward with grad enabled inside the context must be followed by one backward
        (as in torch); the context does not shadow other collectives of the loop (use
        ``throw_on_early_termination`` then).

        Collective: every rank of the group must enter it."""
        return Join(
            [self],
            enable,
            throw_on_early_termination,
            divide_by_initial_world_size=divide_by_initial_world_size,
        )

    def join_hook(self, **kwargs: Any) -> JoinHook:
        """The hook a joined rank runs (``Join`` calls it); takes
        ``divide_by_initial_world_size`` (default True)."""
        return ddp_join.DDPJoinHook(self, kwargs.get("divide_by_initial_world_size", True))

    @property
    def join_device(self) -> Any:
        """The device of the module's first parameter (the CPU without parameters)."""
        first = next(iter(self.module.parameters()), None)
        return "cpu" if first is None else first.device

    @property
    def join_process_group(self) -> Any:
        """The group the join context counts in: this DDP's."""
        return self.process_group

    def register_comm_hook(self, state: Any, hook: Callable) -> None:
        """Replace the all-reduce of each bucket by ``hook(state, bucket)``, which returns
        something with ``wait()`` and leaves the averaged values in ``bucket.buffer()``
        (e.g. ``fp16_compress_hook``)."""
        self._hook = (state, hook)

    # ---- pass-throughs ---------------------------------------------------------------------
    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped module's state dict (no ``module.`` prefix: checkpoints load with or
        without DDP)."""
        return self.module.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: dict, strict: bool = True, assign: bool = False) -> Any:
        """Load into the wrapped module. The keys are tried as they are first; a
        ``module.`` prefix (PyTorch DDP's) is stripped only when they do not match the
        module's and every key has it (a module whose own child is ``module`` loads
        unchanged)."""
        if state_dict and all(k.startswith("module.") for k in state_dict):
            own = set(self.module.state_dict())
            if not set(state_dict) <= own:
                state_dict = {k[len("module.") :]: v for k, v in state_dict.items()}
        return self.module.load_state_dict(state_dict, strict, assign=assign)

    def extra_repr(self) -> str:
        return f"world_size={self.world_size}, buckets={len(self._buckets)}"
