"""FSDP's optimizer state dicts (torch's ``FSDP.optim_state_dict`` family).

An optimizer built on an FSDP model keeps state per ``FlatParameter`` shard. Saving maps it
back to the original parameters, keyed by their names (the full state dict's keys):
``FULL_STATE_DICT`` gathers each per-element state (``exp_avg``, ``momentum_buffer`` ...)
into the parameter's shape; ``SHARDED_STATE_DICT`` gives this rank's range of it as a
``ShardedTensor``. Scalars (``step``) are copied to every parameter of the unit, and the
state of the padding is dropped. Loading (``to_load``) cuts either form into this rank's
shards (zeros for the padding) at any world size, keyed by the optimizer's indices.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np

from dtrain._tensor.tensor import Tensor
from dtrain.parallel import api, collectives
from dtrain.parallel.fsdp_flat import FlatParameter
from dtrain.parallel.fsdp_layout import Piece, layout
from dtrain.parallel.fsdp_sharded import piece_of
from dtrain.parallel.fsdp_state import clean_key
from dtrain.parallel.objects import broadcast_object_list
from dtrain.parallel.sharded_tensor import ShardedTensor
from dtrain.runtime.backend import get_array_module


def _numbered(optim: Any) -> list[tuple[int, Any]]:
    """``(index, parameter)`` as ``optim.state_dict()`` numbers them."""
    index: dict[int, int] = {}
    out = []
    for group in optim.param_groups:
        for p in group["params"]:
            if id(p) not in index:
                index[id(p)] = len(index)
                out.append((index[id(p)], p))
    return out


def _names(model: Any, unit_type: type) -> tuple[OrderedDict, dict[int, str]]:
    """The flat parameters' pieces and the other parameters' names, by id."""
    pieces = layout(model, unit_type)
    plain = {
        id(p): clean_key(n) for n, p in model.named_parameters() if not isinstance(p, FlatParameter)
    }
    return pieces, plain


def _fqns(p: Any, pieces: Mapping, plain: Mapping) -> list[str]:
    if id(p) in pieces:
        return [piece.fqn for piece in pieces[id(p)]]
    if id(p) in plain:
        return [plain[id(p)]]
    raise ValueError(
        f"FSDP optimizer state dict: the optimizer holds a parameter of shape "
        f"{tuple(p.shape)} that the model does not; pass the model the optimizer was built on"
    )


def _per_element(value: Any, like: Any) -> bool:
    array = value._array if isinstance(value, Tensor) else value
    shape = getattr(array, "shape", None)
    return shape is not None and len(shape) == 1 and tuple(shape) == tuple(like.shape)


def optim_state_dict(
    model: Any,
    optim: Any,
    osd: Mapping,
    unit_type: type,
    full: bool,
    rank0_only: bool,
    offload_to_cpu: bool,
    group: Any = None,
) -> dict:
    """``osd`` (``optim.state_dict()``) keyed by the original parameters' names: full
    tensors (``full``) or this rank's ``ShardedTensor``s.

    Collective when ``full``: every rank of the group must call this."""
    pieces, plain = _names(model, unit_type)
    saved = {_key(k): v for k, v in osd["state"].items()}
    state: dict[str, dict] = {}
    for index, p in _numbered(optim):
        entry = saved.get(index)
        if id(p) not in pieces:
            if entry is not None:
                state[_fqns(p, pieces, plain)[0]] = {
                    k: _copy(v, offload_to_cpu) for k, v in entry.items()
                }
            continue
        if entry is None:
            continue
        unit_pieces: list[Piece] = pieces[id(p)]
        out: list[dict] = [{} for _ in unit_pieces]
        for name, value in entry.items():
            if not _per_element(value, p):
                for d in out:  # each name its own copy (a live step keeps counting)
                    d[name] = _copy(value, offload_to_cpu)
                continue
            array = value._array if isinstance(value, Tensor) else value
            if full:
                array = get_array_module(array).ascontiguousarray(array)
                gathered = unit_pieces[0].handle.gather(array)
                for d, piece in zip(out, unit_pieces):
                    part = gathered[piece.start : piece.start + piece.numel].reshape(piece.shape)
                    d[name] = _copy(Tensor(part), offload_to_cpu)
            else:
                for d, piece in zip(out, unit_pieces):
                    sharded = piece.sharded(array)
                    if offload_to_cpu:
                        sharded = ShardedTensor(
                            sharded.local_tensor().cpu(), sharded.shape, sharded.offset
                        )
                    d[name] = sharded
        for d, piece in zip(out, unit_pieces):
            state.setdefault(piece.fqn, d)  # a parameter under two names: the first
    groups = []
    by_index = dict(_numbered(optim))
    for saved_group in osd["param_groups"]:
        packed = {k: v for k, v in saved_group.items() if k != "params"}
        names: dict[str, None] = {}  # ordered, each name once
        for i in saved_group["params"]:
            names.update(dict.fromkeys(_fqns(by_index[int(i)], pieces, plain)))
        packed["params"] = list(names)
        groups.append(packed)
    if rank0_only and api.get_rank(group) != 0:
        return {}
    return {"state": state, "param_groups": groups}


def _key(key: Any) -> Any:
    return int(key) if isinstance(key, str) and key.isdigit() else key


def _copy(value: Any, offload: bool) -> Any:
    """A tensor state value as the state dict holds it: a copy (on the CPU with
    ``offload``), never the optimizer's live tensor; other values as they are."""
    if not isinstance(value, Tensor):
        return value
    value = value.detach()
    return value.cpu().clone() if offload else value.clone()


