"""``Module``: the base of every layer and model, with PyTorch's registration semantics.

Assigning a ``Parameter`` to a module attribute registers it, as does assigning a module;
tensors become buffers through ``register_buffer``. ``state_dict`` / ``load_state_dict``
name every parameter and buffer by its dotted path (``"encoder.0.weight"``).
"""

from __future__ import annotations

from collections import OrderedDict, namedtuple
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from dtrain._tensor.autograd.grad_mode import is_grad_enabled, no_grad
from dtrain._tensor.nn.backward_hooks import HookedCall
from dtrain._tensor.nn.hooks import HookHandle, hook_ids
from dtrain._tensor.nn.module_device import move_in_place, to_arguments
from dtrain._tensor.nn.module_state import load_entry
from dtrain._tensor.parameter import Parameter
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.device import Device, cuda_device
from dtrain.runtime.dtypes import to_dtype

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Module:
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

    def _call_with_backward_hooks(self, args: tuple, kwargs: dict) -> Any:
        # PyTorch's order: forward pre-hooks, inputs tapped, forward, forward hooks, outputs
        # tapped (so the forward hooks see the untapped outputs).
        if self._forward_pre_hooks:
            args, kwargs = self._call_pre_hooks(args, kwargs)
        call = HookedCall(self) if is_grad_enabled() else None
        if call is not None:
            args = call.tap_inputs(args)
        output = self.forward(*args, **kwargs)
        if self._forward_hooks:
            output = self._call_forward_hooks(args, kwargs, output)
        return output if call is None else call.tap_outputs(output)

    def _call_pre_hooks(self, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        for key, hook in list(self._forward_pre_hooks.items()):  # a hook may remove hooks
            if key in self._hooks_with_kwargs:
                result = hook(self, args, kwargs)
                if result is not None:
                    if not (isinstance(result, tuple) and len(result) == 2):
                        raise RuntimeError(
                            f"forward pre-hook {hook!r} (with_kwargs=True) returned "
                            f"{type(result).__name__}; return None or a pair (args, kwargs)"
                        )
                    args, kwargs = result
            else:
                result = hook(self, args)
                if result is not None:
                    args = result if isinstance(result, tuple) else (result,)
        return args, kwargs

    def _call_forward_hooks(self, args: tuple, kwargs: dict, output: Any) -> Any:
        for key, hook in list(self._forward_hooks.items()):
            if key in self._hooks_with_kwargs:
                result = hook(self, args, kwargs, output)
            else:
                result = hook(self, args, output)
            if result is not None:
                output = result
        return output

    # ---- registration ------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            if isinstance(value, (Parameter, Module)):
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
        elif name in buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign {type(value).__name__} to buffer {name!r}")
            buffers[name] = value
        elif name in modules:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} to sub-module {name!r}")
            modules[name] = None
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
        if param is not None and param.numel() == 0 and param.shape == (0,):
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
            if param is not None and param.shape == (0,):
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

    # ---- state -------------------------------------------------------------------------
    def state_dict(
        self, destination: dict | None = None, prefix: str = "", keep_vars: bool = False
    ) -> OrderedDict:
        """Parameters and persistent buffers by dotted name (detached unless keep_vars).

        A module or parameter reachable by two paths appears under both names, as in
        PyTorch, so a checkpoint of a model with tied weights loads into either framework.
        """
        destination = OrderedDict() if destination is None else destination
        modules = self.named_modules(prefix=prefix.rstrip("."), remove_duplicate=False)
        for module_name, module in modules:
            head = f"{module_name}." if module_name else ""
            for name, param in module._parameters.items():
                if param is not None:
                    destination[head + name] = param if keep_vars else param.detach()
            for name, buffer in module._buffers.items():
                if buffer is not None and name not in module._non_persistent:
                    destination[head + name] = buffer if keep_vars else buffer.detach()
        return destination

    def _optional_state(self) -> tuple[str, ...]:
        """Names of this module's own state entries a loaded state may lack; they keep
        their values then (BatchNorm's ``num_batches_tracked``)."""
        return ()

    def _state_slots(self) -> OrderedDict:
        """``state_dict()``'s keys, each with the module, local name and tensor behind it."""
        slots = OrderedDict()
        for module_name, module in self.named_modules(remove_duplicate=False):
            head = f"{module_name}." if module_name else ""
            for name, param in module._parameters.items():
                if param is not None:
                    slots[head + name] = (module, name, param)
            for name, buffer in module._buffers.items():
                if buffer is not None and name not in module._non_persistent:
                    slots[head + name] = (module, name, buffer)
        return slots

    def load_state_dict(
        self, state_dict: Mapping, strict: bool = True, assign: bool = False
    ) -> IncompatibleKeys:
        """Load a state (name → Tensor or array) into this module's parameters and buffers.

        By default values are copied in place, cast to each tensor's dtype and device (an
        optimizer holding the parameters keeps working). With ``assign=True`` the given
        tensors replace them, keeping their own dtype and device; a parameter stays an
        ``nn.Parameter`` with its ``requires_grad``.

        Args:
            state_dict: a mapping from dotted names to tensors or numpy/cupy arrays.
            strict: missing or unexpected keys are an error (else only reported).
            assign: replace the tensors instead of copying into them.

        Returns:
            ``(missing_keys, unexpected_keys)``.

        Raises:
            TypeError: ``state_dict`` is not a mapping, or a value is not a tensor or array.
            RuntimeError: a key problem under ``strict``, or a shape mismatch.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(
                f"load_state_dict: expected a dict-like state_dict (name -> tensor), got "
                f"{type(state_dict).__name__}"
            )
        slots = self._state_slots()
        optional = {
            f"{name}.{entry}" if name else entry
            for name, module in self.named_modules()
            for entry in module._optional_state()
        }
        missing = [key for key in slots if key not in state_dict and key not in optional]
        unexpected = [key for key in state_dict if key not in slots]
        if strict and (missing or unexpected):
            raise RuntimeError(
                f"load_state_dict for {type(self).__name__}: missing keys {missing}, "
                f"unexpected keys {unexpected}; pass strict=False to load the rest"
            )
        with no_grad():
            for key, (module, name, target) in slots.items():
                if key in state_dict:
                    where = f"load_state_dict for {type(self).__name__}: {key!r}"
                    load_entry(module, name, target, state_dict[key], where, assign)
        return IncompatibleKeys(missing, unexpected)

    # ---- modes and devices -------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Training mode (dropout active, batch statistics) for this module and below.

        Calls ``train`` on each child, so a sub-module that overrides it is honoured.
        """
        if not isinstance(mode, bool):
            raise ValueError(f"train(mode): mode must be a bool, got {mode!r}")
        object.__setattr__(self, "training", mode)
        for module in self.children():
            module.train(mode)
        return self

    def eval(self) -> Module:
        """Evaluation mode: ``train(False)``."""
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        """Turn gradient tracking on or off for every parameter."""
        for param in self.parameters():
            param.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop (or zero) every parameter's gradient."""
        for param in self.parameters():
            if param.grad is None:
                continue
            if set_to_none:
                param.grad = None
            else:
                param.grad.zero_()

    def apply(self, fn: Callable[[Module], None]) -> Module:
        """Call ``fn`` on every sub-module and then on this one (e.g. custom init)."""
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    def to(self, *args: Any, **kwargs: Any) -> Module:
        """Move and/or cast every parameter and buffer in place, as PyTorch's forms:
        ``to(device)``, ``to(dtype)``, ``to(device, dtype)``, ``to(tensor)`` (its device and
        dtype), each with an optional ``non_blocking``. A device is ``"cpu"``, ``"cuda:N"``,
        a ``Device`` or an int (a CUDA index); only floating-point tensors are cast, and
        only to a float dtype."""
        device, dtype = to_arguments(args, kwargs)
        if dtype is not None and dtype.kind != "f":
            raise TypeError(f"Module.to() only casts to float dtypes, got {dtype}")
        for tensor in (*self.parameters(), *self.buffers()):
            move_in_place(tensor, device, dtype)
            if tensor.grad is not None:
                move_in_place(tensor.grad, device, dtype)
        return self

    def cuda(self, device: int | str | Device | None = None) -> Module:
        """Move every parameter and buffer to a GPU: the current one unless ``device`` names
        another."""
        return self.to(cuda_device(device))

    def cpu(self) -> Module:
        """Move every parameter and buffer to the CPU."""
        return self.to("cpu")

    def float(self) -> Module:
        """Cast floating-point parameters and buffers to float32."""
        return self.to(to_dtype("float32"))

    def double(self) -> Module:
        """Cast floating-point parameters and buffers to float64."""
        return self.to(to_dtype("float64"))

    def share_memory(self) -> Module:
        """Not offered: dtrain tensors cannot be shared between processes (Hogwild).

        Raises:
            NotImplementedError: always, naming the alternative.
        """
        raise NotImplementedError(
            "share_memory: dtrain cannot share a model's tensors between processes "
            "(Hogwild); train one process per rank with dtrain.parallel."
            "DistributedDataParallel (dtrain.multiprocessing.spawn or dtrain launch starts them)"
        )

    def half(self) -> Module:
        """Cast floating-point parameters and buffers to float16."""
        return self.to(to_dtype("float16"))

    # ---- hooks and repr ----------------------------------------------------------------
    def register_forward_pre_hook(
        self, hook: Callable, *, prepend: bool = False, with_kwargs: bool = False
    ) -> HookHandle:
        """``hook(module, args)`` before forward; it may return replacement args (a tuple,
        or one value). With ``with_kwargs``, ``hook(module, args, kwargs)`` may return a
        pair ``(args, kwargs)``. ``prepend`` runs it before the hooks already registered."""
        return self._add_hook(self._forward_pre_hooks, hook, prepend, with_kwargs)

    def register_forward_hook(
        self, hook: Callable, *, prepend: bool = False, with_kwargs: bool = False
    ) -> HookHandle:
        """``hook(module, args, output)`` after forward (``hook(module, args, kwargs,
        output)`` with ``with_kwargs``); it may return a replacement output. ``prepend``
        runs it before the hooks already registered."""
        return self._add_hook(self._forward_hooks, hook, prepend, with_kwargs)

    def register_full_backward_pre_hook(
        self, hook: Callable, *, prepend: bool = False
    ) -> HookHandle:
        """``hook(module, grad_output)`` when the gradients of this module's outputs are
        known, before they flow into it; it may return replacement ``grad_output`` (a tuple
        with one entry per output, None for outputs that are not tensors)."""
        return self._add_hook(self._backward_pre_hooks, hook, prepend, False)

    def register_full_backward_hook(self, hook: Callable, *, prepend: bool = False) -> HookHandle:
        """``hook(module, grad_input, grad_output)`` when the gradients of this module's
        positional inputs are known; it may return replacement ``grad_input``. Entries are
        None for arguments that are not tensors requiring grad. As PyTorch's, the call's
        inputs and outputs pass through an identity each way, so hook the module before
        calling it."""
        return self._add_hook(self._backward_hooks, hook, prepend, False)

    def _has_hooks(self) -> bool:
        return bool(
            self._forward_pre_hooks
            or self._forward_hooks
            or self._backward_pre_hooks
            or self._backward_hooks
        )

    def _add_hook(
        self, hooks: OrderedDict, hook: Callable, prepend: bool, with_kwargs: bool
    ) -> HookHandle:
        key = next(hook_ids)
        hooks[key] = hook
        if prepend:
            hooks.move_to_end(key, last=False)
        if with_kwargs:
            self._hooks_with_kwargs.add(key)
        return HookHandle(hooks, key, self._hooks_with_kwargs)

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
