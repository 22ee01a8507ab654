"""``dtrain.autograd.Function``: user-defined ops with PyTorch's ``ctx`` interface.

    class Exp(dt.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            y = x.exp()
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, grad):
            (y,) = ctx.saved_tensors
            return grad * y

    y = Exp.apply(x)

Forward and backward see tensors and run with autograd off. One difference from PyTorch:
forward returns exactly one tensor. As in PyTorch, the inputs are the arguments passed,
in the order of ``forward``'s parameters (keywords included; a default left out is none),
and ``backward`` returns one gradient for each (None where there is none; extra trailing
Nones are ignored). PyTorch 2's style,
``forward(*args)`` without ctx plus ``setup_context(ctx, inputs, output)``, works too; its
inputs are every argument of ``forward``, defaults filled in, as PyTorch binds them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from dtrain._tensor.autograd.engine import private_grad
from dtrain._tensor.autograd.grad_mode import no_grad
from dtrain._tensor.autograd.grad_mode import state as _grad_state
from dtrain._tensor.autograd.op import Op
from dtrain._tensor.autograd.stale_view import refresh_if_stale
from dtrain._tensor.tensor import Tensor, rebase, wrap
from dtrain.runtime.backend import is_cuda_array


class FunctionCtx:
    """What ``forward`` hands to ``backward``: saved tensors and any attributes set on it."""

    needs_input_grad: tuple = ()

    def __init__(self) -> None:
        self._saved: tuple = ()
        self._versions: tuple = ()
        self._freed = False
        self._non_differentiable: tuple = ()
        self._dirty: tuple = ()

    def save_for_backward(self, *tensors: Tensor | None) -> None:
        """Keep tensors for backward; changing one in place before backward is an error."""
        for i, t in enumerate(tensors):
            if t is not None and not isinstance(t, Tensor):
                raise TypeError(
                    f"save_for_backward takes tensors (or None); argument {i} is "
                    f"{type(t).__name__}. Store other values as attributes of ctx"
                )
        self._saved = tensors
        self._versions = tuple(None if t is None else (t._version, t._version[0]) for t in tensors)

    @property
    def saved_tensors(self) -> tuple:
        """The tensors given to ``save_for_backward``, checked against in-place changes."""
        if self._freed:
            raise RuntimeError(
                "saved tensors were freed by an earlier backward; pass retain_graph=True to it"
            )
        for i, entry in enumerate(self._versions):
            if entry is not None and entry[0][0] != entry[1]:
                raise RuntimeError(
                    f"saved tensor {i} was modified by an in-place operation after "
                    f"save_for_backward (version {entry[0][0]}, expected {entry[1]}); clone it "
                    "before changing it"
                )
        return self._saved

    def mark_non_differentiable(self, *tensors: Tensor) -> None:
        """Mark outputs that get no gradient (indices, masks): a marked output leaves the
        graph, so it does not require grad and ``backward`` is never called for it."""
        self._non_differentiable += tensors

    def mark_dirty(self, *tensors: Tensor) -> None:
        """Mark inputs that ``forward`` changed in place and returns: the returned tensor
        is the input itself, its history now this Function (as an in-place op's)."""
        self._dirty += tensors

    def set_materialize_grads(self, value: bool) -> None:
        """Accepted for PyTorch compatibility: gradients reaching backward are never None."""


def once_differentiable(backward: Callable) -> Callable:
    """PyTorch's decorator for a ``backward`` that cannot itself be differentiated: dtrain's
    backwards already run with autograd off and have no gradients of gradients, so it
    returns ``backward`` as it is (scripts that use it run unchanged)."""
    return backward


class _FunctionNode(Op):
    """The graph node of one ``Function.apply`` call."""

    returns_own_grads = False  # the user's backward may return arrays it keeps, or one twice

    def __init__(self, function: type, ctx: FunctionCtx, shapes: list) -> None:
        self.function, self.ctx, self.shapes = function, ctx, shapes

    def backward(self, grad: Any) -> tuple:
        with no_grad():
            grads = self.function.backward(self.ctx, wrap(private_grad(grad)))
        if not isinstance(grads, tuple):
            grads = (grads,)
        count, name = len(self.shapes), self.function.__name__
        if len(grads) > count and all(g is None for g in grads[count:]):
            grads = grads[:count]  # as PyTorch: surplus trailing Nones are fine
        if len(grads) != count:
            raise RuntimeError(
                f"{name}.backward returned {len(grads)} gradient(s) but forward took {count} "
                "input(s) (positional, keyword and defaulted arguments all count); return one "
                "per input (None for inputs without a gradient)"
            )
        arrays = []
        for i, (g, shape, needed) in enumerate(zip(grads, self.shapes, self.needs_input_grad)):
            if g is None:
                arrays.append(None)
                continue
            if shape is None:
                raise RuntimeError(
                    f"{name}.backward returned a gradient for input {i}, which is not a tensor; "
                    "return None there"
                )
            array = g._array if isinstance(g, Tensor) else g
            if not (isinstance(array, np.ndarray) or is_cuda_array(array)):
                raise TypeError(
                    f"{name}.backward returned {type(g).__name__} as the gradient of input {i}; "
                    "return a Tensor (or None)"
                )
            if not needed:
                arrays.append(None)
                continue
            if array.shape != shape:
                raise RuntimeError(
                    f"{name}.backward returned a gradient of shape "
                    f"{array.shape} for input {i} of shape {shape}; they must match"
                )
            arrays.append(array)
        return tuple(arrays)

    def release(self) -> None:
        self.ctx._freed = True
        function = self.function
        super().release()
        self.function = function  # name() still names it in the "second time" error

    def name(self) -> str:
        return f"{self.function.__name__}Backward"


class Function:
    """Base class for an op with a hand-written backward; call it with ``apply``."""

    @staticmethod
    def forward(ctx: FunctionCtx, *args: Any, **kwargs: Any) -> Tensor:
        raise NotImplementedError("a Function subclass must define forward(ctx, *inputs)")

    @staticmethod
    def setup_context(ctx: FunctionCtx, inputs: tuple, output: Tensor) -> None:
        raise NotImplementedError("setup_context is only called when a subclass defines it")

    @staticmethod
    def backward(ctx: FunctionCtx, *grad_outputs: Tensor) -> Any:
        raise NotImplementedError("a Function subclass must define backward(ctx, grad)")

    @classmethod
    def apply(cls, *args: Any, **kwargs: Any) -> Tensor:
        """Run ``forward`` and, when an input requires grad, record ``backward``."""
        ctx = FunctionCtx()
        modern = cls.setup_context is not Function.setup_context
        inputs = _bound_inputs(cls, args, kwargs, modern) if modern or kwargs else args
        for a in inputs:  # a view whose base changed in place: its newest history
            if isinstance(a, Tensor) and a._base is not None:
                refresh_if_stale(a)
        needs = tuple(isinstance(a, Tensor) and a._requires_grad for a in inputs)
        ctx.needs_input_grad = needs
        with no_grad():
            if modern:
                out = cls.forward(*args, **kwargs)
                if isinstance(out, Tensor):
                    cls.setup_context(ctx, inputs, out)
            else:
                out = cls.forward(ctx, *args, **kwargs)
        if not isinstance(out, Tensor):
            raise TypeError(
                f"{cls.__name__}.forward returned {type(out).__name__}; dtrain's Function "
                "returns exactly one tensor (split several outputs into several Functions)"
            )
        if ctx._saved:  # as PyTorch, saved tensors' versions count from forward's end
            ctx.save_for_backward(*ctx._saved)
        if ctx._dirty:
            _check_dirty(cls, ctx, inputs, out)
        recording = _grad_state.enabled and any(needs)
        if ctx._dirty and not recording:
            return out  # the input itself, changed in place
        if not recording or (ctx._non_differentiable and _marked(out, ctx)):
            # outside the graph; an input handed back comes back as an alias, as PyTorch's
            return out.detach() if any(out is a for a in inputs) else out
        shapes = [a._array.shape if isinstance(a, Tensor) else None for a in inputs]
        node = _FunctionNode(cls, ctx, shapes)
        node.parents = tuple(
            (a if a.grad_fn is None else a.grad_fn) if need else None
            for a, need in zip(inputs, needs)
        )
        node.needs_input_grad = needs
        if ctx._dirty:  # as an in-place op: the input takes the new history
            rebase(out, node)
            out._requires_grad = True
            return out
        result = wrap(out._array, node)
        result._version = out._version
        return result


def _marked(out: Tensor, ctx: FunctionCtx) -> bool:
    return any(out is t for t in ctx._non_differentiable)


def _check_dirty(cls: type, ctx: FunctionCtx, inputs: tuple, out: Tensor) -> None:
    """The tensors ``mark_dirty`` names must be inputs, and the one returned, changeable
    in place while autograd records (as an in-place op's target)."""
    name = cls.__name__
    for t in ctx._dirty:
        if not any(t is a for a in inputs):
            raise RuntimeError(
                f"{name}: ctx.mark_dirty was given a tensor that is not an input of forward; "
                "mark only the inputs forward changed in place"
            )
        if t is not out:
            raise RuntimeError(
                f"{name}: an input marked dirty must be what forward returns (dtrain's "
                "Function returns one tensor: mark only that input)"
            )
    if _grad_state.enabled and out._requires_grad and out.grad_fn is None:
        raise RuntimeError(
            f"{name}: a leaf tensor that requires grad cannot be changed in place while "
            "autograd records; call it inside `with dtrain.no_grad():`, or pass a clone"
        )
    if _grad_state.enabled and out._base is not None and any(ctx.needs_input_grad):
        raise RuntimeError(
            f"{name}: changing a view of another tensor in place while autograd records is "
            "not supported; pass the base tensor, or a clone of the view"
        )


def _bound_inputs(cls: type, args: tuple, kwargs: dict, modern: bool) -> tuple:
    """The inputs, as PyTorch takes them: the arguments passed, bound to ``forward``'s
    parameters and in their order (keywords included, a default left out is none); in
    PyTorch 2's style (``setup_context``), every parameter, defaults filled in."""
    cached = cls.__dict__.get("_dtrain_bind")
    if cached is None:  # per class (a subclass may define another forward); one write
        signature = inspect.signature(cls.forward)
        plain = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        every = signature.parameters.values()
        count = len(every) if all(p.kind in plain for p in every) else -1
        cached = (signature, count)
        type.__setattr__(cls, "_dtrain_bind", cached)
    signature, count = cached
    if modern and not kwargs and len(args) == count:
        return args  # every parameter given by position: nothing to bind (the common call)
    ctx = () if modern else (None,)
    try:
        bound = signature.bind(*ctx, *args, **kwargs)
    except TypeError as error:
        raise TypeError(f"{cls.__name__}.apply: {error}") from None
    if modern:
        bound.apply_defaults()
    inputs = []
    for name, value in bound.arguments.items():
        kind = signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            inputs.extend(value)
        elif kind is inspect.Parameter.VAR_KEYWORD:
            inputs.extend(value.values())
        else:
            inputs.append(value)
    return tuple(inputs[len(ctx) :])
