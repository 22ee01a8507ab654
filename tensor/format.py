"""A tensor's repr, laid out as PyTorch prints it, and ``set_printoptions``."""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

from dtrain._tensor.tensor import Tensor
from dtrain.runtime.device import as_numpy, device_of
from dtrain.runtime.dtypes import DEFAULT_FLOAT, DEFAULT_INT, bool_, name

_IMPLIED_DTYPES = (DEFAULT_FLOAT, DEFAULT_INT, bool_)
_PROFILES = {
    "default": {"precision": 4, "threshold": 1000, "edgeitems": 3, "linewidth": 80},
    "short": {"precision": 2, "threshold": 1000, "edgeitems": 2, "linewidth": 80},
    "full": {"precision": 4, "threshold": math.inf, "edgeitems": 3, "linewidth": 80},
}
_options: dict[str, Any] = {**_PROFILES["default"], "sci_mode": None}


def set_printoptions(
    precision: int | None = None,
    threshold: float | None = None,
    edgeitems: int | None = None,
    linewidth: int | None = None,
    profile: str | None = None,
    sci_mode: bool | None = None,
) -> None:
    """Set how tensors print, as ``torch.set_printoptions``: ``precision`` (digits after the
    point, 4), ``threshold`` (elements before the middle is summarised, 1000), ``edgeitems``
    (kept at each end, 3), ``linewidth`` (80), ``profile`` ('default', 'short', 'full'
    reset the first four) and ``sci_mode`` (True / False force scientific notation on or
    off; None, the default, chooses). Options left out keep their value, except
    ``sci_mode``, which every call sets (as in PyTorch)."""
    if profile is not None:
        if profile not in _PROFILES:
            raise ValueError(
                f"set_printoptions: unknown profile {profile!r}; use one of {sorted(_PROFILES)}"
            )
        _options.update(_PROFILES[profile])
    given = {"precision": precision, "threshold": threshold, "edgeitems": edgeitems}
    given["linewidth"] = linewidth
    _options.update({key: value for key, value in given.items() if value is not None})
    _options["sci_mode"] = sci_mode


def get_printoptions() -> dict[str, Any]:
    """The current print options (a copy)."""
    return dict(_options)


def _padded(finite: np.ndarray, kind: str, precision: int) -> dict:
    """A numpy formatter writing each float as ``{:.{precision}{kind}}``, right-aligned to
    the widest value's width, as PyTorch lines up its columns."""
    extremes = [finite.max(), finite.min()]
    nonzero = finite[finite != 0]
    if nonzero.size:  # the smallest magnitude may have the widest exponent (e-100)
        extremes.append(nonzero[np.argmin(np.abs(nonzero))])
    width = max(len(f"{float(v):.{precision}{kind}}") for v in extremes)
    return {"float_kind": lambda v: f"{float(v):.{precision}{kind}}".rjust(width)}


def format_tensor(t: Tensor) -> str:
    """``tensor([[1., 2.], [3., 4.]], requires_grad=True)`` and the like."""
    array = as_numpy(t._array)
    threshold = _options["threshold"]
    options: dict[str, Any] = {
        "separator": ", ",
        "prefix": "tensor(",
        "threshold": sys.maxsize if threshold == math.inf else int(threshold),
        "edgeitems": _options["edgeitems"],
        "max_line_width": _options["linewidth"],
    }
    precision, sci_mode = _options["precision"], _options["sci_mode"]
    if array.dtype.kind == "f" and array.size:
        finite = array[np.isfinite(array)]
        fractional = finite.size and not np.all(finite == np.round(finite))
        large = finite.size and (
            np.abs(finite).max() >= 1e8 or np.abs(finite[finite != 0]).min(initial=1) < 1e-4
        )
        if sci_mode or fractional or large:
            scientific = sci_mode if sci_mode is not None else large
            if scientific:
                options["formatter"] = _padded(finite, "e", precision)
            elif sci_mode is False and large:
                options["formatter"] = _padded(finite, "f", precision)
            else:
                options.update(precision=precision, floatmode="fixed")
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
