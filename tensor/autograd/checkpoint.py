"""Activation checkpointing (public as ``dtrain.utils.checkpoint``): run a segment without
keeping its intermediate activations, and recompute them in backward.

``checkpoint(fn, *args)`` runs ``fn`` under ``no_grad`` and keeps only ``args``. Each
output tensor is the output of a ``Function`` whose backward restores the random state of
the first run (so dropout draws the same masks), reruns ``fn`` with grad enabled on
detached copies of the inputs and backpropagates the output's gradient through it: the
parameters ``fn`` uses get their gradients there, the inputs get theirs as the Function's.
A tuple output is recomputed once per output tensor that receives a gradient (each
backpropagates only its own part, so the sums are right).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from dtrain._tensor.autograd.api import backward as _backward
from dtrain._tensor.autograd.function import Function, FunctionCtx
from dtrain._tensor.autograd.grad_mode import enable_grad, no_grad
from dtrain._tensor.autograd.grad_mode import state as _grad_state
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime import random as _random
from dtrain.runtime.backend import cupy_module, is_cuda_array


class _RngState:
    """The default generator's state and, for CUDA inputs, a fresh cupy stream per device
    (cupy's generator state cannot be read back, so the segment runs on a seeded one)."""

    def __init__(self, tensors: list[Tensor]) -> None:
        self.cpu = _random.get_rng_state()
        self.cuda: dict[int, int] = {}
        cupy = cupy_module()
        if cupy is None:
            return
        for t in tensors:
            if is_cuda_array(t._array):
                device = int(t._array.device.id)
                if device not in self.cuda:
                    self.cuda[device] = int(np.random.SeedSequence().entropy % 2**63)

    @contextlib.contextmanager
    def active(self, restore_cpu: bool) -> Iterator[None]:
        """Run the block with this state; the caller's CPU and CUDA streams are kept as they
        were when ``restore_cpu`` (recomputation), else they advance as usual."""
        saved_cpu = _random.get_rng_state() if restore_cpu else None
        if restore_cpu:
            _random.set_rng_state(self.cpu)
        saved_cuda = {}
        cupy = cupy_module() if self.cuda else None
        for device, seed in self.cuda.items():
            with cupy.cuda.Device(device):
                saved_cuda[device] = cupy.random.get_random_state()
                cupy.random.set_random_state(cupy.random.RandomState(seed))
        try:
            yield
        finally:
            for device, state in saved_cuda.items():
                with cupy.cuda.Device(device):
                    cupy.random.set_random_state(state)
            if saved_cpu is not None:
                _random.set_rng_state(saved_cpu)


class _Segment:
    """What every output's node shares: the function, its arguments and random state."""

    def __init__(
        self, function: Callable, args: tuple, kwargs: dict, rng: _RngState | None
    ) -> None:
        self.function, self.args, self.kwargs, self.rng = function, args, kwargs, rng

    def rerun(self, inputs: Sequence[Tensor]) -> tuple[Any, list[Tensor]]:
        """``function`` again, with grad on, on detached copies of the tensor arguments."""
        detached = [t.detach().requires_grad_(t.requires_grad) for t in inputs]
        it = iter(detached)
        args = [next(it) if isinstance(a, Tensor) else a for a in self.args]
        rng = self.rng.active(restore_cpu=True) if self.rng else contextlib.nullcontext()
        with rng, enable_grad():
            out = self.function(*args, **self.kwargs)
        return out, detached


class _CheckpointOutput(Function):
    """Output ``index`` of a checkpointed segment; its backward recomputes the segment."""

    @staticmethod
    def forward(
        ctx: FunctionCtx, segment: _Segment, index: Any, value: Tensor, anchor: Tensor, *inputs: Any
    ) -> Tensor:
        ctx.segment, ctx.index = segment, index
        ctx.save_for_backward(*inputs)  # an in-place change before backward is an error
        return value.detach()

    @staticmethod
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple:
        inputs = ctx.saved_tensors
        out, detached = ctx.segment.rerun(inputs)
        if ctx.index is not None:
            out = out[ctx.index]
        if isinstance(out, Tensor) and out.requires_grad:
            _backward(out, grad)
        grads = [d.grad if d.requires_grad else None for d in detached]
        return (None, None, None, None, *grads)


def checkpoint(
    function: Callable[..., Any],
    *args: Any,
    use_reentrant: bool | None = None,
    context_fn: Callable | None = None,
    determinism_check: str = "default",
    debug: bool = False,
    preserve_rng_state: bool = True,
    **kwargs: Any,
) -> Any:
    """``function(*args, **kwargs)`` without keeping its activations; backward recomputes
    them (as ``torch.utils.checkpoint.checkpoint``).

    Args:
        function: the segment; it returns a tensor, or a tuple/list holding tensors.
        *args: its positional arguments (tensors are kept for the recomputation).
        use_reentrant: accepted (True, False or None); dtrain has one implementation, which
            behaves as PyTorch's non-reentrant one: parameters get gradients even when no
            input requires grad, and keyword arguments are passed through.
        context_fn, determinism_check, debug: only their defaults.
        preserve_rng_state: rerun with the random state of the first run (dropout draws the
            same masks); the caller's random streams are left as the first run left them.
        **kwargs: passed to ``function``.

    Returns:
        What ``function`` returns; with grad enabled, its floating-point tensors are tied
        to the recomputation.

    Raises:
        ValueError: for an option that is not supported.
    """
    if use_reentrant not in (None, True, False):
        raise ValueError(f"checkpoint: use_reentrant={use_reentrant!r}; pass True or False")
    if context_fn is not None or determinism_check != "default" or debug:
        raise ValueError(
            "checkpoint: context_fn, determinism_check and debug are not supported by dtrain; "
            "leave them at their defaults"
        )
    inputs = [a for a in args if isinstance(a, Tensor)]
    rng = _RngState(inputs) if preserve_rng_state else None
    with rng.active(restore_cpu=False) if rng else contextlib.nullcontext(), no_grad():
        out = function(*args, **kwargs)
    if not _grad_state.enabled:
        return out
    segment = _Segment(function, args, kwargs, rng)
    # A leaf that requires grad makes every output part of the graph even when no input
    # does, so the parameters inside `function` still get their gradients.
    anchor = wrap(np.zeros(()))
    anchor.requires_grad_(True)

    def tie(value: Any, index: Any) -> Any:
        if not isinstance(value, Tensor) or value.dtype.kind != "f":
            return value
        return _CheckpointOutput.apply(segment, index, value, anchor, *inputs)

    if isinstance(out, (tuple, list)):
        return type(out)(tie(v, i) for i, v in enumerate(out))
    return tie(out, None)


def checkpoint_sequential(
    functions: Any,
    segments: int,
    input: Any,
    use_reentrant: bool | None = None,
    **kwargs: Any,
) -> Any:
    """Run a ``Sequential`` (or a list of modules/functions) in ``segments`` chunks, every
    chunk but the last checkpointed (as ``torch.utils.checkpoint.checkpoint_sequential``).

    Args:
        functions: an ``nn.Sequential`` or a list of callables, applied in order.
        segments: how many chunks.
        input: the first chunk's input.
        use_reentrant: accepted, as in ``checkpoint``.
        **kwargs: ``preserve_rng_state`` only.

    Raises:
        ValueError: an unexpected keyword argument.
    """
    preserve = kwargs.pop("preserve_rng_state", True)
    if kwargs:
        raise ValueError(f"checkpoint_sequential: unexpected keyword arguments {sorted(kwargs)}")
    if hasattr(functions, "children") and not isinstance(functions, (list, tuple)):
        functions = list(functions.children())
    functions = list(functions)

    def run(start: int, end: int) -> Callable[[Any], Any]:
        def forward(x: Any) -> Any:
            for j in range(start, end + 1):
                x = functions[j](x)
            return x

        return forward

    size = len(functions) // segments
    end = -1
    for start in range(0, size * (segments - 1), size):
        end = start + size - 1
        input = checkpoint(
            run(start, end), input, use_reentrant=use_reentrant, preserve_rng_state=preserve
        )
    return run(end + 1, len(functions) - 1)(input)


__all__ = ["checkpoint", "checkpoint_sequential"]
