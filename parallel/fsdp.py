"""``FullyShardedDataParallel``: parameters, gradients and optimizer state sharded across
ranks (torch.distributed.fsdp's FSDP1 API, the common subset).

Each FSDP unit flattens the parameters of its module that no nested unit manages into one
buffer padded to a multiple of the world size, and keeps this rank's shard of it as its
``FlatParameter`` (``fsdp_flat.py``), the only parameter ``parameters()`` yields for it.

Synchronisation points (every rank must reach each, in the same order):
1. construction — with ``sync_module_states=True`` rank 0's parameters and buffers are
   broadcast (otherwise every rank must build the same model, as in torch);
2. each unit's forward — one all-gather of its full flat parameter (``NO_SHARD``: none);
3. each unit's backward outside ``no_sync()`` — once every gradient of the unit is summed,
   one reduce-scatter (``NO_SHARD``: all-reduce) of its flat gradient, averaged over ranks;
4. ``clip_grad_norm_`` (one all-reduce), ``summon_full_params``, ``state_dict`` and
   ``load_state_dict`` of the full type (one all-gather per unit), ``optim_state_dict`` of
   the full type (one all-gather per per-element state of each unit).

State dicts of the sharded and local types are in ``fsdp_sharded.py``, optimizer state
dicts in ``fsdp_optim.py``, and the class methods that choose and return them in
``fsdp_state_api.py``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from dtrain._tensor.autograd.grad_mode import no_grad
from dtrain._tensor.nn.module import Module
from dtrain._tensor.nn.module_state_dict import IncompatibleKeys
from dtrain._tensor.tensor import Tensor
from dtrain.parallel import api, collectives, fsdp_sharded
from dtrain.parallel.fsdp_flat import FLAT_PARAM_NAME, FlatHandle, flattened_by
from dtrain.parallel.fsdp_state import (
    WRAPPED,
    BackwardPrefetch,
    FullOptimStateDictConfig,
    FullStateDictConfig,
    ShardingStrategy,
    StateDictType,
    check_supported,
    clean_key,
    full_state_dict,
    load_full_state_dict,
    pop_wrapped,
    summon_full_params,
    units_of,
)
from dtrain.parallel.fsdp_state_api import FsdpStateDictMethods
from dtrain.parallel.fsdp_wrap import recursive_wrap
from dtrain.parallel.reduce_op import ReduceOp
from dtrain.runtime.backend import get_array_module


class FullyShardedDataParallel(FsdpStateDictMethods, Module):
    """Shard ``module``'s parameters over the ranks of ``process_group``; with an
    ``auto_wrap_policy``, sub-modules become nested units first, so only one unit's
    parameters are gathered at a time. Construction is collective."""

    def __init__(
        self,
        module: Module,
        process_group: Any = None,
        sharding_strategy: ShardingStrategy | None = None,
        cpu_offload: Any = None,
        auto_wrap_policy: Callable[..., bool] | None = None,
        backward_prefetch: BackwardPrefetch | None = BackwardPrefetch.BACKWARD_PRE,
        mixed_precision: Any = None,
        ignored_modules: Any = None,
        param_init_fn: Callable | None = None,
        device_id: Any = None,
        sync_module_states: bool = False,
        forward_prefetch: bool = False,
        limit_all_gathers: bool = True,
        use_orig_params: bool = False,
        ignored_states: Any = None,
        device_mesh: Any = None,
    ) -> None:
        if not isinstance(module, Module):
            raise TypeError(f"FullyShardedDataParallel wraps an nn.Module, got {type(module)}")
        strategy = ShardingStrategy.FULL_SHARD if sharding_strategy is None else sharding_strategy
        check_supported(
            strategy=strategy,
            cpu_offload=cpu_offload,
            mixed_precision=mixed_precision,
            ignored_modules=ignored_modules,
            ignored_states=ignored_states,
            param_init_fn=param_init_fn,
            use_orig_params=use_orig_params,
            device_mesh=device_mesh,
        )
        if device_id is not None:
            module.to(f"cuda:{device_id}" if isinstance(device_id, int) else device_id)
        if auto_wrap_policy is not None:

            def wrap(child: Module) -> FullyShardedDataParallel:
                return FullyShardedDataParallel(
                    child,
                    process_group=process_group,
                    sharding_strategy=strategy,
                    sync_module_states=sync_module_states,
                    use_orig_params=use_orig_params,
                )

            recursive_wrap(module, auto_wrap_policy, wrap, _is_unit, only_wrap_children=True)
        super().__init__()
        self._fsdp_wrapped_module = module
        self.group = process_group
        self.sharding_strategy = strategy
        for unit in units_of(module, FullyShardedDataParallel):
            unit._is_root = False
        self._is_root = True
        self._state_dict_type = StateDictType.FULL_STATE_DICT
        self._state_dict_config = FullStateDictConfig()
        self._optim_state_dict_config = FullOptimStateDictConfig()
        # a plain parent's state_dict()/load_state_dict() reaches this unit through these
        self.register_state_dict_post_hook(_state_dict_post_hook)
        self.register_load_state_dict_pre_hook(_load_state_dict_pre_hook)
        slots = _own_parameters(module)
        _check_not_tied(module, slots)
        if sync_module_states:
            _broadcast_state(module, slots, process_group)
        self._handle = None
        if slots:
            sharded = strategy is not ShardingStrategy.NO_SHARD
            self._handle = FlatHandle(slots, process_group, sharded)
            self.register_parameter(FLAT_PARAM_NAME, self._handle.flat_param)
            regather = self._handle.regather
            for owner in {id(m): m for m, _, _ in self._handle.slots}.values():
                # activation checkpointing inside the unit reruns these in backward
                owner.register_forward_pre_hook(lambda _module, _args: regather())

    # ---- access --------------------------------------------------------------------------
    @property
    def module(self) -> Module:
        """The wrapped module."""
        return self._fsdp_wrapped_module

    @property
    def process_group(self) -> Any:
        """The group this unit shards over (the default group when none was given)."""
        return api._group(self.group)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            wrapped = self.__dict__.get("_modules", {}).get(WRAPPED)
            if wrapped is None:
                raise
            return getattr(wrapped, name)

    def __getitem__(self, key: Any) -> Any:
        return self._fsdp_wrapped_module[key]

    @staticmethod
    def fsdp_modules(module: Module, root_only: bool = False) -> list:
        """The FSDP units in ``module`` (itself included); ``root_only``: the roots only."""
        units = units_of(module, FullyShardedDataParallel)
        return [u for u in units if u._is_root] if root_only else units

    def named_parameters(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Any]]:
        """As ``Module``'s; inside ``summon_full_params`` the original parameters under the
        original module's names (the wrappers' ``_fsdp_wrapped_module.`` left out), as torch."""
        items = super().named_parameters(prefix, recurse, remove_duplicate)
        return self._clean_if_summoned(items)

    def named_buffers(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Any]]:
        """As ``Module``'s; inside ``summon_full_params`` under the original module's names."""
        return self._clean_if_summoned(super().named_buffers(prefix, recurse, remove_duplicate))

    def _clean_if_summoned(self, items: Iterator) -> Iterator:
        units = self.fsdp_modules(self)
        if not any(u._handle is not None and u._handle.summoned is not None for u in units):
            return items
        return ((clean_key(name), value) for name, value in items)

    def extra_repr(self) -> str:
        numel = 0 if self._handle is None else self._handle.numel
        return f"sharding_strategy={self.sharding_strategy.name}, numel={numel}"

    # ---- the step --------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        handle = self._handle
        if handle is None:
            return self._fsdp_wrapped_module(*args, **kwargs)
        if handle.summoned is not None:
            raise RuntimeError(
                "FullyShardedDataParallel: forward inside summon_full_params() is not "
                "supported (as in torch); leave the context first"
            )
        handle.unshard()
        try:
            return self._fsdp_wrapped_module(*args, **kwargs)
        finally:
            handle.reshard()

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Accumulate gradients without communication inside the block: each unit keeps
        its full (unsharded) flat gradient; the first backward after it reduce-scatters
        the sum. Call it on the root."""
        self._check_root("no_sync")
        handles = [u._handle for u in self.fsdp_modules(self) if u._handle is not None]
        previous = [h.sync for h in handles]
        for h in handles:
            h.sync = False
        try:
            yield
        finally:
            for h, sync in zip(handles, previous):
                h.sync = sync

    def clip_grad_norm_(self, max_norm: float, norm_type: float = 2.0) -> Tensor:
        """Scale every gradient shard so that the gradients' global norm is at most
        ``max_norm``; returns that norm (before clipping). One all-reduce; no host reads.

        Collective: every rank of the group must call this, on the root."""
        self._check_root("clip_grad_norm_")
        norm_type = float(norm_type)
        if not norm_type > 0:
            raise ValueError(f"clip_grad_norm_: norm_type must be positive or inf, got {norm_type}")
        handles = [u._handle for u in self.fsdp_modules(self) if u._handle is not None]
        grads = [h.flat_param.grad._array for h in handles if h.flat_param.grad is not None]
        arrays = grads or [h.flat_param._array for h in handles]
        xp = get_array_module(*arrays)
        dtype = grads[0].dtype if grads else arrays[0].dtype if arrays else "float32"
        # float16/bfloat16 summed in float32, float64 kept (as torch's norms)
        work = xp.result_type(dtype, "float32")
        local = xp.zeros(1, dtype=work)
        for g in grads:
            part = xp.abs(g.astype(work, copy=False))
            if math.isinf(norm_type):
                local = xp.maximum(local, part.max())
            else:
                local += (part**norm_type).sum()
        sharded = any(h.sharded for h in handles)
        if sharded:
            op = ReduceOp.MAX if math.isinf(norm_type) else ReduceOp.SUM
            collectives.all_reduce(local, op, group=self.group)
        total = local if math.isinf(norm_type) else local ** (1.0 / norm_type)
        coefficient = xp.minimum(max_norm / (total + 1e-6), 1.0)
        with no_grad():
            for h in handles:
                grad = h.flat_param.grad
                if grad is not None:
                    grad._array *= coefficient.astype(grad.dtype)
                    grad._version[0] += 1
        return Tensor(total.reshape(()).astype(dtype))

    # ---- full parameters and state dicts -------------------------------------------------
    @staticmethod
    def summon_full_params(
        module: Module,
        recurse: bool = True,
        writeback: bool = True,
        rank0_only: bool = False,
        offload_to_cpu: bool = False,
        with_grads: bool = False,
    ) -> contextlib.AbstractContextManager:
        """Inside the block, the modules hold their full parameters (``recurse=False``:
        only ``module``'s own unit); with ``writeback``, changes to them are kept. Every
        rank sees the full parameters, also with ``rank0_only``.

        Collective: every rank of the group must enter it."""
        if recurse:
            units = units_of(module, FullyShardedDataParallel)
        else:
            units = [module] if isinstance(module, FullyShardedDataParallel) else []
        return summon_full_params(units, writeback, rank0_only, offload_to_cpu, with_grads)

    def state_dict(
        self, destination: dict | None = None, prefix: str = "", keep_vars: bool = False
    ) -> dict:
        """The state dict of the type ``set_state_dict_type`` chose, under the original
        module's keys: ``FULL_STATE_DICT`` (default) full tensors (copies; ``{}`` on other
        ranks with ``FullStateDictConfig(rank0_only=True)``), ``SHARDED_STATE_DICT`` a
        ``ShardedTensor`` per parameter, ``LOCAL_STATE_DICT`` each unit's flat shard under
        ``<unit>._flat_param``; buffers are plain tensors.

        Collective (``FULL_STATE_DICT``): every rank of the group must call this, on the root."""
        self._check_root("state_dict")
        return Module.state_dict(self, destination, prefix, keep_vars)

    def _typed_state_dict(self, prefix: str) -> dict:
        kind, config = self._state_dict_type, self._state_dict_config
        if kind is StateDictType.SHARDED_STATE_DICT:
            return fsdp_sharded.sharded_state_dict(self, config.offload_to_cpu, prefix)
        if kind is StateDictType.LOCAL_STATE_DICT:
            return fsdp_sharded.local_state_dict(self, config.offload_to_cpu, prefix)
        return full_state_dict(self, config, prefix)

    def load_state_dict(
        self, state_dict: Mapping, strict: bool = True, assign: bool = False
    ) -> IncompatibleKeys:
        """Load a state dict of the type ``set_state_dict_type`` chose (see ``state_dict``);
        each rank keeps its shard. A sharded one's ``ShardedTensor``s must hold this rank's
        ranges (fill the ones ``state_dict()`` gives); a local one loads only on the world
        size that saved it.

        Collective (``FULL_STATE_DICT``): every rank of the group must call this, on the root."""
        self._check_root("load_state_dict")
        if assign:
            raise NotImplementedError(
                "FullyShardedDataParallel.load_state_dict(assign=True) is not supported; the "
                "values are copied into the shards"
            )
        return Module.load_state_dict(self, state_dict, strict)

    def _typed_load(self, state_dict: Mapping, strict: bool) -> Any:
        kind = self._state_dict_type
        if kind is StateDictType.SHARDED_STATE_DICT:
            return fsdp_sharded.load_sharded_state_dict(self, state_dict, strict)
        if kind is StateDictType.LOCAL_STATE_DICT:
            return fsdp_sharded.load_local_state_dict(self, state_dict, strict)
        return load_full_state_dict(self, state_dict, strict)

    def _check_root(self, what: str) -> None:
        if not self._is_root:
            raise RuntimeError(
                f"FullyShardedDataParallel.{what}: call it on the root FSDP module (the "
                "outermost one), not on a nested unit"
            )


