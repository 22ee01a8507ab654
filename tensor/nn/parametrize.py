"""Parametrizations: a module's parameter or buffer computed from other tensors on every
access, as PyTorch's ``torch.nn.utils.parametrize``.

``register_parametrization(module, "weight", P())`` moves the tensor to
``module.parametrizations.weight.original`` (``original0``, ``original1``, ... when
``P.right_inverse`` returns several tensors) and turns ``module.weight`` into a property that
returns ``P(original)``, differentiable. As PyTorch does it, the module's class is swapped for
a generated subclass ``Parametrized<Class>`` that holds the property, so the module itself
keeps its ``__dict__`` and registries; state-dict keys, ``to()`` and optimizers see the
originals as ordinary parameters of the ``ParametrizationList`` sub-module.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from dtrain._tensor.autograd.grad_mode import no_grad
from dtrain._tensor.nn.module import Module
from dtrain._tensor.nn.modules.container import ModuleDict, ModuleList
from dtrain._tensor.parameter import Parameter
from dtrain._tensor.tensor import Tensor

_cache_enabled = 0
_cache: dict[tuple[int, str], Tensor] = {}


@contextmanager
def cached() -> Iterator[None]:
    """Inside this context every parametrized tensor is computed once, on its first access,
    and reused (a weight used at every step of a recurrent loop); the values are dropped on
    leaving the outermost ``cached()``."""
    global _cache, _cache_enabled
    _cache_enabled += 1
    try:
        yield
    finally:
        _cache_enabled -= 1
        if not _cache_enabled:
            _cache = {}


def _register_parameter_or_buffer(module: Module, name: str, value: Tensor) -> None:
    if isinstance(value, Parameter):
        module.register_parameter(name, value)
    else:
        module.register_buffer(name, value)


def _check_device(dest: Tensor, src: Tensor, name: str) -> None:
    if src.device != dest.device:
        raise RuntimeError(
            f"parametrization: cannot set {name} (on {dest.device}) to a tensor on "
            f"{src.device}; the devices must match, as for PyTorch's set_: assign a value on "
            f"{dest.device}, e.g. value.to({str(dest.device)!r})"
        )


def _set(dest: Tensor, src: Tensor, name: str = "original") -> None:
    """PyTorch's ``dest.set_(src)``: ``dest`` (the same object, so an optimizer holding it
    keeps working) takes ``src``'s memory and shape, on the same device only (as ``set_``)."""
    _check_device(dest, src, name)
    dest._array = src._array
    dest._version[0] += 1  # a graph that saved the old values must not see the new ones


def _right_inverse(module: Module, value: Any) -> Any:
    """``module.right_inverse(value)``, or ``value`` when it has none or it raises
    NotImplementedError (the identity, as PyTorch assumes)."""
    inverse = getattr(module, "right_inverse", None)
    if inverse is None:
        return value
    try:
        return inverse(value)
    except NotImplementedError:
        return value


