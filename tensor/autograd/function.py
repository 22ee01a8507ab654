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
forward returns exactly one tensor.
"""

from __future__ import annotations

from typing import Any

from dtrain._tensor.autograd.engine import private_grad
from dtrain._tensor.autograd.grad_mode import no_grad
from dtrain._tensor.autograd.grad_mode import state as _grad_state
from dtrain._tensor.autograd.op import Op
from dtrain._tensor.tensor import Tensor, wrap


class FunctionCtx:
    """What ``forward`` hands to ``backward``: saved tensors and any attributes set on it."""

    needs_input_grad: tuple = ()

    def __init__(self) -> None:
        self._saved: tuple = ()
        self._versions: tuple = ()
        self._freed = False

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
        """Accepted for PyTorch compatibility; the single output is always differentiable."""

    def set_materialize_grads(self, value: bool) -> None:
        """Accepted for PyTorch compatibility: gradients reaching backward are never None."""


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
        if len(grads) != len(self.shapes):
            raise RuntimeError(
                f"{self.function.__name__}.backward returned {len(grads)} gradient(s) but "
                f"forward took {len(self.shapes)} input(s); return one per input (None for "
                "inputs without a gradient)"
            )
        arrays = []
        for i, (g, shape, needed) in enumerate(zip(grads, self.shapes, self.needs_input_grad)):
            if g is None or not needed:
                arrays.append(None)
                continue
            array = g._array if isinstance(g, Tensor) else g
            if array.shape != shape:
                raise RuntimeError(
                    f"{self.function.__name__}.backward returned a gradient of shape "
                    f"{array.shape} for input {i} of shape {shape}; they must match"
                )
            arrays.append(array)
        return tuple(arrays)

    def release(self) -> None:
        self.ctx._freed = True
        super().release()

    def name(self) -> str:
        return f"{self.function.__name__}Backward"


class Function:
    """Base class for an op with a hand-written backward; call it with ``apply``."""

    @staticmethod
    def forward(ctx: FunctionCtx, *args: Any, **kwargs: Any) -> Tensor:
        raise NotImplementedError("a Function subclass must define forward(ctx, *inputs)")

    @staticmethod
    def backward(ctx: FunctionCtx, *grad_outputs: Tensor) -> Any:
        raise NotImplementedError("a Function subclass must define backward(ctx, grad)")

    @classmethod
    def apply(cls, *args: Any, **kwargs: Any) -> Tensor:
        """Run ``forward`` and, when an input requires grad, record ``backward``."""
        ctx = FunctionCtx()
        needs = tuple(isinstance(a, Tensor) and a._requires_grad for a in args)
        ctx.needs_input_grad = needs
        with no_grad():
            out = cls.forward(ctx, *args, **kwargs)
        if not isinstance(out, Tensor):
            raise TypeError(
                f"{cls.__name__}.forward returned {type(out).__name__}; dtrain's Function "
                "returns exactly one tensor (split several outputs into several Functions)"
            )
        if not (_grad_state.enabled and any(needs)):
            return out
        shapes = [a._array.shape if isinstance(a, Tensor) else None for a in args]
        node = _FunctionNode(cls, ctx, shapes)
        node.parents = tuple(
            (a if a.grad_fn is None else a.grad_fn) if need else None
            for a, need in zip(args, needs)
        )
        node.needs_input_grad = needs
        result = wrap(out._array, node)
        result._version = out._version
        return result
