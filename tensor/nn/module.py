"""``Module``: the base of every layer and model, with PyTorch's registration semantics.

Assigning a ``Parameter`` to a module attribute registers it, as does assigning a module
or an ``nn.Buffer``; other tensors become buffers through ``register_buffer``.
``state_dict`` / ``load_state_dict`` name every parameter and buffer by its dotted path
(``"encoder.0.weight"``).

Here: registration, lookup, iteration and repr. ``Module`` inherits its hooks from
``module_hooks.py``, ``state_dict`` / ``load_state_dict`` from ``module_state_dict.py`` and
train/eval/apply/to from ``module_modes.py``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from dtrain._tensor.nn.module_hooks import ModuleHooks
from dtrain._tensor.nn.module_modes import ModuleModes
from dtrain._tensor.nn.module_state_dict import IncompatibleKeys as IncompatibleKeys
from dtrain._tensor.nn.module_state_dict import ModuleStateDict
from dtrain._tensor.parameter import Buffer, Parameter, UninitializedTensorMixin
from dtrain._tensor.tensor import Tensor


class Module(ModuleHooks, ModuleStateDict, ModuleModes):
    """Base class for layers and models: subclass it, assign parameters and sub-modules in
    ``__init__``, and define ``forward``."""

    training: bool

    def __init__(self) -> None:
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_pre_hooks", OrderedDict())
        object.__setattr__(self, "_forward_hooks", OrderedDict())
        object.__setattr__(self, "_backward_pre_hooks", OrderedDict())
        object.__setattr__(self, "_backward_hooks", OrderedDict())
        object.__setattr__(self, "_hooks_with_kwargs", set())  # keys of with_kwargs=True hooks
        object.__setattr__(self, "_uninitialized", False)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._uninitialized:
            self._check_initialized()
        # Three dict checks are all a module without hooks pays (every layer, every step).
        if self._backward_hooks or self._backward_pre_hooks:
            return self._call_with_backward_hooks(args, kwargs)
        if self._forward_pre_hooks:
            args, kwargs = self._call_pre_hooks(args, kwargs)
        output = self.forward(*args, **kwargs)
        if self._forward_hooks:
            output = self._call_forward_hooks(args, kwargs, output)
        return output

    # ---- registration ------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            if isinstance(value, (Parameter, Buffer, Module)):
                raise AttributeError(
                    f"cannot assign {type(value).__name__} {name!r} before Module.__init__() "
                    "ran; call super().__init__() first in your module's __init__"
                )
            object.__setattr__(self, name, value)  # plain attributes are fine, as in PyTorch
            return
        params, buffers, modules = self._parameters, self._buffers, self._modules
        if isinstance(value, Parameter):
            self.__dict__.pop(name, None)
            buffers.pop(name, None)
            modules.pop(name, None)
            self._non_persistent.discard(name)
            self.register_parameter(name, value)
        elif name in params:  # before modules: as PyTorch, a module cannot take its slot
            if value is not None:
                raise TypeError(
                    f"cannot assign {type(value).__name__} to parameter {name!r}; assign an "
                    "nn.Parameter (or None), or del the parameter first"
                )
            params[name] = None
        elif isinstance(value, Module):
            self.__dict__.pop(name, None)
            buffers.pop(name, None)
            self._non_persistent.discard(name)
            modules[name] = value
        elif name in modules:  # before buffers: as PyTorch, an nn.Buffer cannot take its slot
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} to sub-module {name!r}")
            modules[name] = None
        elif isinstance(value, Buffer):  # as register_buffer, with the Buffer's persistence
            self.register_buffer(name, value, value.persistent)
        elif name in buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign {type(value).__name__} to buffer {name!r}")
            buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails: parameters, buffers and sub-modules.
        d = self.__dict__
        for registry in ("_parameters", "_buffers", "_modules"):
            if registry in d and name in d[registry]:
                return d[registry][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        for registry in (self._parameters, self._buffers, self._modules):
            if name in registry:
                del registry[name]
                self._non_persistent.discard(name)
                return
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Add a parameter (None keeps the slot, as for ``bias=False``)."""
        _check_name(self, name, "parameter", "_parameters")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(
                f"cannot register {type(param).__name__} as parameter {name!r}; wrap it in "
                "nn.Parameter(...)"
            )
        if param is None or isinstance(param, UninitializedTensorMixin):
            pass  # a lazy module's placeholder: its forward pre-hook gives it a shape
        elif param.numel() == 0 and param.shape == (0,):
            object.__setattr__(self, "_uninitialized", True)
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """Add a tensor that is state but not learned (running statistics …)."""
        _check_name(self, name, "buffer", "_buffers")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(
                f"buffer {name!r} must be a Tensor or None, got {type(tensor).__name__}"
            )
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent.discard(name)
        else:
            self._non_persistent.add(name)

    def add_module(self, name: str, module: Module | None) -> None:
        """Add a sub-module under ``name``."""
        _check_name(self, name, "module", "_modules")
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module")
        self._modules[name] = module

    register_module = add_module

    def get_submodule(self, target: str) -> Module:
        """The sub-module at a dotted path (``"encoder.0"``; ``""`` is this module)."""
        module = self
        for part in target.split(".") if target else []:
            found = module._modules.get(part)
            if found is None:
                kind = _member_kind(module, part)
                raise AttributeError(
                    f"{type(module).__name__} has no sub-module {part!r}"
                    + (f" (it is a {kind})" if kind else "")
                    + f"; looking up {target!r}"
                )
            module = found
        return module

    def get_parameter(self, target: str) -> Parameter:
        """The parameter at a dotted path (``"encoder.0.weight"``)."""
        return self._get_member(target, "_parameters", "parameter")

    def get_buffer(self, target: str) -> Tensor:
        """The buffer at a dotted path (``"bn.running_mean"``)."""
        return self._get_member(target, "_buffers", "buffer")

    def _get_member(self, target: str, registry: str, what: str) -> Any:
        path, _, name = target.rpartition(".")
        module = self.get_submodule(path)
        value = getattr(module, registry).get(name)
        if value is None:
            kind = _member_kind(module, name)
            raise AttributeError(
                f"{type(module).__name__} has no {what} {name!r}"
                + (f" (it is a {kind})" if kind and kind != what else "")
                + f"; looking up {target!r}"
            )
        return value

    def _check_initialized(self) -> None:
        for name, param in self._parameters.items():
            if param is None or isinstance(param, UninitializedTensorMixin):
                continue  # a lazy module's placeholder is its pre-hook's to shape
            if param.shape == (0,):
                raise RuntimeError(
                    f"parameter {name!r} of {type(self).__name__} is uninitialised (an empty "
                    "nn.Parameter()); assign it a tensor or load a state dict before calling "
                    "the module"
                )
        object.__setattr__(self, "_uninitialized", False)

    # ---- iteration ---------------------------------------------------------------------
    def named_modules(
        self, memo: set | None = None, prefix: str = "", remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Module]]:
        """Every module in the tree (this one first), with its dotted name."""
        memo = set() if memo is None else memo
        stack = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if remove_duplicate:
                if id(module) in memo:
                    continue
                memo.add(id(module))
            yield name, module
            children = [
                (f"{name}.{child}" if name else child, sub)
                for child, sub in module._modules.items()
                if sub is not None
            ]
            stack.extend(reversed(children))

    def modules(self) -> Iterator[Module]:
        """Every module in the tree, this one first."""
        if type(self).named_modules is not Module.named_modules:  # as PyTorch: through it
            return (module for _, module in self.named_modules())
        return self._tree()

    def _tree(self) -> Iterator[Module]:
        """``named_modules()``'s modules in its order, without building their names:
        ``parameters()`` walks the tree on every training step (gradient clipping)."""
        seen = set()
        stack = [self]
        while stack:
            module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield module
            stack.extend(reversed([sub for sub in module._modules.values() if sub is not None]))

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """The direct sub-modules with their names."""
        seen = set()
        for name, module in self._modules.items():
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                yield name, module

    def children(self) -> Iterator[Module]:
        """The direct sub-modules."""
        for _, module in self.named_children():
            yield module

    def _named_members(
        self, registry: str, prefix: str, recurse: bool, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Any]]:
        seen = set()
        modules = (
            self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate)
            if recurse
            else [(prefix, self)]
        )
        for module_name, module in modules:
            for name, value in getattr(module, registry).items():
                if value is None or (remove_duplicate and id(value) in seen):
                    continue
                seen.add(id(value))
                yield (f"{module_name}.{name}" if module_name else name), value

    def named_parameters(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Parameter]]:
        """Every parameter with its dotted name, in registration order; shared ones once."""
        return self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        """Every parameter, in registration order (what an optimizer takes); shared ones
        once, as ``named_parameters()``."""
        kind = type(self)
        if (
            kind.named_parameters is not Module.named_parameters
            or kind.named_modules is not Module.named_modules
        ):  # a subclass's own walk: as PyTorch, parameters() goes through it
            for _, param in self.named_parameters(recurse=recurse):
                yield param
            return
        seen = set()
        for module in self._tree() if recurse else (self,):
            for param in module._parameters.values():
                if param is not None and id(param) not in seen:
                    seen.add(id(param))
                    yield param

    def named_buffers(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Tensor]]:
        """Every buffer with its dotted name."""
        return self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        """Every buffer."""
        for _, buffer in self.named_buffers(recurse=recurse):
            yield buffer

    def extra_repr(self) -> str:
        """The part inside the parentheses of this module's repr line."""
        return ""

    def __repr__(self) -> str:
        # PyTorch's layout: a one-line extra_repr stays inline when there are no children.
        extra = self.extra_repr()
        extra_lines = extra.split("\n") if extra else []
        child_lines = [
            f"({name}): " + _indent(repr(module)) for name, module in self._modules.items()
        ]
        if len(extra_lines) == 1 and not child_lines:
            return f"{type(self).__name__}({extra_lines[0]})"
        if not extra_lines and not child_lines:
            return f"{type(self).__name__}()"
        body = "\n  ".join(extra_lines + child_lines)
        return f"{type(self).__name__}(\n  {body}\n)"

    def __dir__(self) -> list:
        return sorted(
            set(super().__dir__()) | set(self._parameters) | set(self._buffers) | set(self._modules)
        )


def _check_name(module: Module, name: str, what: str, registry: str) -> None:
    if "_parameters" not in module.__dict__:
        raise AttributeError(f"cannot add {what} {name!r} before Module.__init__() ran")
    if not isinstance(name, str) or not name or "." in name:
        raise KeyError(f"{what} name must be a non-empty string without '.', got {name!r}")
    if hasattr(module, name) and name not in getattr(module, registry):
        raise KeyError(
            f"cannot add {what} {name!r}: {type(module).__name__} already has an attribute of "
            "that name; delete it first or pick another name"
        )


def _member_kind(module: Module, name: str) -> str:
    """What ``name`` is on ``module`` (for error messages): "parameter", "buffer", ..."""
    for registry, kind in (("_parameters", "parameter"), ("_buffers", "buffer")):
        if name in getattr(module, registry):
            return kind
    if name in module._modules:
        return "sub-module"  # a None slot
    return "plain attribute" if name in module.__dict__ else ""


def _indent(text: str) -> str:
    return text.replace("\n", "\n  ")