class ParametrizationList(ModuleList):
    """The parametrizations of one tensor, in order, and the tensor(s) they start from:
    ``original`` or ``original0``, ``original1``, ... It is
    ``module.parametrizations[tensor_name]``; calling it computes the parametrized tensor.
    Built by ``register_parametrization``, not by users."""

    def __init__(self, modules: Sequence[Module], original: Tensor, unsafe: bool = False) -> None:
        if len(modules) == 0:
            raise ValueError("ParametrizationList requires one or more modules")
        super().__init__(modules)
        self.unsafe = unsafe
        shape, dtype = original.shape, original.dtype
        with no_grad():
            new = original
            for module in reversed(list(self)):
                new = _right_inverse(module, new)
        if not isinstance(new, (Tensor, Sequence)):
            raise ValueError(
                "right_inverse must return a Tensor or a sequence of tensors (list, tuple...); "
                f"got {type(new).__name__}"
            )
        self.is_tensor = isinstance(new, Tensor)
        self.ntensors = 1 if self.is_tensor else len(new)
        if self.is_tensor:
            if new.dtype != dtype:
                raise ValueError(
                    f"right_inverse returned one tensor of dtype {new.dtype} for an original of "
                    f"dtype {dtype}; one returned tensor may not change the dtype"
                )
            if new.device != original.device:
                raise ValueError(
                    f"right_inverse returned one tensor on {new.device} for an original on "
                    f"{original.device}; one returned tensor may not change the device"
                )
            with no_grad():
                _set(original, new)  # the same object: the optimizer need not be told
            _register_parameter_or_buffer(self, "original", original)
        else:
            for i, tensor in enumerate(new):
                if not isinstance(tensor, Tensor):
                    raise ValueError(
                        "right_inverse must return a Tensor or a sequence of tensors; element "
                        f"{i} is a {type(tensor).__name__}"
                    )
                # As PyTorch: new tensors, which the user adds to the optimizer themselves.
                if isinstance(original, Parameter):
                    tensor = Parameter(tensor, original.requires_grad)
                tensor.requires_grad_(original.requires_grad)
                _register_parameter_or_buffer(self, f"original{i}", tensor)
        if not self.unsafe:
            value = self()
            if not isinstance(value, Tensor):
                raise ValueError(
                    f"a parametrization must return a tensor, got {type(value).__name__}"
                )
            if value.dtype != dtype or value.shape != shape:
                raise ValueError(
                    f"the parametrization turns a {tuple(shape)} {dtype} tensor into a "
                    f"{tuple(value.shape)} {value.dtype} one; it may not change the shape or "
                    "dtype unless registered with unsafe=True"
                )

    def right_inverse(self, value: Tensor) -> None:
        """Store ``value`` (what ``module.<name>`` should become) in the original(s): the
        parametrizations' ``right_inverse`` in reverse order; each must have one."""
        with no_grad():
            for module in reversed(list(self)):
                if not hasattr(module, "right_inverse"):
                    raise RuntimeError(
                        f"parametrization {type(module).__name__} does not implement "
                        "right_inverse, so the parametrized tensor cannot be assigned; give it a "
                        "right_inverse method or assign to parametrizations.<name>.original"
                    )
                value = module.right_inverse(value)
            if self.is_tensor:
                if not isinstance(value, Tensor):
                    raise ValueError(
                        f"right_inverse must return a tensor, got {type(value).__name__}"
                    )
                if value.dtype != self.original.dtype:
                    raise ValueError(
                        f"right_inverse returned dtype {value.dtype} but original has "
                        f"{self.original.dtype}"
                    )
                _set(self.original, value)
                return
            if not isinstance(value, Sequence) or len(value) != self.ntensors:
                raise ValueError(
                    f"right_inverse must return a sequence of {self.ntensors} tensors, got "
                    f"{type(value).__name__}"
                    + (f" of length {len(value)}" if isinstance(value, Sequence) else "")
                )
            targets = [getattr(self, f"original{i}") for i in range(self.ntensors)]
            for i, (tensor, target) in enumerate(zip(value, targets)):
                if not isinstance(tensor, Tensor) or tensor.dtype != target.dtype:
                    raise ValueError(
                        f"right_inverse's element {i} must be a tensor of dtype {target.dtype} "
                        f"(as original{i}), got {getattr(tensor, 'dtype', type(tensor).__name__)}"
                    )
                _check_device(target, tensor, f"original{i}")  # all, before any is stored
            for i, (tensor, target) in enumerate(zip(value, targets)):
                _set(target, tensor, f"original{i}")

    def forward(self) -> Tensor:
        modules = iter(self._modules.values())
        first = next(modules)
        if self.is_tensor:
            x = first(self.original)
        else:
            x = first(*(getattr(self, f"original{i}") for i in range(self.ntensors)))
        for module in modules:
            x = module(x)
        return x


