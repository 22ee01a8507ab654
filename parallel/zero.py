"""``ZeroRedundancyOptimizer``: optimizer state sharded across the ranks (ZeRO stage 1), as
``torch.distributed.optim.ZeroRedundancyOptimizer``.

Each rank owns a shard of the parameters (torch's greedy partition: largest first, each to
the rank with the fewest elements so far, group by group) and builds the local optimizer
over that shard only, so it holds optimizer state for its shard only. ``step()`` updates
the shard, then every rank's shard is broadcast from its owner: one flat broadcast per rank
that owns parameters (torch's ``parameters_as_bucket_view=True`` traffic).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from dtrain._tensor.optim.optimizer import Optimizer
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.parallel import api, collectives
from dtrain.parallel.join import Join, Joinable, JoinHook
from dtrain.parallel.objects import broadcast_object_list
from dtrain.parallel.zero_join import ZeROJoinHook
from dtrain.runtime.backend import get_array_module, is_cuda_array
from dtrain.runtime.device import as_numpy, to_device


def _refuse_unordered(what: str, params: Any) -> None:
    """Sets iterate in an order that differs between processes, so ranks would partition
    (and broadcast) the parameters differently: refused, as PyTorch's optimizers do."""
    if isinstance(params, (set, frozenset)):
        raise TypeError(
            f"ZeroRedundancyOptimizer: {what} is a set, whose order differs between ranks; "
            "pass a list (e.g. list(model.parameters()))"
        )