def _state_dict_post_hook(unit: Any, state_dict: dict, prefix: str, _metadata: dict) -> None:
    """The root unit's entries (flat shards, wrapped names) replaced by its typed ones;
    entries that hooks of modules inside it added lose the wrappers' names too (as torch)."""
    if not unit._is_root:
        return
    for key in unit._state_slots():
        state_dict.pop(prefix + key, None)
    added = pop_wrapped(state_dict, prefix)  # what hooks inside it added
    state_dict.update(unit._typed_state_dict(prefix))
    state_dict.update(added)


def _load_state_dict_pre_hook(
    unit: Any,
    state_dict: dict,
    prefix: str,
    _metadata: dict,
    _strict: bool,
    missing_keys: list,
    unexpected_keys: list,
    _error_msgs: list,
) -> None:
    """The root unit loads its keys itself (by type), then leaves each of its slots its own
    tensor, so the generic loader below it finds every key and changes nothing."""
    if not unit._is_root:
        return
    mine = {k[len(prefix) :]: state_dict.pop(k) for k in list(state_dict) if k.startswith(prefix)}
    result = unit._typed_load(mine, strict=False)
    missing_keys.extend(prefix + k for k in result.missing_keys)
    unexpected_keys.extend(prefix + k for k in result.unexpected_keys)
    for key, (_, _, tensor) in unit._state_slots().items():
        state_dict[prefix + key] = tensor