def _parametrized_property(tensor_name: str) -> property:
    """``module.<tensor_name>``: the parametrized value (cached inside ``cached()``); an
    assignment goes through the parametrizations' ``right_inverse``."""

    def get(self: Module) -> Tensor:
        parametrization = self.parametrizations[tensor_name]
        if not _cache_enabled:
            return _evaluate(parametrization, tensor_name)
        key = (id(self), tensor_name)
        tensor = _cache.get(key)
        if tensor is None:
            tensor = _cache[key] = _evaluate(parametrization, tensor_name)
        return tensor

    def set(self: Module, value: Tensor) -> None:
        self.parametrizations[tensor_name].right_inverse(value)

    return property(get, set, doc=f"The parametrized {tensor_name!r}, computed on access.")


def _evaluate(parametrization: ParametrizationList, tensor_name: str) -> Tensor:
    try:
        return parametrization()
    except AttributeError as error:
        # Python would swallow an AttributeError from a property getter and report that the
        # module has no attribute ``tensor_name``, hiding the parametrization's bug.
        raise RuntimeError(f"computing parametrized {tensor_name!r} failed: {error}") from error


def _deepcopy(self: Module, memo: dict) -> Module:
    """A copy with its own generated class: registering or removing a parametrization on the
    copy then leaves the original's properties alone (PyTorch's copies share the class)."""
    found = memo.get(id(self))
    if found is not None:
        return found
    cls = type(self)
    replica_cls = _parametrized_class(cls.__bases__[0])
    for name, value in cls.__dict__.items():
        if isinstance(value, property):
            setattr(replica_cls, name, value)  # the getter reads ``self``: shareable
    replica = object.__new__(replica_cls)
    memo[id(self)] = replica
    replica.__dict__.update(copy.deepcopy(self.__dict__, memo))
    return replica


def _getstate(self: Module) -> Any:
    raise RuntimeError(
        f"{type(self).__name__} holds parametrizations and cannot be pickled; save "
        "module.state_dict() (dtrain.save) and load it into a module parametrized the same way"
    )


def _parametrized_class(cls: type) -> type:
    namespace: dict[str, Any] = {"__getstate__": _getstate}
    if not hasattr(cls, "__deepcopy__"):
        namespace["__deepcopy__"] = _deepcopy
    return type(f"Parametrized{cls.__name__}", (cls,), namespace)


def register_parametrization(
    module: Module, tensor_name: str, parametrization: Module, *, unsafe: bool = False
) -> Module:
    """Make ``module.<tensor_name>`` the output of ``parametrization``, as PyTorch's.

    The first parametrization of a tensor moves it to
    ``module.parametrizations.<tensor_name>.original`` (passed through
    ``parametrization.right_inverse`` if it has one; several returned tensors become
    ``original0``, ``original1``, ... and the forward takes them all). A later one on the same
    tensor is applied after the earlier ones. Assigning ``module.<tensor_name> = value`` runs
    the ``right_inverse`` of each parametrization, in reverse order.

    Args:
        module: the module holding the parameter or buffer.
        tensor_name: the parameter's or buffer's name.
        parametrization: a module whose forward maps the original(s) to the tensor.
        unsafe: allow the parametrization to change the tensor's shape or dtype (unchecked).

    Returns:
        ``module``.

    Raises:
        ValueError: ``tensor_name`` is no parameter or buffer of ``module`` (or is None), or
            the parametrization changes the shape or dtype without ``unsafe``.
    """
    parametrization.train(module.training)
    if is_parametrized(module, tensor_name):
        if not unsafe:
            _check_stacked(module, tensor_name, parametrization)
        parametrizations = module.parametrizations[tensor_name]
        parametrizations.append(parametrization)
        parametrizations.unsafe = parametrizations.unsafe or unsafe
        return module
    if tensor_name not in module._parameters and tensor_name not in module._buffers:
        raise ValueError(
            f"{type(module).__name__} has no parameter, buffer or parametrized tensor named "
            f"{tensor_name!r}; pass one of {sorted([*module._parameters, *module._buffers])}"
        )
    original = getattr(module, tensor_name)
    if original is None:
        raise ValueError(
            f"{type(module).__name__}.{tensor_name} is None; there is no tensor to parametrize"
        )
    parametrizations = ParametrizationList([parametrization], original, unsafe=unsafe)
    delattr(module, tensor_name)
    if not is_parametrized(module):
        module.__class__ = _parametrized_class(type(module))
        module.parametrizations = ModuleDict()
    setattr(type(module), tensor_name, _parametrized_property(tensor_name))
    module.parametrizations[tensor_name] = parametrizations
    return module


