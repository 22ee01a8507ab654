"""FSDP's state dicts that gather nothing: ``SHARDED_STATE_DICT`` (a ``ShardedTensor`` per
original parameter: the range of it this rank's flat shard holds, under the full state
dict's key) and ``LOCAL_STATE_DICT`` (each unit's flat shard as it is, under
``<unit>._flat_param``), buffers as plain tensors in both, and loading them back."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from dtrain._tensor.autograd.grad_mode import no_grad
from dtrain._tensor.nn.module_state import load_entry
from dtrain._tensor.nn.module_state_dict import IncompatibleKeys
from dtrain._tensor.tensor import Tensor
from dtrain.parallel.fsdp_layout import Piece, original_entries, shard_start
from dtrain.parallel.fsdp_state import check_keys, clean_key, is_flat
from dtrain.parallel.sharded_tensor import ShardedTensor


def _out(tensor: Tensor, offload: bool) -> Tensor:
    tensor = tensor.detach().clone()
    return tensor.cpu() if offload else tensor


def sharded_state_dict(root: Any, offload_to_cpu: bool, prefix: str = "") -> OrderedDict:
    """The full state dict's keys, each parameter a ``ShardedTensor`` (a copy of this
    rank's range of it), each buffer a plain tensor (a copy). No communication."""
    result = OrderedDict()
    for key, entry in original_entries(root, type(root)).items():
        if entry[0] == "param":
            piece: Piece = entry[1]
            value = piece.sharded(piece.handle.flat_param._array)
            if offload_to_cpu:
                local = value.local_tensor().cpu()
                value = ShardedTensor(local, value.shape, value.offset)
            result[prefix + key] = value
        else:
            result[prefix + key] = _out(entry[3], offload_to_cpu)
    return result


def load_sharded_state_dict(root: Any, state_dict: Mapping, strict: bool) -> IncompatibleKeys:
    """Copy each ``ShardedTensor`` (whose range must be this rank's: fill the ones
    ``state_dict()`` returns) or full tensor into this rank's shards; buffers as usual."""
    entries = original_entries(root, type(root))
    missing, unexpected = check_keys(root, entries, state_dict, strict)
    with no_grad():
        for key, entry in entries.items():
            if key not in state_dict:
                continue
            value = state_dict[key]
            if entry[0] == "buffer":
                where = f"load_state_dict for {type(root).__name__}: {key!r}"
                load_entry(entry[1], entry[2], entry[3], value, where, False)
                continue
            piece: Piece = entry[1]
            flat = piece.handle.flat_param
            part = piece_of(piece, value, f"load_state_dict (SHARDED_STATE_DICT): {key!r}")
            flat._array[piece.shard_slice] = (
                Tensor(part).to(flat.device)._array.astype(flat.dtype, copy=False)
            )
            flat._version[0] += 1
    return IncompatibleKeys(missing, unexpected)


def piece_of(piece: Piece, value: Any, where: str) -> Any:
    """This rank's elements of ``piece`` (a 1-D array) from ``value``: a ``ShardedTensor``
    holding exactly this rank's range, or the whole tensor."""
    if isinstance(value, ShardedTensor):
        if tuple(value.shape) != tuple(piece.shape):
            raise ValueError(
                f"{where}: the ShardedTensor is of a tensor of shape {tuple(value.shape)}, but "
                f"the parameter has shape {piece.shape}; the model differs from the saved one"
            )
        got = (value.offset, value.offset + value.local_tensor().numel())
        if got != (piece.lo, piece.hi) and piece.lo != piece.hi:
            raise ValueError(
                f"{where}: the ShardedTensor holds elements [{got[0]}, {got[1]}) but this rank "
                f"holds [{piece.lo}, {piece.hi}); read the checkpoint into the ShardedTensors "
                "that this model's state_dict() / FSDP.optim_state_dict() give on this rank "
                "(ranges depend on the world size)"
            )
        if piece.lo == piece.hi and value.local_tensor().numel() != 0:
            raise ValueError(
                f"{where}: the ShardedTensor holds elements [{got[0]}, {got[1]}) but this rank "
                "holds none of this parameter; fill the ShardedTensors this rank's "
                "state_dict() gives"
            )
        return value.local_tensor()._array
    array = value._array if isinstance(value, Tensor) else value
    if tuple(getattr(array, "shape", ())) != tuple(piece.shape):
        raise ValueError(
            f"{where}: expected a ShardedTensor or a tensor of shape {piece.shape}, got "
            f"{type(value).__name__} of shape {tuple(getattr(array, 'shape', ()))}"
        )
    return array.reshape(-1)[piece.lo : piece.hi]


