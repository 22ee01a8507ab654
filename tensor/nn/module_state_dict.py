"""``Module``'s state: ``state_dict`` (parameters and persistent buffers by dotted name)
and ``load_state_dict`` (each entry loaded by ``module_state.load_entry``), both walking
the module tree as PyTorch's recursion does (iteratively), with PyTorch's state-dict hooks
(registered in ``module_hooks.py``) run at the same points. ``ModuleStateDict`` is a mixin
of ``Module``."""

from __future__ import annotations

from collections import OrderedDict, namedtuple
from collections.abc import Mapping
from typing import Any

from dtrain._tensor.autograd.grad_mode import no_grad
from dtrain._tensor.nn.module_state import SizeMismatchError, load_entry

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def _hooks(module: Any, attribute: str) -> dict:
    """One of the module's state-dict hook dicts (made on first registration), or {}."""
    return module.__dict__.get(attribute) or {}


class ModuleStateDict:
    """Mixed into ``Module``: ``state_dict`` and ``load_state_dict``."""

    def state_dict(
        self, destination: dict | None = None, prefix: str = "", keep_vars: bool = False
    ) -> OrderedDict:
        """Parameters and persistent buffers by dotted name (detached unless keep_vars).

        A module or parameter reachable by two paths appears under both names, as in
        PyTorch, so a checkpoint of a model with tied weights loads into either framework.
        Each module's ``register_state_dict_pre_hook`` hooks run before its entries are
        added, its post-hooks after its sub-modules' (PyTorch's order). As PyTorch, a new
        result carries ``_metadata``: ``{module name: {"version": cls._version}}``, which
        ``load_state_dict`` hands each module's load pre-hooks.
        """
        if destination is None:
            destination = OrderedDict()
            destination._metadata = OrderedDict()  # type: ignore[attr-defined]
        versions = getattr(destination, "_metadata", None)
        stack: list[tuple[Any, str, Any]] = [(self, prefix, None)]
        while stack:
            module, head, local_metadata = stack.pop()
            if local_metadata is not None:  # its sub-modules are done: the post-hooks
                post_hooks = module.__dict__.get("_state_dict_hooks")
                if post_hooks:
                    destination = self._run_post_hooks(
                        module, post_hooks, destination, head, local_metadata
                    )
                continue
            local_metadata = {"version": getattr(type(module), "_version", 1)}
            if versions is not None:
                versions[head[:-1]] = local_metadata
            hooks = module.__dict__
            if "_state_dict_pre_hooks" in hooks:
                for hook in list(hooks["_state_dict_pre_hooks"].values()):
                    hook(module, head, keep_vars)
            for name, tensor in module._parameters.items():
                if tensor is not None:
                    destination[head + name] = tensor if keep_vars else tensor.detach()
            non_persistent = module._non_persistent
            for name, tensor in module._buffers.items():
                if tensor is not None and name not in non_persistent:
                    destination[head + name] = tensor if keep_vars else tensor.detach()
            if "_state_dict_hooks" in hooks:  # registered (by now): run after the children
                stack.append((module, head, local_metadata))
            children = module._modules
            if children:
                stack.extend(
                    (m, f"{head}{n}.", None) for n, m in reversed(children.items()) if m is not None
                )
        return destination

    def _run_post_hooks(
        self, module: Any, hooks: dict, destination: dict, head: str, local_metadata: dict
    ) -> dict:
        """Run ``module``'s state-dict post-hooks; returns the state dict the caller goes on
        with (a private hook's returned dict replaces it only when ``module`` is the one
        called, as PyTorch; that module's later hooks see it either way)."""
        target = destination
        for hook, public in list(hooks.values()):
            result = hook(module, target, head, local_metadata)
            if result is None:
                continue
            if public:
                raise RuntimeError(
                    f"state_dict post-hook {hook!r} returned {type(result).__name__}; it must "
                    "return None (change the state_dict in place)"
                )
            target = result
        return target if module is self else destination

    def _own_state(self) -> OrderedDict:
        """This module's own parameters and persistent buffers (no sub-modules'), by name."""
        own = OrderedDict((n, p) for n, p in self._parameters.items() if p is not None)
        own.update(
            (n, b)
            for n, b in self._buffers.items()
            if b is not None and n not in self._non_persistent
        )
        return own

    def _optional_state(self, version: int | None = None) -> tuple[str, ...]:
        """Names of this module's own state entries a state saved by ``version`` of the
        module's class (None: unknown) may lack; they keep their values then (BatchNorm's
        ``num_batches_tracked`` before its version 2)."""
        return ()

    def _state_slots(self) -> OrderedDict:
        """``state_dict()``'s keys (without hooks), each with the module, local name and
        tensor behind it."""
        slots = OrderedDict()
        for module_name, module in self.named_modules(remove_duplicate=False):
            head = f"{module_name}." if module_name else ""
            for name, tensor in module._own_state().items():
                slots[head + name] = (module, name, tensor)
        return slots

    def _optional_keys(self) -> set[str]:
        """The ``_state_slots`` keys a loaded state may lack."""
        return {
            f"{name}.{entry}" if name else entry
            for name, module in self.named_modules(remove_duplicate=False)
            for entry in module._optional_state()
        }

    def load_state_dict(
        self, state_dict: Mapping, strict: bool = True, assign: bool = False
    ) -> IncompatibleKeys:
        """Load a state (name → Tensor or array) into this module's parameters and buffers.

        By default values are copied in place, cast to each tensor's dtype and device (an
        optimizer holding the parameters keeps working). With ``assign=True`` the given
        tensors replace them, keeping their own dtype and device; a parameter stays an
        ``nn.Parameter`` with its ``requires_grad``. As PyTorch, each module's load
        pre-hooks run before its entries load (on a copy of the state they may change; their
        ``local_metadata`` is the module's entry of ``state_dict._metadata``, ``{}`` without),
        its post-hooks after its sub-modules', and the key check comes last, so a post-hook
        may clear ``missing_keys`` / ``unexpected_keys``.

        Args:
            state_dict: a mapping from dotted names to tensors or numpy/cupy arrays.
            strict: missing or unexpected keys are an error (else only reported).
            assign: replace the tensors instead of copying into them.

        Returns:
            ``(missing_keys, unexpected_keys)``.

        Raises:
            TypeError: ``state_dict`` is not a mapping, or a value is not a tensor or array.
            RuntimeError: a key problem under ``strict``, a shape mismatch, or a hook's
                error message: raised after every entry that matches has been loaded and
                the post-hooks ran, naming all of them (as PyTorch).
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(
                f"load_state_dict: expected a dict-like state_dict (name -> tensor), got "
                f"{type(state_dict).__name__}"
            )
        missing: list[str] = []
        unexpected: list[str] = []
        errors: list[str] = []
        metadata = getattr(state_dict, "_metadata", None)
        state = OrderedDict(state_dict)
        if metadata is not None:
            state._metadata = metadata  # type: ignore[attr-defined]
        stack: list[tuple[Any, dict, str, bool]] = [(self, state, "", False)]
        with no_grad():
            while stack:
                module, local, head, done = stack.pop()
                if done:
                    keys = IncompatibleKeys(missing, unexpected)
                    for hook in list(_hooks(module, "_load_state_dict_post_hooks").values()):
                        if hook(module, keys) is not None:
                            raise RuntimeError(
                                f"load_state_dict post-hook {hook!r} returned a value; it must "
                                "return None (change incompatible_keys in place)"
                            )
                    continue
                # as PyTorch: the checkpoint's metadata for this module, {} without any
                local_metadata = {} if metadata is None else dict(metadata.get(head[:-1], {}))
                if assign:
                    local_metadata["assign_to_params_buffers"] = True
                for hook in list(_hooks(module, "_load_state_dict_pre_hooks").values()):
                    # strict is always True here, as PyTorch passes it
                    hook(module, local, head, local_metadata, True, missing, unexpected, errors)
                version = local_metadata.get("version")
                loaded = (local, head, version, assign)
                by_child = self._load_own(module, loaded, missing, unexpected, errors)
                stack.append((module, local, head, True))
                children = [(n, m) for n, m in module._modules.items() if m is not None]
                for name, child in reversed(children):
                    stack.append((child, by_child.get(name, {}), f"{head}{name}.", False))
        if strict and (missing or unexpected):
            errors.insert(
                0,
                f"missing keys {missing}, unexpected keys {unexpected}; pass strict=False to "
                "load the rest",
            )
        if errors:
            raise RuntimeError(f"load_state_dict for {type(self).__name__}: " + "; ".join(errors))
        return IncompatibleKeys(missing, unexpected)

    def _load_own(
        self, module: Any, loaded: tuple, missing: list, unexpected: list, errors: list
    ) -> dict[str, dict]:
        """Load ``module``'s own entries from ``loaded``: ``(local, head, version, assign)``,
        the entries under ``head`` and the version of the module's class that saved them;
        note its missing keys, the keys under ``head`` that name neither its state nor a
        sub-module (PyTorch's rule), and each size mismatch (in ``errors``: the rest still
        loads, as PyTorch). Returns the entries of ``local`` under each sub-module's name,
        by that name."""
        local, head, version, assign = loaded
        own = module._own_state()
        optional = module._optional_state(version)
        for name, target in own.items():
            key = head + name
            if key in local:
                where = f"load_state_dict for {type(self).__name__}: {key!r}"
                try:
                    load_entry(module, name, target, local[key], where, assign)
                except SizeMismatchError as error:
                    errors.append(f"{key!r}: {error.detail}")
            elif name not in optional:
                missing.append(key)
        by_child: dict[str, dict] = {}
        children = module._modules
        for key, value in local.items():
            if not key.startswith(head):
                continue
            first, dot, _ = key[len(head) :].partition(".")
            if dot:
                by_child.setdefault(first, {})[key] = value
                if first not in children:  # a None sub-module counts, as PyTorch
                    unexpected.append(key)
            elif first not in own:
                unexpected.append(key)
        return by_child
