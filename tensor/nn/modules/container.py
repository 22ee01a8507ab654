"""Containers: Sequential, ModuleList, ModuleDict.

As in PyTorch, deleting from or inserting into a Sequential or ModuleList numbers its
modules 0, 1, ... again (so state-dict keys follow the new positions); a Sequential built
from an ``OrderedDict`` loses its names then.
"""

from __future__ import annotations

import operator
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from dtrain._tensor.nn.functional.linear import linear_relu
from dtrain._tensor.nn.module import Module
from dtrain._tensor.nn.modules.activation import ReLU
from dtrain._tensor.nn.modules.linear import Linear


class Sequential(Module):
    """Modules applied one after another: ``Sequential(Linear(4, 8), ReLU(), Linear(8, 2))``
    or ``Sequential(OrderedDict(fc=..., act=...))``."""

    def __init__(self, *modules: Module) -> None:
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, module in modules[0].items():
                self.add_module(name, module)
        else:
            for index, module in enumerate(modules):
                self.add_module(str(index), module)

    def forward(self, input: Any) -> Any:
        modules = list(self._modules.values())
        index = 0
        while index < len(modules):
            module = modules[index]
            after = modules[index + 1] if index + 1 < len(modules) else None
            if _linear_then_relu(module, after):  # one op (on CUDA one launch), not two
                input = linear_relu(input, module.weight, module.bias)
                index += 2
            else:
                input = module(input)
                index += 1
        return input

    def __getitem__(self, index: int | slice) -> Module:
        modules = list(self._modules.items())
        if isinstance(index, slice):
            return Sequential(OrderedDict(modules[index]))
        return modules[_check_index(index, len(modules))][1]

    def __setitem__(self, index: int, module: Module) -> None:
        names = list(self._modules)
        self.add_module(names[_check_index(index, len(names))], module)

    def __delitem__(self, index: int | slice) -> None:
        _renumber(self, _without(list(self._modules.values()), index))

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def append(self, module: Module) -> Sequential:
        """Add a module at the end."""
        self.add_module(str(len(self)), module)
        return self

    def insert(self, index: int, module: Module) -> Sequential:
        """Put ``module`` before position ``index`` (``len(self)``: at the end).

        Raises:
            IndexError: ``index`` outside ``[-len(self), len(self)]``.
        """
        _renumber(self, _with(list(self._modules.values()), index, module))
        return self

    def extend(self, modules: Iterable[Module]) -> Sequential:
        """Add several modules at the end."""
        for module in list(modules):  # a copy: ``c.extend(c)`` / ``c += c`` doubles it
            self.append(module)
        return self

    def pop(self, index: int | slice) -> Module:
        """Remove the module (or, for a slice, the Sequential of modules) at ``index`` and
        return it."""
        popped = self[index]
        del self[index]
        return popped


def _linear_then_relu(module: Module, after: Module | None) -> bool:
    """Whether ``module`` and ``after`` are a plain ``Linear`` with a bias and a ``ReLU``,
    neither with hooks that would see the output between them: then ``Sequential`` runs
    them as ``LinearReLU``, whose ReLU rides in the product's epilogue on CUDA."""
    return (
        type(after) is ReLU
        and type(module) is Linear
        and module.bias is not None
        and not module._uninitialized
        and not module._has_hooks()
        and not after._has_hooks()
    )


