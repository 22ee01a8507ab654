"""Where each original parameter of an FSDP model lies: its name (the full state dict's key),
the unit whose flat buffer holds it, and the range of its elements this rank's shard holds.
The sharded state dicts (``fsdp_sharded.py``) and the optimizer state dicts
(``fsdp_optim.py``) are built on it."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from dtrain._tensor.nn.module import Module
from dtrain._tensor.tensor import Tensor
from dtrain.parallel.fsdp_flat import FlatHandle
from dtrain.parallel.fsdp_state import clean_key
from dtrain.parallel.sharded_tensor import ShardedTensor


@dataclass
class Piece:
    """One original parameter: elements ``[start, start + numel)`` of ``handle``'s padded
    flat buffer, of shape ``shape``; this rank's shard holds its elements ``[lo, hi)``
    (``lo == hi``: none), at ``[lo + start - shard_start, ...)`` of the shard."""

    fqn: str
    handle: FlatHandle
    index: int
    shape: tuple[int, ...]
    start: int
    numel: int
    lo: int
    hi: int

    @property
    def shard_slice(self) -> slice:
        """Where this rank's part of the parameter lies in the shard."""
        begin = self.start + self.lo - shard_start(self.handle)
        return slice(begin, begin + self.hi - self.lo)

    def sharded(self, shard: Any) -> ShardedTensor:
        """This rank's part of ``shard`` (an array shaped as the flat shard), a copy."""
        local = Tensor(shard[self.shard_slice].copy())
        return ShardedTensor(local, self.shape, self.lo)


def shard_start(handle: FlatHandle) -> int:
    """The flat buffer element this rank's shard starts at."""
    return handle.rank * handle.shard_size if handle.sharded else 0


def pieces_of(handle: FlatHandle, names: dict[int, str]) -> list[Piece]:
    """The handle's parameters in flat order, named by ``names`` (id(module) -> its clean
    name from the model's root); a parameter under two names takes the first."""
    fqns: dict[int, str] = {}
    for module, name, index in handle.slots:
        head = names.get(id(module), "")
        fqns.setdefault(index, f"{head}.{name}" if head else name)
    begin = shard_start(handle)
    end = begin + handle.flat_param.numel()
    pieces, start = [], 0
    for index, (shape, numel) in enumerate(zip(handle.shapes, handle.numels)):
        lo = min(max(begin - start, 0), numel)
        hi = max(min(end - start, numel), lo)
        pieces.append(Piece(fqns[index], handle, index, shape, start, numel, lo, hi))
        start += numel
    return pieces


def module_names(root: Module) -> dict[int, str]:
    """id(module) -> its first clean name under ``root`` ("" for the root)."""
    names: dict[int, str] = {}
    for name, module in root.named_modules(remove_duplicate=False):
        names.setdefault(id(module), clean_key(name))
    return names


def layout(root: Module, unit_type: type) -> OrderedDict:
    """id(flat parameter) -> that unit's ``Piece``s, for every unit in ``root``."""
    names = module_names(root)
    units = [m for m in root.modules() if isinstance(m, unit_type) and m._handle is not None]
    return OrderedDict((id(u._handle.flat_param), pieces_of(u._handle, names)) for u in units)


def original_entries(root: Module, unit_type: type) -> OrderedDict:
    """The full state dict's keys of the FSDP root ``root`` in its order, each with
    ``("param", Piece)`` or ``("buffer", module, name, tensor)``; nothing is gathered."""
    names = module_names(root)
    by_module: dict[int, list[tuple[str, Piece]]] = {}
    for unit in (m for m in root.modules() if isinstance(m, unit_type)):
        if unit._handle is None:
            continue
        by_index = {p.index: p for p in pieces_of(unit._handle, names)}
        for module, name, index in unit._handle.slots:  # registration order per module
            by_module.setdefault(id(module), []).append((name, by_index[index]))
    entries = OrderedDict()
    for name, module in root.named_modules(remove_duplicate=False):
        if isinstance(module, unit_type):
            continue  # its only own entry is the flat parameter
        head = clean_key(name)
        head = f"{head}." if head else ""
        for pname, piece in by_module.get(id(module), ()):
            entries[head + pname] = ("param", piece)
        for bname, buffer in module._buffers.items():
            if buffer is not None and bname not in module._non_persistent:
                entries[head + bname] = ("buffer", module, bname, buffer)
    return entries


__all__ = ["Piece", "module_names", "shard_start", "layout", "original_entries", "pieces_of"]