def _check_stacked(module: Module, tensor_name: str, parametrization: Module) -> None:
    """A parametrization stacked on another must map the current tensor's shape and dtype to
    themselves, and so must its right_inverse."""
    current = getattr(module, tensor_name)
    out = parametrization(current)
    where = f"register_parametrization({type(parametrization).__name__}) on {tensor_name!r}"
    if not isinstance(out, Tensor):
        raise ValueError(
            f"{where}: a parametrization must return a tensor, got {type(out).__name__}"
        )
    for what, value in (("forward", out), ("right_inverse", _right_inverse(parametrization, out))):
        if not isinstance(value, Tensor):
            raise ValueError(
                f"{where}: right_inverse must return a tensor, got {type(value).__name__}"
            )
        if value.shape != current.shape or value.dtype != current.dtype:
            raise ValueError(
                f"{where}: its {what} turns a {tuple(current.shape)} {current.dtype} tensor into "
                f"a {tuple(value.shape)} {value.dtype} one; pass unsafe=True to allow it"
            )


def is_parametrized(module: Module, tensor_name: str | None = None) -> bool:
    """Whether ``module`` has a parametrization on ``tensor_name`` (on any tensor for None)."""
    parametrizations = module.__dict__.get("_modules", {}).get("parametrizations")
    if not isinstance(parametrizations, ModuleDict):
        return False
    if tensor_name is None:
        return len(parametrizations) > 0
    return tensor_name in parametrizations


def remove_parametrizations(
    module: Module, tensor_name: str, leave_parametrized: bool = True
) -> Module:
    """Remove every parametrization of ``tensor_name``; it becomes a plain parameter (or
    buffer) again, holding the current parametrized value (``leave_parametrized=True``) or
    the original. A single original keeps its identity, so an optimizer holding it goes on.

    Returns:
        ``module``.

    Raises:
        ValueError: ``tensor_name`` is not parametrized, or ``leave_parametrized=False`` for a
            parametrization of several tensors.
    """
    if not is_parametrized(module, tensor_name):
        raise ValueError(
            f"{type(module).__name__} has no parametrization on {tensor_name!r}; "
            "is_parametrized(module, name) tells which tensors have one"
        )
    parametrizations = module.parametrizations[tensor_name]
    if parametrizations.is_tensor:
        original = parametrizations.original
        if leave_parametrized:
            with no_grad():
                value = getattr(module, tensor_name)
                _set(original, value)
    elif leave_parametrized:
        value = getattr(module, tensor_name)  # with grad: it tells whether to make a Parameter
        original = Parameter(value) if value.requires_grad else value.detach()
    else:
        raise ValueError(
            f"remove_parametrizations({tensor_name!r}, leave_parametrized=False): the "
            f"parametrization starts from {parametrizations.ntensors} tensors, so there is no "
            "single original to restore; use leave_parametrized=True"
        )
    delattr(type(module), tensor_name)
    del module.parametrizations[tensor_name]
    _register_parameter_or_buffer(module, tensor_name, original)
    if not is_parametrized(module):
        delattr(module, "parametrizations")
        module.__class__ = type(module).__bases__[0]
    return module


def type_before_parametrizations(module: Module) -> type:
    """The module's class before ``register_parametrization`` swapped it (or its class)."""
    if is_parametrized(module):
        return type(module).__bases__[0]
    return type(module)


__all__ = [
    "ParametrizationList",
    "cached",
    "is_parametrized",
    "register_parametrization",
    "remove_parametrizations",
    "type_before_parametrizations",
]