def to_load(model: Any, optim: Any, osd: Mapping, unit_type: type) -> dict:
    """``osd`` (keyed by the original parameters' names; full tensors or this rank's
    ``ShardedTensor``s) as ``optim.load_state_dict`` takes it for this rank's shards."""
    pieces, plain = _names(model, unit_type)
    if optim is not None:
        numbered = _numbered(optim)
        group_params = [g["params"] for g in optim.param_groups]
    else:  # as torch: the optimizer was built on model.parameters()
        numbered = list(enumerate(model.parameters()))
        group_params = _groups_from_names(osd, numbered, pieces, plain)
    saved_state = osd.get("state", {})
    known = None if optim is None else getattr(optim, "_per_element_state", None)
    per_element_names = None if known is None else set(known)
    used: set[str] = set()
    state: dict[int, dict] = {}
    for index, p in numbered:
        names = _fqns(p, pieces, plain)
        found = [n for n in names if n in saved_state]
        used.update(found)
        if not found:
            continue
        if len(found) != len(names):
            absent = [n for n in names if n not in saved_state]
            raise KeyError(
                f"optim_state_dict_to_load: the state of {absent} is missing while "
                f"{found[:3]} of the same FSDP unit have state; the optimizer state dict is of "
                "another model (or was cut)"
            )
        if id(p) not in pieces:
            state[index] = dict(saved_state[names[0]])
            continue
        state[index] = _flatten(p, pieces[id(p)], saved_state, per_element_names)
    unknown = [n for n in saved_state if n not in used]
    if unknown:
        raise KeyError(
            f"optim_state_dict_to_load: state for {unknown[:5]}, which this model has no "
            "parameter of; load a state dict saved from the same model"
        )
    saved_groups = osd["param_groups"]
    if len(saved_groups) != len(group_params):
        raise ValueError(
            f"optim_state_dict_to_load: the state dict has {len(saved_groups)} parameter "
            f"groups but the optimizer has {len(group_params)}; build it with the same groups"
        )
    number = {id(p): i for i, p in numbered}
    groups = []
    for i, (saved, params) in enumerate(zip(saved_groups, group_params)):
        mine = [n for p in params for n in _fqns(p, pieces, plain)]
        if sorted(set(mine)) != sorted(set(saved["params"])):
            raise ValueError(
                f"optim_state_dict_to_load: parameter group {i} of the state dict holds "
                f"{list(saved['params'])[:4]}... but the optimizer's holds {mine[:4]}...; "
                "build the optimizer with the same groups as the saved one"
            )
        packed = {k: v for k, v in saved.items() if k != "params"}
        packed["params"] = [number[id(p)] for p in params]
        groups.append(packed)
    return {"state": state, "param_groups": groups}


