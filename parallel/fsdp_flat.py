"""One FSDP unit's parameters as one flat buffer: ``FlatParameter`` (this rank's shard) and
``FlatHandle`` (where each original parameter lies in it, and the steps that gather it,
point the module at views of it, and reduce-scatter its gradient).

The flat buffer holds the unit's parameters in registration order (each shared parameter
once), padded with zeros to a multiple of the world size; rank r keeps elements
``[r * S, (r + 1) * S)``. ``_AllGatherFlat`` is the one autograd op of a unit: its forward
all-gathers the shard, its backward runs once the gradients of every view have been summed
(the engine calls a node once, after all its consumers) and reduce-scatters that flat
gradient, averaged over ranks, into the shard's ``.grad``.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

from dtrain._tensor.autograd.engine import queue_callback
from dtrain._tensor.autograd.grad_mode import no_grad
from dtrain._tensor.autograd.op import Op
from dtrain._tensor.nn.module import Module
from dtrain._tensor.parameter import Parameter, is_lazy
from dtrain._tensor.tensor import Tensor
from dtrain.parallel import api, collectives
from dtrain.parallel.reduce_op import ReduceOp
from dtrain.runtime.backend import get_array_module

FLAT_PARAM_NAME = "_flat_param"

# id(original parameter) -> (a weak reference to it, the handle that flattened it, where):
# a parameter tied across two units is refused instead of silently untied.
_FLATTENED: dict[int, tuple[weakref.ref, weakref.ref, str]] = {}


def flattened_by(param: Parameter) -> tuple[FlatHandle, str] | None:
    """The handle that already flattened ``param`` and the parameter's place there, or None."""
    entry = _FLATTENED.get(id(param))
    if entry is None or entry[0]() is not param or entry[1]() is None:
        return None
    return entry[1](), entry[2]


class FlatParameter(Parameter):
    """This rank's shard of an FSDP unit's flattened, padded parameters (the whole flat
    buffer with ``ShardingStrategy.NO_SHARD``). ``model.parameters()`` yields these, so an
    optimizer built on them keeps state for this rank's shard only."""

    __slots__ = ()


class _AllGatherFlat(Op):
    """The full flat parameter from every rank's shard; backward reduce-scatters (or, not
    sharded, all-reduces) the flat gradient, averaged over ranks, back to the shard."""

    def forward(self, shard: Any, handle: FlatHandle) -> Any:
        self.handle = handle
        return handle.gather(shard)

    def backward(self, grad: Any) -> tuple:
        return (self.handle.reduce_grad(grad, self),)


