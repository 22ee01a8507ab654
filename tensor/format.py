"""A tensor's repr, laid out as PyTorch prints it."""

from __future__ import annotations

import numpy as np

from dtrain._tensor.tensor import Tensor
from dtrain.runtime.device import as_numpy, device_of
from dtrain.runtime.dtypes import DEFAULT_FLOAT, DEFAULT_INT, bool_, name

_IMPLIED_DTYPES = (DEFAULT_FLOAT, DEFAULT_INT, bool_)


def format_tensor(t: Tensor) -> str:
    """``tensor([[1., 2.], [3., 4.]], requires_grad=True)`` and the like."""
    array = as_numpy(t._array)
    options = {"separator": ", ", "prefix": "tensor(", "threshold": 1000, "edgeitems": 3}
    if array.dtype.kind == "f" and array.size:
        finite = array[np.isfinite(array)]
        if finite.size and not np.all(finite == np.round(finite)):
            large = np.abs(finite).max() >= 1e8 or np.abs(finite[finite != 0]).min(initial=1) < 1e-4
            options.update(precision=4, floatmode="fixed" if not large else "maxprec")
            if large:
                options["formatter"] = {"float_kind": lambda v: f"{v:.4e}"}
    body = np.array2string(array, **options)
    extras = []
    device = device_of(t._array)
    if device.type != "cpu":
        extras.append(f"device='{device}'")
    if array.dtype not in _IMPLIED_DTYPES or (array.size == 0 and array.dtype != DEFAULT_FLOAT):
        extras.append(f"dtype={name(array.dtype)}")
    if t.grad_fn is not None:
        extras.append(f"grad_fn=<{t.grad_fn.name()}>")
    elif t._requires_grad:
        extras.append("requires_grad=True")
    return "tensor(" + body + "".join(", " + e for e in extras) + ")"