def _flatten(
    flat: Any, unit_pieces: list[Piece], saved_state: Mapping, per_element_names: set | None
) -> dict:
    """One flat parameter's state from its pieces' (padding: zeros)."""
    entries = [saved_state[piece.fqn] for piece in unit_pieces]
    out: dict[str, Any] = {}
    xp = get_array_module(flat._array)
    for name, first in entries[0].items():
        if not _is_per_element(name, unit_pieces, entries, per_element_names):
            out[name] = first
            continue
        local = first.local_tensor() if isinstance(first, ShardedTensor) else first
        shard = xp.zeros(flat.numel(), dtype=local._array.dtype)
        for piece, entry in zip(unit_pieces, entries):
            if name not in entry:
                raise KeyError(
                    f"optim_state_dict_to_load: {piece.fqn!r} has no {name!r} state while "
                    f"{unit_pieces[0].fqn!r} of the same FSDP unit has"
                )
            where = f"optim_state_dict_to_load: state[{piece.fqn!r}][{name!r}]"
            part = piece_of(piece, entry[name], where)
            shard[piece.shard_slice] = Tensor(part).to(flat.device)._array
        out[name] = Tensor(shard)
    return out


def _is_per_element(
    name: str, unit_pieces: list[Piece], entries: list[Mapping], per_element_names: set | None
) -> bool:
    """Whether the saved state ``name`` of a unit is per element, decided over all its
    pieces: a ``ShardedTensor``, or a tensor of its piece's (not 0-d) shape, is. When every
    piece is 0-d its state cannot tell a scalar from a per-element value: then the
    optimizer's ``_per_element_state`` decides (without one, any 0-d tensor but ``step``)."""
    values = [(piece, entry.get(name)) for piece, entry in zip(unit_pieces, entries)]
    if any(isinstance(value, ShardedTensor) for _, value in values):
        return True
    if any(
        isinstance(value, Tensor) and piece.shape != () and tuple(value.shape) == piece.shape
        for piece, value in values
    ):
        return True
    if any(piece.shape != () for piece in unit_pieces):
        return False
    if per_element_names is not None:
        return name in per_element_names
    return name != "step" and all(
        isinstance(value, Tensor) and value.ndim == 0 for _, value in values
    )


def _groups_from_names(osd: Mapping, numbered: list, pieces: Mapping, plain: Mapping) -> list:
    """The model's parameters grouped as ``osd``'s groups name them (torch's assumption
    when no optimizer is given)."""
    group_of: dict[str, int] = {}
    for i, group in enumerate(osd["param_groups"]):
        group_of.update((n, i) for n in group["params"])
    groups: list[list] = [[] for _ in osd["param_groups"]]
    for _, p in numbered:
        names = _fqns(p, pieces, plain)
        found = {group_of[n] for n in names if n in group_of}
        if len(found) > 1:
            raise ValueError(
                f"shard_full_optim_state_dict: the parameters of one FSDP unit ({names[:3]}) "
                "are in different parameter groups; dtrain FSDP needs one group per unit"
            )
        if found:
            groups[found.pop()].append(p)
    return groups


def broadcast_state(osd: Mapping | None, group: Any = None) -> dict:
    """Rank ``group``'s first rank's ``osd`` on every rank: its structure as JSON, then
    each tensor by one broadcast (tuples arrive as lists).

    Collective: every rank of the group must call this."""
    src = api._group(group).ranks[0]
    tensors: list[Any] = []

    def encode(value: Any) -> Any:
        if isinstance(value, Tensor):
            tensors.append(value)
            return {
                "__tensor__": len(tensors) - 1,
                "shape": list(value.shape),
                "dtype": str(value._array.dtype),
            }
        if isinstance(value, Mapping):
            return {str(k): encode(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [encode(v) for v in value]
        return value

    box = [encode(osd) if api.get_rank() == src else None]
    broadcast_object_list(box, src=src, group=group)
    received: list[Any] = []

    def decode(value: Any) -> Any:
        if isinstance(value, dict) and "__tensor__" in value:
            return received[value["__tensor__"]]
        if isinstance(value, dict):
            return {k: decode(v) for k, v in value.items()}
        if isinstance(value, list):
            return [decode(v) for v in value]
        return value

    specs = {t["__tensor__"]: t for t in _walk_tensors(box[0], [])}
    for i in range(len(specs)):
        if api.get_rank() == src:
            tensor = Tensor(np.ascontiguousarray(tensors[i].cpu()._array))
        else:
            tensor = Tensor(np.empty(specs[i]["shape"], dtype=specs[i]["dtype"]))
        collectives.broadcast(tensor, src, group=group)
        received.append(tensor)
    if box[0] is None:
        raise ValueError(
            "scatter_full_optim_state_dict: rank 0 passed None; pass it the full "
            "optimizer state dict (from FSDP.full_optim_state_dict)"
        )
    return decode(box[0])


def _walk_tensors(value: Any, found: list) -> list:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict) and "__tensor__" in item:
            found.append(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found