class FlatHandle:
    """Owns one unit's ``FlatParameter`` and the map from it to the original parameters.

    Args:
        slots: ``(module, name, parameter)`` for every parameter the unit manages (a
            parameter registered in two places appears twice, and is stored once).
        group: the process group to shard over (None: the default group).
        sharded: False for ``NO_SHARD`` (each rank keeps the whole buffer).
    """

    def __init__(self, slots: Sequence[tuple[Module, str, Parameter]], group: Any, sharded: bool):
        self.group = group
        self.world = api.get_world_size(group)
        self.rank = api.get_rank(group)
        self.sharded = sharded and self.world > 1
        unique: dict[int, int] = {}
        params: list[Parameter] = []
        self.slots: list[tuple[Module, str, int]] = []
        seen: set[tuple[int, str]] = set()
        for module, name, param in slots:
            if (id(module), name) in seen:  # a module reachable by two paths
                continue
            seen.add((id(module), name))
            if is_lazy(param):
                raise RuntimeError(
                    f"FullyShardedDataParallel: parameter {name!r} of {type(module).__name__} "
                    "is uninitialized (a lazy module); run one forward pass before wrapping"
                )
            if id(param) not in unique:
                unique[id(param)] = len(params)
                params.append(param)
            self.slots.append((module, name, unique[id(param)]))
        _check_uniform(params, [(m, n, p) for m, n, p in slots])
        self.shapes = [tuple(p.shape) for p in params]
        self.numels = [int(p.numel()) for p in params]
        self.requires_grad = params[0].requires_grad
        self.numel = sum(self.numels)
        self.shard_size = -(-self.numel // self.world) if self.sharded else self.numel
        padded = self.shard_size * (self.world if self.sharded else 1)
        self.padding = padded - self.numel
        arrays = [p._array for p in params]
        xp = get_array_module(*arrays)
        full = xp.zeros(padded, dtype=arrays[0].dtype)
        start = 0
        for array in arrays:
            full[start : start + array.size] = array.reshape(-1)
            start += array.size
        own = full[self.rank * self.shard_size : (self.rank + 1) * self.shard_size]
        self.flat_param = FlatParameter(own.copy() if self.sharded else full, self.requires_grad)
        self.sync = True  # False inside no_sync(): the flat gradient is kept, not reduced
        # The full flat gradient accumulated under no_sync(), valid while the shard's .grad
        # is still ``owner`` at ``version`` (zero_grad, either way, drops it): see _stash.
        self.pending: Any = None
        self.pending_owner: tuple[weakref.ref, int] | None = None
        self.summoned: list | None = None  # summon_full_params(): the full array and params
        self.bound: Any = None  # the gather node whose views the modules hold now
        refs = weakref.ref(self)
        for module, name, index in self.slots:
            param = params[index]
            where = f"{type(module).__name__}.{name}"
            _FLATTENED[id(param)] = (weakref.ref(param, _forget(id(param))), refs, where)
        for module, name, _ in self.slots:
            del module._parameters[name]

    # ---- forward ------------------------------------------------------------------------
    def gather(self, shard: Any) -> Any:
        """The full flat buffer (padded): an all-gather when sharded, else the buffer itself.

        Collective when sharded: every rank of the group must call this."""
        if not self.sharded:
            return shard
        xp = get_array_module(shard)
        full = xp.empty(self.shard_size * self.world, dtype=shard.dtype)
        collectives.all_gather_into_tensor(full, shard, group=self.group)
        return full

    def unshard(self) -> None:
        """Gather the full parameters and point each module attribute at a view of them
        (recorded by autograd when grad is enabled, so backward reaches the shard)."""
        full = _AllGatherFlat.apply(self.flat_param, handle=self)
        self.bound = full.grad_fn
        sizes = self.numels + ([self.padding] if self.padding else [])
        pieces = full.split(sizes) if len(sizes) > 1 else (full,)
        views = [piece.view(shape) for piece, shape in zip(pieces, self.shapes)]
        for module, name, index in self.slots:
            module.__dict__[name] = views[index]

    def reshard(self) -> None:
        """Drop the module attributes (the views of the full parameters); what autograd saved
        for backward stays alive until that backward ran."""
        self.bound = None
        for module, name, _ in self.slots:
            module.__dict__.pop(name, None)

    def regather(self) -> None:
        """In a backward pass, when the modules' attributes are gone (activation
        checkpointing recomputes part of the unit): gather again, until that backward ends.

        Collective: every rank recomputes the same segments in the same order."""
        if self.summoned is not None or all(name in m.__dict__ for m, name, _ in self.slots):
            return
        try:
            queue_callback(self.reshard)
        except RuntimeError:
            return  # not in backward: the module's own AttributeError says what is wrong
        self.unshard()

    # ---- backward -----------------------------------------------------------------------
    def reduce_grad(self, grad: Any, node: Any = None) -> Any:
        """The shard's gradient from the full flat one: averaged over ranks (reduce-scatter,
        or all-reduce without sharding); None under ``no_sync()``, which keeps the sum.

        Collective outside no_sync(): every rank of the group must call this."""
        if node is not None and self.bound is node:
            self.reshard()  # the unit's gradient is done: a recompute may not need the views
        if not self.sync:
            self._stash(grad)
            return None
        pending = self._take_pending()
        if pending is not None:
            grad = grad + pending
        if self.world == 1:
            return grad.copy()
        xp = get_array_module(grad)
        grad = xp.ascontiguousarray(grad)
        if self.sharded:
            out = xp.empty(self.shard_size, dtype=grad.dtype)
            collectives.reduce_scatter_tensor(out, grad, ReduceOp.AVG, group=self.group)
            return out
        out = grad.copy()
        collectives.all_reduce(out, ReduceOp.AVG, group=self.group)
        return out

    def _stash(self, grad: Any) -> None:
        """Keep ``grad`` (no_sync) with the pending sum, tied to the shard's ``.grad``: a
        None one gets zeros, so ``zero_grad`` (set to None, or zeroed in place, which bumps
        its version) drops the pending sum as it would torch's unsharded gradient."""
        pending = self._take_pending()
        self.pending = grad.copy() if pending is None else pending + grad
        owner = self.flat_param.grad
        if owner is None:
            xp = get_array_module(self.flat_param._array)
            owner = self.flat_param.grad = Tensor(xp.zeros_like(self.flat_param._array))
        self.pending_owner = (weakref.ref(owner, self._drop_pending), owner._version[0])

    def _drop_pending(self, ref: Any = None) -> None:
        """Forget the no_sync sum (``ref``: the weak reference of its dying owner)."""
        if ref is None or (self.pending_owner is not None and self.pending_owner[0] is ref):
            self.pending, self.pending_owner = None, None

    def _take_pending(self) -> Any:
        """The no_sync sum if the shard's ``.grad`` it belongs to is unchanged, else None;
        either way it is no longer kept."""
        pending, owner = self.pending, self.pending_owner
        self._drop_pending()
        if pending is None or owner is None:
            return None
        grad = self.flat_param.grad
        if owner[0]() is not grad or grad is None or grad._version[0] != owner[1]:
            return None
        return pending

    # ---- summon_full_params -------------------------------------------------------------
    def summon(self, offload_to_cpu: bool = False) -> None:
        """Register the full parameters (new ``Parameter``s over one gathered array) as the
        modules' parameters, outside autograd. Collective when sharded."""
        if self.summoned is not None:
            raise RuntimeError(
                "summon_full_params: this FSDP unit's parameters are already summoned; do "
                "not nest summon_full_params over the same module"
            )
        with no_grad():
            full = self.gather(self.flat_param._array)
            if not self.sharded:
                full = full.copy()  # writeback=False must leave the parameters untouched
            if offload_to_cpu:
                full = Tensor(full).cpu()._array
        params, start = [], 0
        for numel, shape in zip(self.numels, self.shapes):
            view = full[start : start + numel].reshape(shape)
            params.append(Parameter(view, requires_grad=self.requires_grad))
            start += numel
        for module, name, index in self.slots:
            module._parameters[name] = params[index]
        self.summoned = [full, [p._array for p in params]]

    def unsummon(self, writeback: bool) -> None:
        """Unregister the full parameters; with ``writeback``, copy this rank's part of
        them (as the modules now hold them) back into the shard."""
        full, views = self.summoned
        self.summoned = None
        registered: list = [None] * len(views)
        for module, name, index in self.slots:
            registered[index] = module._parameters.pop(name, None)
        if not writeback:
            return
        device = Tensor(full).device
        start = 0
        for param, view, numel in zip(registered, views, self.numels):
            if param is not None and param._array is not view:  # a new array was assigned
                array = Tensor(param._array).to(device)._array
                full[start : start + numel] = array.reshape(-1)
            start += numel
        if self.sharded:
            shard = full[self.rank * self.shard_size : (self.rank + 1) * self.shard_size]
        else:  # NO_SHARD: every rank keeps the whole buffer
            shard = full
        if shard is not self.flat_param._array:
            self.flat_param._array[...] = Tensor(shard).to(self.flat_param.device)._array
        self.flat_param._version[0] += 1


def _forget(key: int) -> Any:
    def forget(_ref: Any) -> None:
        entry = _FLATTENED.get(key)
        if entry is not None and entry[0]() is None:
            del _FLATTENED[key]

    return forget


def _check_uniform(params: list[Parameter], where: list[tuple[Module, str, Parameter]]) -> None:
    first = params[0]
    for param in params[1:]:
        if param.dtype != first.dtype or param.device != first.device:
            raise ValueError(
                f"FullyShardedDataParallel: one unit's parameters must share dtype and device, "
                f"got {first.dtype} on {first.device} and {param.dtype} on {param.device}; "
                "convert the module first (module.to(...)) or wrap the differing sub-module "
                "in its own FSDP unit"
            )
        if param.requires_grad != first.requires_grad:

            def names(trainable: bool) -> str:
                found = [
                    f"{type(m).__name__}.{n}" for m, n, p in where if p.requires_grad == trainable
                ]
                return ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")

            raise ValueError(
                "FullyShardedDataParallel: one unit mixes frozen and trainable parameters "
                f"(frozen: {names(False)}; trainable: {names(True)}); "
                "wrap the frozen sub-modules in their own FSDP units (use_orig_params=True, "
                "which torch allows this with, is not supported)"
            )
