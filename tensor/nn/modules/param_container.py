"""``ParameterList`` and ``ParameterDict``: parameters held by position or by key, which the
parent module registers (``parameters()``, ``state_dict`` keys ``"0"``, ``"name"``, ...).

A plain tensor put in one becomes an ``nn.Parameter`` (as PyTorch). Unlike PyTorch, only
tensors may be stored (PyTorch also keeps other objects).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from dtrain._tensor.nn.module import Module
from dtrain._tensor.parameter import Parameter
from dtrain._tensor.tensor import Tensor


def _as_parameter(value: Any, where: str) -> Parameter:
    if isinstance(value, Parameter):
        return value
    if isinstance(value, Tensor):
        return Parameter(value)
    raise TypeError(f"{where}: expected a tensor or nn.Parameter, got {type(value).__name__}")


def _describe(param: Parameter) -> str:
    size = "x".join(str(n) for n in param.shape)
    device = "" if param.device.type == "cpu" else f" ({param.device})"
    return f"Parameter containing: [dtrain.{param.dtype} of size {size}{device}]"


class ParameterList(Module):
    """A list of parameters, indexed by position."""

    def __init__(self, values: Iterable[Any] | None = None) -> None:
        super().__init__()
        if values is not None:
            self.extend(values)

    def _index(self, index: Any) -> int:
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise TypeError(f"ParameterList indices must be integers, got {index!r}")
        size = len(self)
        if not -size <= index < size:
            raise IndexError(f"index {index} is out of range for a ParameterList of {size}")
        return int(index) % size

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return ParameterList(list(self._parameters.values())[index])
        return self._parameters[str(self._index(index))]

    def __setitem__(self, index: int, value: Any) -> None:
        self.register_parameter(str(self._index(index)), _as_parameter(value, "ParameterList"))

    def __len__(self) -> int:
        return len(self._parameters)

    def __iter__(self) -> Iterator[Parameter]:
        return iter(self._parameters.values())

    def __iadd__(self, values: Iterable[Any]) -> ParameterList:
        return self.extend(values)

    def append(self, value: Any) -> ParameterList:
        """Add a parameter (a tensor becomes an ``nn.Parameter``) at the end."""
        self.register_parameter(str(len(self)), _as_parameter(value, "ParameterList"))
        return self

    def extend(self, values: Iterable[Any]) -> ParameterList:
        """Add several parameters at the end."""
        if isinstance(values, Tensor) or not isinstance(values, Iterable):
            raise TypeError(
                f"ParameterList.extend should be called with an iterable, but got "
                f"{type(values).__name__}"
            )
        for value in list(values):  # a copy: ``pl.extend(pl)`` / ``pl += pl`` doubles it
            self.append(value)
        return self

    def extra_repr(self) -> str:
        return "\n".join(f"({i}): {_describe(p)}" for i, p in enumerate(self))

    def __repr__(self) -> str:
        body = self.extra_repr()
        if not body:
            return "ParameterList()"
        return "ParameterList(\n    " + body.replace("\n", "\n    ") + "\n)"


class ParameterDict(Module):
    """A dict of parameters, by string key (insertion order kept)."""

    def __init__(self, parameters: Mapping[str, Any] | Iterable[tuple] | None = None) -> None:
        super().__init__()
        if parameters is not None:
            self.update(parameters)

    def __getitem__(self, key: str) -> Parameter:
        return self._parameters[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise TypeError(f"ParameterDict keys must be strings, got {key!r}")
        self.register_parameter(key, _as_parameter(value, "ParameterDict"))

    def __delitem__(self, key: str) -> None:
        del self._parameters[key]

    def __contains__(self, key: object) -> bool:
        return key in self._parameters

    def __len__(self) -> int:
        return len(self._parameters)

    def __iter__(self) -> Iterator[str]:
        return iter(self._parameters)

    def keys(self) -> Iterable[str]:
        """The keys, in insertion order."""
        return self._parameters.keys()

    def values(self) -> Iterable[Parameter]:
        """The parameters, in insertion order."""
        return self._parameters.values()

    def items(self) -> Iterable[tuple[str, Parameter]]:
        """``(key, parameter)`` pairs, in insertion order."""
        return self._parameters.items()

    def get(self, key: str, default: Any = None) -> Any:
        """The parameter at ``key``, or ``default``."""
        return self._parameters.get(key, default)

    def pop(self, key: str) -> Parameter:
        """Remove the parameter at ``key`` and return it."""
        value = self[key]
        del self[key]
        return value

    def clear(self) -> None:
        """Remove every parameter."""
        self._parameters.clear()

    def update(self, parameters: Mapping[str, Any] | Iterable[tuple]) -> None:
        """Add or replace parameters from a mapping or ``(key, value)`` pairs."""
        mapping = isinstance(parameters, (Mapping, ParameterDict))
        pairs = list(parameters.items() if mapping else parameters)  # a copy: d.update(d)
        for pair in pairs:
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise ValueError(f"ParameterDict.update: expected (key, value) pairs, got {pair!r}")
            self[pair[0]] = pair[1]

    def extra_repr(self) -> str:
        return "\n".join(f"({k}): {_describe(p)}" for k, p in self.items())

    def __repr__(self) -> str:
        body = self.extra_repr()
        if not body:
            return "ParameterDict()"
        return "ParameterDict(\n    " + body.replace("\n", "\n    ") + "\n)"