def local_state_dict(root: Any, offload_to_cpu: bool, prefix: str = "") -> OrderedDict:
    """Each unit's flat shard (padding included) as a ``ShardedTensor`` of the padded flat
    buffer (a copy), under ``<unit>._flat_param``; buffers as plain tensors (copies)."""
    result = OrderedDict()
    handles = _handles(root)
    for key, (_, _, tensor) in root._state_slots().items():
        if is_flat(key):
            handle = handles[id(tensor)]
            padded = handle.shard_size * handle.world if handle.sharded else tensor.numel()
            local = _out(tensor, offload_to_cpu)
            result[prefix + clean_key(key)] = ShardedTensor(local, (padded,), shard_start(handle))
        else:
            result[prefix + clean_key(key)] = _out(tensor, offload_to_cpu)
    return result


def load_local_state_dict(root: Any, state_dict: Mapping, strict: bool) -> IncompatibleKeys:
    """Load a ``LOCAL_STATE_DICT`` saved by this rank at this world size (checked)."""
    slots = {clean_key(k): v for k, v in root._state_slots().items()}
    missing, unexpected = check_keys(root, slots, state_dict, strict)
    handles = _handles(root)
    with no_grad():
        for key, (module, name, target) in slots.items():
            if key not in state_dict:
                continue
            value = state_dict[key]
            where = f"load_state_dict (LOCAL_STATE_DICT) for {type(root).__name__}: {key!r}"
            if is_flat(key):
                value = _check_local(handles[id(target)], value, where)
            load_entry(module, name, target, value, where, False)
    return IncompatibleKeys(missing, unexpected)


def _check_local(handle: Any, value: Any, where: str) -> Any:
    size = handle.flat_param.numel()
    padded = handle.shard_size * handle.world if handle.sharded else size
    start = shard_start(handle)
    if isinstance(value, ShardedTensor):
        local = value.local_tensor()
        if (tuple(value.shape), value.offset, local.numel()) == ((padded,), start, size):
            return local
        saved_world = value.numel() // max(local.numel(), 1)
        raise ValueError(
            f"{where}: saved as elements [{value.offset}, {value.offset + local.numel()}) of a "
            f"flat buffer of {value.numel()} (world size {saved_world}, rank "
            f"{value.offset // max(local.numel(), 1)}), but this rank holds [{start}, "
            f"{start + size}) of {padded} (world size {handle.world}, rank {handle.rank}); a "
            "LOCAL_STATE_DICT loads only on the rank and world size that saved it: save a "
            "SHARDED_STATE_DICT or FULL_STATE_DICT to change the world size"
        )
    shape = tuple(getattr(value, "shape", ()))
    if shape != (size,):
        raise ValueError(
            f"{where}: a flat shard of shape {shape}, but this rank's is ({size},) (world size "
            f"{handle.world}); a LOCAL_STATE_DICT loads only at the world size that saved it: "
            "save a SHARDED_STATE_DICT or FULL_STATE_DICT to change the world size"
        )
    return value


def _handles(root: Any) -> dict[int, Any]:
    """id(flat parameter) -> the handle holding it, for every unit in ``root``."""
    handles = {}
    for unit in root.modules():
        handle = getattr(unit, "_handle", None)
        if handle is not None:
            handles[id(handle.flat_param)] = handle
    return handles
