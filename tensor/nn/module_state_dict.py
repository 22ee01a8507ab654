"""``Module``'s state: ``state_dict`` (parameters and persistent buffers by dotted name)
and ``load_state_dict`` (its keys checked, each entry loaded by ``module_state.load_entry``).
``ModuleStateDict`` is a mixin of ``Module``."""

from __future__ import annotations

from collections import OrderedDict, namedtuple
from collections.abc import Mapping

from dtrain._tensor.autograd.grad_mode import no_grad
from dtrain._tensor.nn.module_state import load_entry

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class ModuleStateDict:
    """Mixed into ``Module``: ``state_dict`` and ``load_state_dict``."""

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