class ZeroRedundancyOptimizer(Optimizer, Joinable):
    """Wrap ``optimizer_class`` so that each rank keeps optimizer state for its shard of the
    parameters only; after ``step()`` every rank holds every updated parameter.

    Collective: every rank of ``process_group`` constructs it with the same parameters (in
    the same order) and calls ``step``, ``add_param_group`` and ``consolidate_state_dict``
    together.

    Args:
        params: tensors, or param-group dicts (each with ``"params"``), all of one dtype
            on one device.
        optimizer_class: the local optimizer's class, e.g. ``dtrain.optim.Adam``.
        process_group: the group to shard over (None: the default group).
        parameters_as_bucket_view: accepted; dtrain always sends one flat buffer per rank,
            but parameters keep their own storage (they are not views into it).
        overlap_with_ddp: not supported (raises).
        **defaults: the local optimizer's options (``lr=...``).

    Raises:
        TypeError: ``params`` is a tensor, mixes tensors and dicts, or ``optimizer_class``
            is not an ``Optimizer`` subclass.
        ValueError: no parameters, a group without ``"params"``, parameters of different
            dtypes or devices, or this rank is not in ``process_group``.
        NotImplementedError: ``overlap_with_ddp=True``.
    """

    def __init__(
        self,
        params: Any,
        optimizer_class: type[Optimizer],
        process_group: Any = None,
        parameters_as_bucket_view: bool = False,
        overlap_with_ddp: bool = False,
        **defaults: Any,
    ) -> None:
        if overlap_with_ddp:
            raise NotImplementedError(
                "ZeroRedundancyOptimizer(overlap_with_ddp=True) is not supported; use "
                "overlap_with_ddp=False and call step() after backward (DDP already overlaps "
                "its gradient all-reduce with backward)"
            )
        if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, Optimizer)):
            raise TypeError(
                f"ZeroRedundancyOptimizer: optimizer_class must be an Optimizer subclass such "
                f"as dtrain.optim.Adam, got {optimizer_class!r}"
            )
        params = self._verify_params(params)
        self.initialized = False
        Optimizer.__init__(self, params, defaults)
        Joinable.__init__(self)
        group = api._group(process_group)
        if group is None:
            raise ValueError(
                "ZeroRedundancyOptimizer: this rank is not in process_group; construct it "
                "only on the group's ranks"
            )
        self.process_group = group
        self.world_size: int = api.get_world_size(group)
        self.rank: int = api.get_rank(group)
        self.global_rank: int = group.ranks[self.rank]
        self.parameters_as_bucket_view = bool(parameters_as_bucket_view)
        self._overlap_with_ddp = False
        self._optim_defaults = defaults
        self._default_device = self._all_params[0].device
        self._partition_cache: list[list[dict[str, Any]]] = []
        self._all_state_dicts: list[dict[str, Any]] = []
        self.optim: Optimizer = optimizer_class(self._partition_parameters()[self.rank], **defaults)
        _sync_param_groups(self.optim.param_groups, self.param_groups)
        self.initialized = True

    # ---- arguments and partition --------------------------------------------------------
    def _verify_params(self, params: Any) -> list[Any]:
        if isinstance(params, Tensor):
            raise TypeError(
                "ZeroRedundancyOptimizer: params should be an iterable of Tensors or dicts, "
                "but got a Tensor; pass [tensor] or model.parameters()"
            )
        _refuse_unordered("params", params)
        try:
            items = list(params)
        except TypeError as exc:
            raise TypeError(
                "ZeroRedundancyOptimizer: params should be an iterable of Tensors or dicts, "
                f"but got {type(params).__name__}"
            ) from exc
        if not items:
            raise ValueError(
                "ZeroRedundancyOptimizer got an empty parameter list; check that the model has "
                "parameters (a generator such as model.parameters() can only be iterated once)"
            )
        if all(isinstance(p, Tensor) for p in items):
            self._all_params = list(items)
        elif all(isinstance(p, dict) for p in items):
            self._all_params = []
            for i, group in enumerate(items):
                if "params" not in group:
                    raise ValueError(
                        f"ZeroRedundancyOptimizer: parameter group {i} has no 'params' key; "
                        "each group must map 'params' to its parameters"
                    )
                group_params = group["params"]
                _refuse_unordered(f"parameter group {i}'s params", group_params)
                group_params = [group_params] if isinstance(group_params, Tensor) else group_params
                group["params"] = list(group_params)
                self._all_params.extend(group["params"])
        else:
            kinds = sorted({type(p).__name__ for p in items})
            raise TypeError(
                f"ZeroRedundancyOptimizer: params should be all Tensors or all dicts, got {kinds}"
            )
        self._check_same_type(self._all_params)
        return items

    def _check_same_type(self, params: list[Any]) -> None:
        first = self._all_params[0]
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(
                    f"ZeroRedundancyOptimizer can only optimize Tensors, got {type(p).__name__}"
                )
            if p.dtype != first.dtype or p.device != first.device:
                raise ValueError(
                    "ZeroRedundancyOptimizer only supports parameters of one dtype on one "
                    f"device, but got {first.dtype} on {first.device} and {p.dtype} on "
                    f"{p.device}; cast them with model.to(dtype, device) first"
                )

    def _partition_parameters(self) -> list[list[dict[str, Any]]]:
        """Each rank's param groups (one per group, maybe empty), as torch partitions: each
        group's parameters largest first, each to the rank with the fewest elements so far
        (counted over all groups; ties to the lowest rank)."""
        if not self._partition_cache:
            per_rank: list[list[dict[str, Any]]] = [[] for _ in range(self.world_size)]
            sizes = [0] * self.world_size
            for group in self.param_groups:
                shards: list[list[Tensor]] = [[] for _ in range(self.world_size)]
                for p in sorted(group["params"], key=lambda t: t.numel(), reverse=True):
                    rank = sizes.index(min(sizes))
                    shards[rank].append(p)
                    sizes[rank] += p.numel()
                for rank, shard in enumerate(shards):
                    per_rank[rank].append({**group, "params": shard})
            self._partition_cache = per_rank
        return self._partition_cache

    def _shard(self, rank: int) -> list[Tensor]:
        return [p for group in self._partition_parameters()[rank] for p in group["params"]]

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group (e.g. unfrozen layers); its parameters are partitioned as
        the first groups were, and this rank's share joins the local optimizer.

        Collective: every rank must call this with the same group."""
        if self.initialized:
            params = param_group.get("params", [])
            params = [params] if isinstance(params, Tensor) else list(params)
            param_group["params"] = params
            self._check_same_type(params)
        super().add_param_group(param_group)
        if self.initialized:
            self._all_params.extend(param_group["params"])
            self._partition_cache = []
            self.optim.add_param_group(self._partition_parameters()[self.rank][-1])
            _sync_param_groups(self.optim.param_groups, self.param_groups)

    # ---- steps --------------------------------------------------------------------------
    def step(self, closure: Callable[[], Any] | None = None, **kwargs: Any) -> Any:
        """Step this rank's shard, then broadcast every shard from its owner.

        Collective: every rank in the group must call this.

        Args:
            closure: re-evaluates the model and returns the loss (passed to the local
                optimizer, which calls it on every rank).
            **kwargs: passed to the local optimizer's ``step``.

        Returns:
            The local optimizer's return value (the closure's loss).
        """
        Join.notify_join_context(self)
        return self._step_and_sync(closure, kwargs)

    def _step_and_sync(self, closure: Callable[[], Any] | None, kwargs: dict[str, Any]) -> Any:
        _sync_param_groups(self.param_groups, self.optim.param_groups)
        if closure is None:
            loss = self.optim.step(**kwargs)
        else:
            loss = self.optim.step(closure=closure, **kwargs)
        _sync_param_groups(self.optim.param_groups, self.param_groups)
        self._sync_params()
        return loss

    def _sync_params(self) -> None:
        """Broadcast each rank's shard from it, packed into one flat buffer per rank."""
        if self.world_size == 1:
            return
        pending = []
        for rank in range(self.world_size):
            shard = self._shard(rank)
            if not shard:
                continue
            flat = _pack(shard, fill=rank == self.rank)
            src = self.process_group.ranks[rank]
            work = collectives.broadcast(wrap(flat), src, group=self.process_group, async_op=True)
            pending.append((work, rank, shard, flat))
        for work, rank, shard, flat in pending:
            work.wait()
            if rank != self.rank:
                _unpack(flat, shard)

    # ---- state dicts --------------------------------------------------------------------
    def consolidate_state_dict(self, to: int = 0) -> None:
        """Collect every rank's shard of the optimizer state on group rank ``to`` (CPU
        copies), for ``state_dict()`` there.

        Collective: every rank in the group must call this.

        Raises:
            ValueError: ``to`` is not a rank of the group.
            TypeError: a state value is neither a tensor nor a JSON value.
        """
        if not isinstance(to, int) or not 0 <= to < self.world_size:
            raise ValueError(
                f"consolidate_state_dict: to={to!r} is not a rank of the group; pass 0.."
                f"{self.world_size - 1}"
            )
        _sync_param_groups(self.param_groups, self.optim.param_groups)
        self._all_state_dicts = _gather_state(
            self.optim.state_dict(), to, self.process_group, self._default_device
        )

    def state_dict(self) -> dict[str, Any]:
        """The whole optimizer state, in the plain optimizer's layout (global parameter
        indices), as last consolidated to this rank.

        Raises:
            RuntimeError: ``consolidate_state_dict(to=<this rank>)`` has not been called.
        """
        if not self._all_state_dicts:
            raise RuntimeError(
                "Optimizer state has not been consolidated on this rank. "
                f"Please call `consolidate_state_dict(to={self.rank})` on "
                "all ranks beforehand if you meant to save the global state."
            )
        state_dict = super().state_dict()
        params = [p for group in self.param_groups for p in group["params"]]
        index = {id(p): i for i, p in enumerate(params)}
        state: dict[int, Any] = {}
        for rank, local in enumerate(self._all_state_dicts):
            groups = self._partition_parameters()[rank]
            sizes = [len(g["params"]) for g in groups]
            if [len(g["params"]) for g in local["param_groups"]] != sizes:
                raise RuntimeError(
                    "ZeroRedundancyOptimizer.state_dict: the parameter groups changed since "
                    "consolidate_state_dict(); call it again on every rank"
                )
            for local_group, group in zip(local["param_groups"], groups):
                for local_index, p in zip(local_group["params"], group["params"]):
                    if local_index in local["state"]:
                        state[index[id(p)]] = local["state"][local_index]
        state_dict["state"] = dict(sorted(state.items()))
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a whole-optimizer state dict (``state_dict()``'s, or a plain optimizer's of
        the same parameters): group options on every rank, state for this rank's shard."""
        saved_groups = state_dict["param_groups"]
        super().load_state_dict({"state": {}, "param_groups": saved_groups})  # checks sizes
        saved_state = {_int_key(k): v for k, v in state_dict["state"].items()}
        index = {
            id(p): _int_key(k)
            for group, saved in zip(self.param_groups, saved_groups)
            for p, k in zip(group["params"], saved["params"])
        }
        local_state: dict[int, Any] = {}
        local_groups = []
        count = 0  # the local optimizer numbers its shard's parameters in group order
        for group, saved in zip(self._partition_parameters()[self.rank], saved_groups):
            ids = []
            for p in group["params"]:
                if index[id(p)] in saved_state:
                    local_state[count] = saved_state[index[id(p)]]
                ids.append(count)
                count += 1
            options = {k: v for k, v in saved.items() if k not in ("params", "param_names")}
            local_groups.append({**options, "params": ids})
        self.optim.load_state_dict({"state": local_state, "param_groups": local_groups})
        _sync_param_groups(self.param_groups, self.optim.param_groups)

    # ---- Joinable -----------------------------------------------------------------------
    def join_hook(self, **kwargs: Any) -> JoinHook:
        """The hook that shadows a step (the shard's update and the broadcasts) on a rank
        out of inputs; ``kwargs`` (the ``Join``'s) are ignored."""
        return ZeROJoinHook(self)

    @property
    def join_device(self) -> Any:
        """The parameters' device."""
        return self._default_device

    @property
    def join_process_group(self) -> Any:
        """The group the parameters are sharded over."""
        return self.process_group


