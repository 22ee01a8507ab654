"""The public face of the engine: backward, grad, and gradient hooks."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from dtrain._tensor.autograd import stale_view
from dtrain._tensor.autograd.engine import implicit_one, run_backward
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module


class RemovableHandle:
    """Returned by the ``register_*hook`` methods; ``remove()`` takes the hook away."""

    def __init__(self, hooks: list, hook: Callable) -> None:
        self._hooks, self._hook = hooks, hook

    def remove(self) -> None:
        """Take the hook away (a second call does nothing)."""
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)

    __call__ = remove


refresh_if_stale = stale_view.refresh_if_stale


def _root_gradient(output: Tensor, gradient: Any, position: int, shared_one: bool) -> Any:
    if stale_view.is_stale(output):
        stale_view.refresh(output)
    if not output._requires_grad:
        raise RuntimeError(
            f"output {position} does not require grad and has no grad_fn: no leaf it depends "
            "on has requires_grad=True. Create the parameters with requires_grad=True (and "
            "not under no_grad)"
        )
    array = output._array
    if gradient is None:
        if array.size != 1:
            raise RuntimeError(
                f"backward() of a tensor of shape {array.shape} needs a gradient: it can be "
                "implicitly 1 only for a one-element output. Reduce the output (e.g. .sum()) "
                "or pass gradient= with the output's shape"
            )
        if shared_one:
            return implicit_one(array)
        return get_array_module(array).ones_like(array)
    grad = gradient._array if isinstance(gradient, Tensor) else gradient
    grad = get_array_module(array).asarray(grad, dtype=array.dtype)
    if grad.shape != array.shape:
        raise ValueError(
            f"gradient has shape {grad.shape} but output {position} has shape {array.shape}; "
            "they must match"
        )
    return grad


def _one_per_output(gradients: Any, outputs: list, name: str) -> list:
    """``gradients`` as a list of one per output (None: implicit ones)."""
    if gradients is None:
        return [None] * len(outputs)
    listed = [gradients] if isinstance(gradients, Tensor) else list(gradients)
    if len(listed) != len(outputs):
        raise ValueError(
            f"{name} has {len(listed)} gradient(s) for {len(outputs)} output(s); pass one "
            "per output, in the same order (None for a one-element output's implicit 1)"
        )
    return listed


def _no_higher_order(create_graph: bool) -> None:
    if create_graph:
        raise NotImplementedError(
            "create_graph=True (gradients of gradients) is not supported by dtrain: backward "
            "formulas run on raw arrays. Compute second derivatives by finite differences of "
            "gradients, or keep to first order"
        )


def backward(
    tensors: Tensor | Sequence[Tensor],
    grad_tensors: Any = None,
    retain_graph: bool | None = None,
    create_graph: bool = False,
    inputs: Sequence[Tensor] | None = None,
) -> None:
    """Accumulate into leaves' ``.grad`` the gradient of ``tensors`` (weighted by
    ``grad_tensors``); with ``inputs``, only into those leaves."""
    _no_higher_order(create_graph)
    outputs = [tensors] if isinstance(tensors, Tensor) else list(tensors)
    grad_tensors = _one_per_output(grad_tensors, outputs, "grad_tensors")
    roots = [
        _root_gradient(t, g, i, shared_one=True)
        for i, (t, g) in enumerate(zip(outputs, grad_tensors))
    ]
    if inputs is None:
        run_backward(outputs, roots, retain_graph=bool(retain_graph))
        return
    inputs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    for tensor in inputs:
        refresh_if_stale(tensor)
    grads = run_backward(outputs, roots, retain_graph=bool(retain_graph), capture=inputs)
    for leaf, grad in zip(inputs, grads):
        if grad is None:
            continue
        if leaf.grad is None:
            leaf.grad = wrap(np.array(grad) if isinstance(grad, np.generic) else grad.copy())
        else:
            leaf.grad._array += grad


def grad(
    outputs: Tensor | Sequence[Tensor],
    inputs: Tensor | Sequence[Tensor],
    grad_outputs: Any = None,
    retain_graph: bool | None = None,
    create_graph: bool = False,
    allow_unused: bool | None = None,
    materialize_grads: bool = False,
) -> tuple:
    """Return the gradients of ``outputs`` with respect to ``inputs`` (no ``.grad`` changes)."""
    _no_higher_order(create_graph)
    outputs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    inputs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    for tensor in inputs:
        refresh_if_stale(tensor)
    for i, t in enumerate(inputs):
        if not t._requires_grad:
            raise RuntimeError(f"input {i} of grad() does not require grad; nothing to compute")
    grad_outputs = _one_per_output(grad_outputs, outputs, "grad_outputs")
    # autograd.grad may hand a root's gradient itself back: no shared one
    roots = [
        _root_gradient(t, g, i, shared_one=False)
        for i, (t, g) in enumerate(zip(outputs, grad_outputs))
    ]
    grads = run_backward(outputs, roots, retain_graph=bool(retain_graph), capture=inputs)
    result = []
    for i, (t, g) in enumerate(zip(inputs, grads)):
        if g is None:
            if materialize_grads:
                g = get_array_module(t._array).zeros_like(t._array)
            elif not allow_unused:
                raise RuntimeError(
                    f"input {i} of grad() was not used to compute the outputs; pass "
                    "allow_unused=True to get None for it"
                )
        if isinstance(g, np.generic):  # numpy's ops on 0-d arrays give scalars
            g = np.asarray(g)
        elif g is not None and g.base is not None:
            g = g.copy()
        result.append(None if g is None else wrap(g))
    return tuple(result)


def register_hook(tensor: Tensor, hook: Callable) -> RemovableHandle:
    """See ``Tensor.register_hook``."""
    refresh_if_stale(tensor)
    if not tensor._requires_grad:
        raise RuntimeError("cannot register a hook on a tensor that does not require grad")
    if tensor.grad_fn is None:
        hooks = _leaf_hooks(tensor, "grad")
    else:
        if tensor.grad_fn.tensor_hooks is None:
            tensor.grad_fn.tensor_hooks = []
        hooks = tensor.grad_fn.tensor_hooks
    hooks.append(hook)
    return RemovableHandle(hooks, hook)


def register_post_accumulate_grad_hook(tensor: Tensor, hook: Callable) -> RemovableHandle:
    """See ``Tensor.register_post_accumulate_grad_hook``."""
    if tensor.grad_fn is not None or not tensor._requires_grad:
        raise RuntimeError(
            "post-accumulate-grad hooks go on leaf tensors that require grad (parameters); "
            "use register_hook for a non-leaf tensor"
        )
    hooks = _leaf_hooks(tensor, "post_accumulate")
    hooks.append(hook)
    return RemovableHandle(hooks, hook)


def _leaf_hooks(tensor: Tensor, kind: str) -> list:
    if tensor._hooks is None:
        tensor._hooks = {}
    return tensor._hooks.setdefault(kind, [])


def retain_grad(tensor: Tensor) -> None:
    """See ``Tensor.retain_grad``. The hook sits on the tensor's current node: a second call
    adds nothing, and an in-place op, which gives the tensor a new node, calls this again to
    move it there (the gradient kept is then that of the new value, as in PyTorch)."""
    refresh_if_stale(tensor)
    node = tensor.grad_fn
    if node is None:
        return  # leaves keep their gradient anyway
    kept = tensor._hooks.get("retain") if tensor._hooks is not None else None
    if kept is not None:
        if kept[0] is node:
            return
        kept[1].remove()
    ref = weakref.ref(tensor)

    def keep(grad: Tensor) -> None:
        target = ref()
        if target is not None:
            if target.grad is None:
                target.grad = wrap(grad._array.copy())
            else:
                target.grad._array += grad._array

    handle = register_hook(tensor, keep)
    if tensor._hooks is None:
        tensor._hooks = {}
    tensor._hooks["retain"] = (node, handle)


def retains_grad(tensor: Tensor) -> bool:
    """See ``Tensor.retains_grad``."""
    return tensor._hooks is not None and "retain" in tensor._hooks