class ModuleList(Module):
    """A list of modules whose parameters the parent registers."""

    def __init__(self, modules: Iterable[Module] | None = None) -> None:
        super().__init__()
        for module in modules or ():
            self.append(module)

    def __getitem__(self, index: int | slice) -> Any:
        modules = list(self._modules.values())
        if isinstance(index, slice):
            return ModuleList(modules[index])
        return modules[_check_index(index, len(modules))]

    def __setitem__(self, index: int, module: Module) -> None:
        index = _check_index(index, len(self))
        self.add_module(str(index), module)

    def __delitem__(self, index: int | slice) -> None:
        _renumber(self, _without(list(self._modules.values()), index))

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def append(self, module: Module) -> ModuleList:
        """Add a module at the end."""
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules: Iterable[Module]) -> ModuleList:
        """Add several modules at the end."""
        for module in list(modules):  # a copy: ``c.extend(c)`` / ``c += c`` doubles it
            self.append(module)
        return self

    def insert(self, index: int, module: Module) -> None:
        """Put ``module`` before position ``index`` (``len(self)``: at the end).

        Raises:
            IndexError: ``index`` outside ``[-len(self), len(self)]``.
        """
        _renumber(self, _with(list(self._modules.values()), index, module))

    def pop(self, index: int | slice) -> Any:
        """Remove the module (or, for a slice, the ModuleList of modules) at ``index`` and
        return it."""
        popped = self[index]
        del self[index]
        return popped

    def __iadd__(self, modules: Iterable[Module]) -> ModuleList:
        return self.extend(modules)

    def __add__(self, other: Iterable[Module]) -> ModuleList:
        """A new ModuleList of this one's modules and then ``other``'s (the same objects)."""
        combined = ModuleList(self)
        return combined.extend(other)

    def __repr__(self) -> str:
        # PyTorch compresses runs of identical entries: "(0-2): 3 x Linear(...)".
        reprs = [repr(module) for module in self]
        if not reprs:
            return f"{type(self).__name__}()"
        runs: list[list] = []  # [first index, last index, repr]
        for index, text in enumerate(reprs):
            if runs and runs[-1][2] == text:
                runs[-1][1] = index
            else:
                runs.append([index, index, text])
        lines = []
        for first, last, text in runs:
            head = f"({first})" if first == last else f"({first}-{last}): {last - first + 1} x"
            line = f"{head}: {text}" if first == last else f"{head} {text}"
            lines.append(line.replace("\n", "\n  "))
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"


class ModuleDict(Module):
    """A dict of modules whose parameters the parent registers."""

    def __init__(
        self, modules: Mapping[str, Module] | Iterable[tuple[str, Module]] | None = None
    ) -> None:
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key: str) -> Module:
        return self._modules[key]

    def __setitem__(self, key: str, module: Module) -> None:
        self.add_module(key, module)

    def __delitem__(self, key: str) -> None:
        del self._modules[key]

    def __contains__(self, key: str) -> bool:
        return key in self._modules

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[str]:
        return iter(self._modules)

    def keys(self) -> Iterable[str]:
        return self._modules.keys()

    def values(self) -> Iterable[Module]:
        return self._modules.values()

    def items(self) -> Iterable[tuple[str, Module]]:
        return self._modules.items()

    def update(self, modules: Mapping[str, Module] | Iterable[tuple[str, Module]]) -> None:
        """Add (or replace) modules from a mapping or from ``(name, module)`` pairs, in order.

        Raises:
            ValueError: a pair that is not of length 2.
        """
        pairs = modules.items() if isinstance(modules, (Mapping, ModuleDict)) else modules
        for index, pair in enumerate(pairs):
            if len(pair) != 2:
                raise ValueError(
                    f"ModuleDict.update: element {index} has length {len(pair)}; each must be "
                    "a (name, module) pair"
                )
            self.add_module(*pair)

    def pop(self, key: str) -> Module:
        """Remove the module under ``key`` and return it."""
        module = self[key]
        del self[key]
        return module

    def clear(self) -> None:
        """Remove every module."""
        self._modules.clear()


def _check_index(index: int, length: int) -> int:
    try:
        index = operator.index(index)  # numpy integers too; "0" is a mistake, not a name
    except TypeError:
        raise TypeError(
            f"container indices must be integers or slices, not {type(index).__name__} ({index!r})"
        ) from None
    if not -length <= index < length:
        raise IndexError(f"index {index} is out of range for a container of {length} modules")
    return index % length


def _without(modules: list, index: int | slice) -> list:
    """``modules`` less the one at ``index`` (or the ones in a slice)."""
    if not isinstance(index, slice):
        index = _check_index(index, len(modules))
    del modules[index]
    return modules


def _with(modules: list, index: int, module: Module) -> list:
    """``modules`` with ``module`` put before position ``index``."""
    if not isinstance(module, Module):
        raise TypeError(f"insert: {type(module).__name__} is not a Module")
    if not -len(modules) <= index <= len(modules):
        raise IndexError(
            f"insert: index {index} is out of range for a container of {len(modules)} modules; "
            f"use one in [{-len(modules)}, {len(modules)}]"
        )
    modules.insert(index, module)
    return modules


def _renumber(container: Module, modules: list) -> None:
    """Register ``modules`` in ``container`` under the names "0", "1", ... only."""
    container._modules.clear()
    for index, module in enumerate(modules):
        container.add_module(str(index), module)