def _sync_param_groups(src: list[dict[str, Any]], dst: list[dict[str, Any]]) -> None:
    """Copy every option except ``params`` from ``src``'s groups to ``dst``'s."""
    for s, d in zip(src, dst):
        d.update((k, v) for k, v in s.items() if k != "params")


def _int_key(key: Any) -> Any:
    return int(key) if isinstance(key, str) and key.isdigit() else key


def _gather_state(local: dict[str, Any], to: int, group: Any, device: Any) -> list[dict]:
    """Every rank's local optimizer state dict on group rank ``to`` as host copies ([] on
    the other ranks). As torch, by broadcasts (nccl has no gather): each rank but ``to`` in
    turn sends its structure as JSON (never pickle), then its tensors."""
    gathered: list[dict] = []
    me = group.rank
    for rank in range(group.size):
        if rank == to:
            if me == to:
                meta, arrays = _encode(local)
                gathered.append(_decode(meta, [as_numpy(a).copy() for a in arrays]))
            continue
        src = group.ranks[rank]
        meta, arrays = _encode(local) if me == rank else (None, [])
        box = [meta]
        broadcast_object_list(box, src=src, group=group)
        meta = box[0]
        if me != rank:
            arrays = [
                to_device(np.empty(shape, np.dtype(dtype)), device)
                for shape, dtype in meta["tensors"]
            ]
        works = [collectives.broadcast(wrap(a), src, group=group, async_op=True) for a in arrays]
        for work in works:
            work.wait()
        if me == to:
            gathered.append(_decode(meta, [as_numpy(a) for a in arrays]))
    return gathered


