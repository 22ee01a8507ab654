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
   rank out of inputs answers all of these, and the bucket all-reduces, with zeros. A
   no_grad forward between a training forward and its backward runs none of them.

Gradients live in flat buckets (parameters in reverse registration order, a small first
bucket, then ``bucket_cap_mb``); each parameter's ``.grad`` is a view into its bucket, so
nothing is copied in or out.

Modules: the comm hooks are in ``ddp_hooks.py``, the buckets and the backward steps (the
``_Reducer`` mixin) in ``ddp_reducer.py``, join's steps in ``ddp_join.py``.

Instrumentation (off by default, see ``ddp_stats.py``): ``model.stats = DDPStats()`` records
each synchronised backward's compute time, per-bucket all-reduce spans and the all-reduce time
backward did not hide.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from dtrain._tensor.autograd.grad_mode import is_grad_enabled, no_grad
from dtrain._tensor.nn.module import Module
from dtrain._tensor.parameter import is_lazy
from dtrain._tensor.tensor import Tensor
from dtrain.parallel import api, collectives, ddp_join
from dtrain.parallel.ddp_hooks import GradBucket, allreduce_hook, fp16_compress_hook
from dtrain.parallel.ddp_reducer import (
    FIRST_BUCKET_MB,
    _detach_earlier_wrap,
    _GradReadyHook,
    _Reducer,
    _remove_hooks,
    broadcast_buffers,
)
from dtrain.parallel.ddp_stats import DDPStats, StepStats
from dtrain.parallel.join import Join, Joinable, JoinHook, _JoinConfig
from dtrain.parallel.objects import all_gather_object
from dtrain.parallel.work import Work

log = logging.getLogger(__name__)


class DistributedDataParallel(_Reducer, Module, Joinable):
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
        if any(is_lazy(p) for p in module.parameters()):
            raise RuntimeError(
                "DistributedDataParallel: the module has uninitialized parameters (lazy "
                "modules such as nn.LazyLinear); run one forward pass with a sample batch "
                "before wrapping it"
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
        # A training forward inside join() decided to reduce, and its backward has not run:
        # the joined ranks shadowed that backward right after the forward's exchange.
        self._join_backward_pending = False
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
        # Inside join(), a no_grad forward between a training forward and its backward (an
        # eval forward) runs without collectives: the joined ranks already shadowed that
        # backward's buckets, so a notify or exchange now would meet them; the buffers are
        # broadcast at the next forward instead. A forward with grad starts a new step.
        between = self._join_config.enable and self._join_backward_pending and not is_grad_enabled()
        if not self._join_config.enable:
            self._join_backward_pending = False
            if sync_buffers:
                broadcast_buffers(self, api._group(self.group).ranks[0])
        elif not between:
            ddp_join.join_step(self, sync_buffers)
        output = self.module(*args, **kwargs)
        training = is_grad_enabled() and self.require_backward_grad_sync
        if not between:
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

    def _bucket_hook(self) -> tuple[Any, Callable]:
        """The comm hook and its state for this step's buckets (``ddp_join.bucket_hook``)."""
        return ddp_join.bucket_hook(self)

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
        (as in torch); no_grad forwards between a training forward and its backward (an
        eval forward) leave that backward's reduction on and run without collectives
        (their buffers are not broadcast). The context does not shadow other
        collectives of the loop (use ``throw_on_early_termination`` then).

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


__all__ = [
    "FIRST_BUCKET_MB",
    "DistributedDataParallel",
    "GradBucket",
    "allreduce_hook",
    "fp16_compress_hook",
]
