"""``Module``'s forward and backward hooks: registering them (``register_forward_hook``
...) and running them around ``forward`` in PyTorch's order; and registering its state-dict
hooks (``register_state_dict_pre_hook`` ..., run by ``module_state_dict.py``). ``ModuleHooks``
is a mixin of ``Module``, whose ``__init__`` makes the forward/backward hook dicts; the
state-dict hook dicts are made on first registration."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from dtrain._tensor.autograd.grad_mode import is_grad_enabled
from dtrain._tensor.nn.backward_hooks import HookedCall
from dtrain._tensor.nn.hooks import HookHandle, hook_ids


class ModuleHooks:
    """Mixed into ``Module``: its forward/backward hooks."""

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

    # ---- state-dict hooks (run by module_state_dict.py) ----------------------------------
    def register_state_dict_pre_hook(self, hook: Callable) -> HookHandle:
        """``hook(module, prefix, keep_vars)`` before ``state_dict`` adds this module's
        entries (also when a parent's ``state_dict`` reaches it)."""
        return self._add_state_hook("_state_dict_pre_hooks", hook)

    def register_state_dict_post_hook(self, hook: Callable) -> HookHandle:
        """``hook(module, state_dict, prefix, local_metadata)`` after this module's and its
        sub-modules' entries were added; it changes ``state_dict`` in place and returns None."""
        return self._add_state_hook("_state_dict_hooks", (hook, True))

    def _register_state_dict_hook(self, hook: Callable) -> HookHandle:
        """PyTorch's older (private) post-hook: as ``register_state_dict_post_hook``, but a
        returned dict replaces the state dict when this module is the one called."""
        return self._add_state_hook("_state_dict_hooks", (hook, False))

    def register_load_state_dict_pre_hook(self, hook: Callable) -> HookHandle:
        """``hook(module, state_dict, prefix, local_metadata, strict, missing_keys,
        unexpected_keys, error_msgs)`` before this module's entries load; it may change
        ``state_dict`` (a copy; its sub-modules see the change) and the lists in place."""
        return self._add_state_hook("_load_state_dict_pre_hooks", hook)

    def register_load_state_dict_post_hook(self, hook: Callable) -> HookHandle:
        """``hook(module, incompatible_keys)`` after this module and its sub-modules loaded;
        it may change ``incompatible_keys.missing_keys`` / ``.unexpected_keys`` in place
        (``strict`` checks them afterwards) and returns None."""
        return self._add_state_hook("_load_state_dict_post_hooks", hook)

    def _add_state_hook(self, attribute: str, entry: Any) -> HookHandle:
        hooks = self.__dict__.get(attribute)
        if hooks is None:
            hooks = OrderedDict()
            object.__setattr__(self, attribute, hooks)
        key = next(hook_ids)
        hooks[key] = entry
        return HookHandle(hooks, key, self._hooks_with_kwargs)
