"""FSDP's auto-wrap policies (torch.distributed.fsdp.wrap's names and signatures) and the
walk that wraps sub-modules in nested FSDP units, innermost first.

A policy is called as ``policy(module=m, recurse=..., nonwrapped_numel=n)``: with
``recurse=True`` it says whether to look inside ``m``; with ``recurse=False`` whether to wrap
``m`` itself, ``n`` being the parameters of ``m`` not already in a nested unit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from dtrain._tensor.nn.module import Module
from dtrain._tensor.nn.modules.container import ModuleDict, ModuleList


def always_wrap_policy(*args: Any, **kwargs: Any) -> bool:
    """Wrap every module (each with parameters becomes its own unit)."""
    return True


def size_based_auto_wrap_policy(
    module: Module,
    recurse: bool,
    nonwrapped_numel: int,
    min_num_params: int = int(1e8),
    force_leaf_modules: set[type] | None = None,
    exclude_wrap_modules: set[type] | None = None,
) -> bool:
    """Wrap a module once it holds at least ``min_num_params`` parameters not yet wrapped;
    use as ``functools.partial(size_based_auto_wrap_policy, min_num_params=N)``.
    ``force_leaf_modules`` are not looked into; ``exclude_wrap_modules`` (default
    ``ModuleList``, ``ModuleDict``) are never wrapped themselves."""
    force_leaf = (
        size_based_auto_wrap_policy.FORCE_LEAF_MODULES
        if force_leaf_modules is None
        else force_leaf_modules
    )
    exclude = (
        size_based_auto_wrap_policy.EXCLUDE_WRAP_MODULES
        if exclude_wrap_modules is None
        else exclude_wrap_modules
    )
    if recurse:
        return not isinstance(module, tuple(force_leaf))
    return nonwrapped_numel >= min_num_params and not isinstance(module, tuple(exclude))


size_based_auto_wrap_policy.EXCLUDE_WRAP_MODULES = {ModuleList, ModuleDict}
size_based_auto_wrap_policy.FORCE_LEAF_MODULES = set()


def _module_wrap_policy(
    module: Module, recurse: bool, nonwrapped_numel: int, module_classes: set[type]
) -> bool:
    if recurse:
        return True
    return isinstance(module, tuple(module_classes))


def transformer_auto_wrap_policy(
    module: Module, recurse: bool, nonwrapped_numel: int, transformer_layer_cls: set[type]
) -> bool:
    """Wrap every instance of ``transformer_layer_cls`` (e.g. your block class); use as
    ``functools.partial(transformer_auto_wrap_policy, transformer_layer_cls={Block})``."""
    return _module_wrap_policy(module, recurse, nonwrapped_numel, set(transformer_layer_cls))


def lambda_auto_wrap_policy(
    module: Module, recurse: bool, nonwrapped_numel: int, lambda_fn: Callable[[Module], bool]
) -> bool:
    """Wrap the modules for which ``lambda_fn(module)`` is true."""
    if recurse:
        return True
    return bool(lambda_fn(module))


class ModuleWrapPolicy:
    """Wrap every instance of the given module classes: ``ModuleWrapPolicy({Block})``."""

    def __init__(self, module_classes: Iterable[type]) -> None:
        classes = set(module_classes)
        for cls in classes:
            if not (isinstance(cls, type) and issubclass(cls, Module)):
                raise TypeError(
                    f"ModuleWrapPolicy: {cls!r} is not an nn.Module class; pass classes, "
                    "e.g. ModuleWrapPolicy({nn.Linear})"
                )
        self._module_classes = classes

    def __call__(self, module: Module, recurse: bool, *args: Any, **kwargs: Any) -> bool:
        return _module_wrap_policy(module, recurse, 0, self._module_classes)

    def __repr__(self) -> str:
        names = sorted(cls.__name__ for cls in self._module_classes)
        return f"ModuleWrapPolicy({{{', '.join(names)}}})"


def recursive_wrap(
    module: Module,
    policy: Callable[..., bool],
    wrap: Callable[[Module], Module],
    is_unit: Callable[[Module], bool],
    only_wrap_children: bool = False,
) -> tuple[Module, int]:
    """torch's ``_recursive_wrap``: wrap ``module``'s children bottom-up where ``policy``
    says so (``wrap(child)`` replaces each), then ``module`` itself unless
    ``only_wrap_children``. Returns the (maybe wrapped) module and the number of parameters
    it put in units. Modules already wrapped (``is_unit``) are left as they are."""
    if is_unit(module):
        return module, 0
    nonwrapped = _nonwrapped_numel(module, is_unit)
    if not policy(module=module, recurse=True, nonwrapped_numel=nonwrapped):
        return module, 0
    wrapped_numel = 0
    for name, child in list(module.named_children()):
        new_child, count = recursive_wrap(child, policy, wrap, is_unit)
        if new_child is not child:
            setattr(module, name, new_child)
        wrapped_numel += count
    remainder = nonwrapped - wrapped_numel
    if not only_wrap_children and policy(module=module, recurse=False, nonwrapped_numel=remainder):
        return wrap(module), nonwrapped
    return module, wrapped_numel


def _nonwrapped_numel(module: Module, is_unit: Callable[[Module], bool]) -> int:
    """Parameters of ``module`` outside any FSDP unit (each shared parameter once)."""
    seen: set[int] = set()
    total = 0
    stack = [module]
    while stack:
        current = stack.pop()
        for param in current._parameters.values():
            if param is not None and id(param) not in seen:
                seen.add(id(param))
                total += int(param.numel())
        stack.extend(m for m in current._modules.values() if m is not None and not is_unit(m))
    return total


__all__ = [
    "ModuleWrapPolicy",
    "always_wrap_policy",
    "lambda_auto_wrap_policy",
    "size_based_auto_wrap_policy",
    "transformer_auto_wrap_policy",
]
