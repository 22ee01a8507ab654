"""A module's full backward hooks: ``hook(module, grad_input, grad_output)``, as PyTorch's.

A hooked call routes each tensor going in, and each tensor coming out, through an identity
(a ``_Tap``). The taps of one side all lead to one node, a ``_Hub``, whose inputs are the
original tensors (the machinery is ``dtrain._tensor.autograd.gather``). The engine runs
a node only once every consumer has sent its gradient, so the hub runs once per backward
with the whole side's gradients: the output hub runs the
pre-hooks on ``grad_output`` and passes them into the module; the input hub runs the hooks
on ``grad_input`` and passes what they return on to the tensors the module was called with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dtrain._tensor.autograd.engine import private_grad
from dtrain._tensor.autograd.gather import Hub, Tap, node_of, route
from dtrain._tensor.autograd.grad_mode import no_grad
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module


class _Hub(Hub):
    """Gathers one side's gradients, one slot per tensor, and hands ``run`` all of them."""

    def name(self) -> str:
        return "BackwardHookBackward"


class _Tap(Tap):
    """The identity on one tensor of a hooked call: its gradient goes to the hub's slot."""

    def name(self) -> str:
        return "BackwardHookFunctionBackward"


def _tapped(tensors: list, run: Callable[[list], tuple], views: bool) -> list:
    """``tensors`` (None where a value is not a tensor that requires grad) routed through
    taps into one hub, whose inputs are the tensors themselves; the same list with the
    tapped tensors in their places (views of them with ``views``: see ``gather.route``)."""
    hub = _Hub(len(tensors), run)
    hub.parents = tuple(None if t is None else node_of(t) for t in tensors)
    hub.needs_input_grad = tuple(t is not None for t in tensors)
    return route(hub, tensors, _Tap, views)


def _as_tensors(grads: list) -> tuple:
    return tuple(None if g is None else wrap(private_grad(g)) for g in grads)


def _replacements(result: Any, old: tuple, hook: Callable, what: str, module: Any) -> tuple:
    """A hook's returned gradients checked against the ones it was given."""
    if not isinstance(result, (tuple, list)):
        result = (result,)
    if len(result) != len(old):
        raise RuntimeError(
            f"backward hook {hook!r} of {type(module).__name__} returned {len(result)} "
            f"gradient(s) for {len(old)} {what}; return one per {what[:-1]} (None where "
            "there is none) or None to keep them"
        )
    checked = []
    for index, (new, was) in enumerate(zip(result, old)):
        if new is not None and not isinstance(new, Tensor):
            raise TypeError(
                f"backward hook {hook!r} of {type(module).__name__} returned "
                f"{type(new).__name__} for {what[:-1]} {index}; return Tensors (or None)"
            )
        if new is not None and was is not None and new.shape != was.shape:
            raise RuntimeError(
                f"backward hook {hook!r} of {type(module).__name__} returned a gradient of "
                f"shape {tuple(new.shape)} for {what[:-1]} {index} of shape "
                f"{tuple(was.shape)}; they must match"
            )
        checked.append(new)
    return tuple(checked)


def _arrays(grads: tuple) -> tuple:
    return tuple(None if g is None else g._array for g in grads)


class HookedCall:
    """One call of a module with backward hooks: taps its inputs before ``forward`` and its
    outputs after, and runs the hooks when backward reaches them."""

    def __init__(self, module: Any) -> None:
        self.module = module
        self.grad_output: tuple = ()
        self.inputs_tapped = False
        self.input_count = 0
        self.input_arrays: list = []  # per argument: its array if a tensor, else None

    def tap_inputs(self, args: tuple) -> tuple:
        """``args`` with each tensor that requires grad routed through a tap."""
        self.input_count = len(args)
        self.input_arrays = [a._array if isinstance(a, Tensor) else None for a in args]
        wanted = [a if isinstance(a, Tensor) and a._requires_grad else None for a in args]
        if not any(t is not None for t in wanted):
            return args
        self.inputs_tapped = True
        routed = _tapped(wanted, self._run_hooks, views=True)
        return tuple(a if r is None else r for a, r in zip(args, routed))

    def tap_outputs(self, output: Any) -> Any:
        """``output`` (a tensor, or a tuple or list of values) with its tensors that
        require grad routed through taps."""
        single = isinstance(output, Tensor)
        if not single and not isinstance(output, (tuple, list)):
            raise TypeError(
                f"{type(self.module).__name__} has backward hooks, which need forward to "
                f"return a Tensor or a tuple or list of them; it returned "
                f"{type(output).__name__}. Hook a sub-module that returns tensors instead"
            )
        values = [output] if single else list(output)
        wanted = [v if isinstance(v, Tensor) and v._requires_grad else None for v in values]
        if not any(t is not None for t in wanted):
            return output
        routed = _tapped(wanted, self._run_pre_hooks, views=False)
        values = [v if r is None else r for v, r in zip(values, routed)]
        if single:
            return values[0]
        make = getattr(output, "_make", None)  # a namedtuple takes its fields one by one
        return make(values) if make is not None else type(output)(values)

    def _run_pre_hooks(self, grads: list) -> tuple:
        module = self.module
        grad_output = _as_tensors(grads)
        with no_grad():
            for hook in list(module._backward_pre_hooks.values()):
                result = hook(module, grad_output)
                if result is not None:
                    grad_output = _replacements(result, grad_output, hook, "outputs", module)
        self.grad_output = grad_output
        if not self.inputs_tapped:  # nothing flows back to the inputs: the hooks run now
            self._run_hooks([None] * self.input_count)
        return _arrays(grad_output)

    def _run_hooks(self, grads: list) -> tuple:
        module = self.module
        if self.inputs_tapped:  # as PyTorch: a tensor argument no gradient reached gets 0s
            grads = [
                get_array_module(a).zeros_like(a) if g is None and a is not None else g
                for g, a in zip(grads, self.input_arrays)
            ]
        grad_input = _as_tensors(grads)
        with no_grad():
            for hook in list(module._backward_hooks.values()):
                result = hook(module, grad_input, self.grad_output)
                if result is not None:
                    grad_input = _replacements(result, grad_input, hook, "inputs", module)
        self.grad_output = ()
        return _arrays(grad_input)
