"""``pad``: constant, reflect, replicate or circular padding of the trailing dims."""

from __future__ import annotations

import math
from typing import Any

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.ops._util import add_at
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.backend import get_array_module

_NUMPY_MODES = {
    "constant": "constant",
    "reflect": "reflect",
    "replicate": "edge",
    "circular": "wrap",
}


class Pad(Op):
    def forward(self, x: Any, widths: tuple, mode: str, value: float) -> Any:
        xp = get_array_module(x)
        self.widths, self.mode, self.shape = widths, mode, x.shape
        if mode == "constant":
            return xp.pad(x, widths, mode="constant", constant_values=value)
        return xp.pad(x, widths, mode=_NUMPY_MODES[mode])

    def backward(self, grad: Any) -> tuple:
        if self.mode == "constant":
            index = tuple(
                slice(before, before + size) for (before, _), size in zip(self.widths, self.shape)
            )
            return (grad[index],)
        # Other modes copy border values: fold the padded gradient back onto its source.
        xp = get_array_module(grad)
        positions = xp.arange(math.prod(self.shape)).reshape(self.shape)
        source = xp.pad(positions, self.widths, mode=_NUMPY_MODES[self.mode])
        flat = xp.zeros(positions.size, dtype=grad.dtype)
        add_at(flat, source.reshape(-1), grad.reshape(-1), f"pad(mode={self.mode!r}) backward")
        return (flat.reshape(self.shape),)


def pad(input: Tensor, pad: Any, mode: str = "constant", value: float = 0.0) -> Tensor:
    """Pad the last ``len(pad) // 2`` dims: ``pad = (left, right, top, bottom, ...)``,
    last dim first, as PyTorch orders it. Circular padding may be negative (a crop), as in
    PyTorch; the other modes take no negative padding here."""
    pad = tuple(int(p) for p in pad)
    if len(pad) % 2 or len(pad) // 2 > input.ndim:
        raise ValueError(
            f"pad: {pad} must hold (before, after) pairs for at most {input.ndim} dims"
        )
    if any(p < 0 for p in pad) and mode != "circular":
        raise ValueError(f"pad: negative padding {pad} is not supported; slice the tensor instead")
    if mode not in _NUMPY_MODES:
        raise ValueError(f"pad: mode {mode!r} is not one of {sorted(_NUMPY_MODES)}")
    widths = [(0, 0)] * input.ndim
    crop = [slice(None)] * input.ndim
    for i in range(len(pad) // 2):
        dim = input.ndim - 1 - i
        before, after = pad[2 * i : 2 * i + 2]
        size = input.shape[dim]
        if mode == "reflect" and max(before, after) >= size:
            raise ValueError(
                f"pad: reflect padding {(before, after)} of dim {dim} "
                f"must be smaller than its size {size}, as in PyTorch"
            )
        if mode == "circular":
            kept = size - max(-before, 0) - max(-after, 0)
            if max(before, after) > kept or kept < 0:
                raise RuntimeError(  # as PyTorch
                    f"pad: circular padding {(before, after)} of dim {dim} (size {size}) "
                    "causes wrapping around more than once; pad at most the dim's size"
                )
            crop[dim] = slice(max(-before, 0), size - max(-after, 0))
            before, after = max(before, 0), max(after, 0)
        widths[dim] = (before, after)
    if mode == "circular" and any(p < 0 for p in pad):
        input = input[tuple(crop)]  # negative circular padding crops first, as PyTorch
    return Pad.apply(input, widths=tuple(widths), mode=mode, value=value)
