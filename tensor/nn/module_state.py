"""How ``Module.load_state_dict`` loads one entry: what a value may be, the shapes that
match, and ``assign=True``'s replacement of the tensor itself."""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain._tensor.parameter import Parameter, is_lazy
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.backend import is_cuda_array
from dtrain.runtime.device import to_device


class SizeMismatchError(RuntimeError):
    """A state entry whose shape is not the module's; ``detail`` says so without the key
    (``Module.load_state_dict`` collects these and loads the other entries, as PyTorch)."""

    def __init__(self, where: str, detail: str) -> None:
        super().__init__(f"{where}: {detail}")
        self.detail = detail


def load_entry(
    module: Any, name: str, target: Tensor, value: Any, where: str, assign: bool
) -> None:
    """Load one state entry into ``module``'s ``name`` (currently ``target``)."""
    if is_lazy(target):  # a lazy module takes its shapes from the state it is given
        if is_lazy(value) or (isinstance(value, Tensor) and tuple(value.shape) == (0,)):
            # A placeholder over a placeholder (dt.save wrote it as an empty tensor):
            # nothing to load, as PyTorch; the first forward still decides the shape.
            return
        target.materialize(tuple(value.shape))
    if isinstance(value, Tensor):
        source = value._array
    elif isinstance(value, (np.ndarray, np.generic)) or is_cuda_array(value):
        source = np.asarray(value) if isinstance(value, np.generic) else value
    else:
        raise TypeError(
            f"{where} holds a {type(value).__name__}; expected a Tensor or an array "
            "(convert it with dt.tensor)"
        )
    if target.shape == () and source.shape == (1,):
        source = source.reshape(())  # as PyTorch: old checkpoints saved 0-d buffers as (1,)
    uninitialised = isinstance(target, Parameter) and target.shape == (0,)
    if source.shape != target.shape and not (uninitialised and source.shape != (0,)):
        raise SizeMismatchError(
            where,
            f"size mismatch: the checkpoint has shape {tuple(source.shape)}, the module has "
            f"{target.shape}",
        )
    if assign:
        tensor = value if isinstance(value, Tensor) and value._array is source else Tensor(source)
        if isinstance(target, Parameter):
            if isinstance(tensor, Parameter):
                tensor.requires_grad_(target.requires_grad)
            else:
                tensor = Parameter(tensor, requires_grad=target.requires_grad)
            module._parameters[name] = tensor
        else:
            module._buffers[name] = tensor
    elif uninitialised:  # an empty nn.Parameter() takes the loaded shape
        target._array = to_device(source, target.device).astype(target.dtype, copy=True)
    else:
        target.copy_(Tensor(source))