def _encode(local: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """A state dict as JSON (each value ``{"v": value}`` or ``{"t": k}``, the k-th of the
    returned contiguous arrays) and its tensors' arrays."""
    arrays: list[Any] = []
    state = []
    for key, values in local["state"].items():
        encoded = {}
        for name, value in values.items():
            if isinstance(value, Tensor):
                array = value._array
                arrays.append(get_array_module(array).ascontiguousarray(array))
                encoded[name] = {"t": len(arrays) - 1}
            else:
                encoded[name] = {"v": value}
        state.append([key, encoded])
    meta = {
        "state": state,
        "groups": [list(g["params"]) for g in local["param_groups"]],
        "tensors": [[list(a.shape), a.dtype.name] for a in arrays],
    }
    return meta, arrays


def _decode(meta: dict[str, Any], arrays: list[Any]) -> dict[str, Any]:
    state = {
        key: {n: wrap(arrays[e["t"]]) if "t" in e else e["v"] for n, e in encoded.items()}
        for key, encoded in meta["state"]
    }
    return {"state": state, "param_groups": [{"params": ids} for ids in meta["groups"]]}


def _pack(shard: list[Tensor], fill: bool) -> Any:
    """A flat buffer the size of ``shard``: its values (``fill``) or uninitialised."""
    arrays = [p._array for p in shard]
    xp = get_array_module(*arrays)
    if is_cuda_array(arrays[0]):
        with arrays[0].device:
            return _pack_here(xp, arrays, fill)
    return _pack_here(xp, arrays, fill)


def _pack_here(xp: Any, arrays: list[Any], fill: bool) -> Any:
    if fill:
        return xp.concatenate([a.ravel() for a in arrays])
    return xp.empty(sum(a.size for a in arrays), arrays[0].dtype)


def _unpack(flat: Any, shard: list[Tensor]) -> None:
    offset = 0
    for p in shard:
        size = p._array.size
        p._array[...] = flat[offset : offset + size].reshape(p._array.shape)
        p._version[0] += 1  # changed in place, as an optimizer step does
        offset += size


__all__ = ["ZeroRedundancyOptimizer"]
