"""Copies: clone, dtype casts, device moves — each differentiable."""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.device import Device, device_of, to_device


class Clone(Op):
    def forward(self, x: Any) -> Any:
        return x.copy()

    def backward(self, grad: Any) -> tuple:
        return (grad,)


class Cast(Op):
    """A dtype conversion. Its backward converts whatever gradient it gets to the input's
    dtype, so an op fed by autocast's float16 cast of a float32 tensor may send a float32
    gradient straight away (``float32_grad_wanted``), and this conversion then costs
    nothing."""

    # Made by autocast (``amp/cast.py``): the copy is no user's, so no hook, retain_grad or
    # autograd.grad can see the float32 gradient arrive at a float16 tensor.
    for_autocast = False

    def forward(self, x: Any, dtype: Any, precomputed: Any = None) -> Any:
        """``x`` as ``dtype``; ``precomputed``: that conversion, made already (autocast
        casts many parameters in one launch)."""
        self.dtype = x.dtype
        return x.astype(dtype) if precomputed is None else precomputed

    def backward(self, grad: Any) -> tuple:
        return (grad.astype(self.dtype, copy=False),)

    def release(self) -> None:
        # Autocast's cast of a parameter is shared by every graph its region builds (the
        # cast cache), and saves only a dtype: it stays walkable for each of their
        # backwards, as PyTorch's does.
        if not self.for_autocast:
            super().release()


_FLOAT16, _FLOAT32 = np.dtype(np.float16), np.dtype(np.float32)


def float32_grad_wanted(parent: Any, dtype: Any) -> bool:
    """Whether the gradient of a ``dtype`` input whose graph node is ``parent`` had best be
    sent as float32: the input is autocast's float16 cast of a float32 tensor (a parameter),
    whose gradient the cast would turn into float32 anyway. A product can then accumulate
    and write it in float32 (one launch, and no rounding to float16 on the way)."""
    return (
        dtype == _FLOAT16
        and type(parent) is Cast
        and parent.for_autocast
        and parent.__dict__.get("dtype") == _FLOAT32
    )


class ToDevice(Op):
    def forward(self, x: Any, device: Device) -> Any:
        self.source = device_of(x)
        return to_device(x, device)

    def backward(self, grad: Any) -> tuple:
        return (to_device(grad, self.source),)


def clone(input: Tensor) -> Tensor:
    """A copy with its own memory; gradient flows back to ``input``."""
    return Clone.apply(input)


def cast(input: Tensor, dtype: Any) -> Tensor:
    """``input`` converted to ``dtype`` (a copy); differentiable between float dtypes."""
    if input._array.dtype == dtype:
        return input
    if dtype.kind != "f":
        return wrap(input._array.astype(dtype))  # integers carry no gradient
    return Cast.apply(input, dtype=dtype)


def move(input: Tensor, device: Device) -> Tensor:
    """``input`` on ``device``; the same tensor when it is already there."""
    if device_of(input._array) == device:
        return input
    return ToDevice.apply(input, device=device)