def _is_unit(module: Module) -> bool:
    return isinstance(module, FullyShardedDataParallel)


def _own_parameters(module: Module) -> list:
    """``(module, name, parameter)`` for each parameter slot not inside a nested unit, in
    ``named_parameters`` order."""
    slots, stack = [], [module]
    while stack:
        current = stack.pop()
        slots.extend((current, n, p) for n, p in current._parameters.items() if p is not None)
        children = [m for m in current._modules.values() if m is not None and not _is_unit(m)]
        stack.extend(reversed(children))
    return slots


def _check_not_tied(module: Module, slots: list) -> None:
    """Refuse a parameter that a nested (or earlier) unit already flattened: each unit
    would train its own copy of it."""
    paths = {}
    for prefix, sub in module.named_modules(remove_duplicate=False):
        if _is_unit(sub):
            continue
        head = f"{clean_key(prefix)}." if prefix else ""
        for name, param in sub._parameters.items():
            if param is not None:
                paths.setdefault(id(param), head + name)
    units = {id(u._handle): clean_key(p) for p, u in module.named_modules() if _is_unit(u)}
    for owner, name, param in slots:
        found = flattened_by(param)
        if found is None:
            continue
        handle, where = found
        other = f"{where} of the unit at {units[id(handle)]!r}" if id(handle) in units else where
        mine = paths.get(id(param), f"{type(owner).__name__}.{name}")
        raise ValueError(
            f"FullyShardedDataParallel: parameter {mine!r} is tied to {other}, which another "
            "FSDP unit already holds; each unit would train its own copy of it. Keep the "
            "modules that share it in one unit: wrap their common ancestor and leave them "
            "out of the auto_wrap_policy (torch FSDP1 does not support this either)"
        )


def _broadcast_state(module: Module, slots: list, group: Any) -> None:
    src = api._group(group).ranks[0]
    tensors = {id(p): p for _, _, p in slots}
    stack = [module]
    while stack:
        current = stack.pop()
        tensors.update((id(b), b) for b in current._buffers.values() if b is not None)
        stack.extend(m for m in current._modules.values() if m is not None and not _is_unit(m))
    with no_grad():
        works = [
            collectives.broadcast(t, src, group=group, async_op=True) for t in tensors.values()
        ]
        for work in works:
            work.wait()


__all__ = ["FullyShardedDataParallel"]
