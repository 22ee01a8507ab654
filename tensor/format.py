"""A tensor's repr, laid out as PyTorch prints it, and ``set_printoptions``."""

from __future__ import annotations

import math
from collections.abc import Callable
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


def _summarised(array: np.ndarray, edgeitems: int) -> np.ndarray:
    """The elements a summarised print shows: ``edgeitems`` at each end of every dim."""
    for axis, size in enumerate(array.shape):
        if size > 2 * edgeitems:
            ends = np.r_[0:edgeitems, size - edgeitems : size]
            array = np.take(array, ends, axis=axis)
    return array


def _float_formatter(
    array: np.ndarray, precision: int, sci_mode: bool | None
) -> tuple[Callable[[Any], str], int]:
    """Write floats as PyTorch's ``_Formatter`` does: the mode (scientific, whole numbers as
    ``2.``, or fixed) and the column width come from the nonzero finite values alone (of
    the shown ones, when summarised), so ``nan``/``inf``/``0.`` do not widen the columns.
    Returns the writer and the width."""
    flat = array.reshape(-1)
    values = flat[np.isfinite(flat) & (flat != 0)].astype(np.float64)  # float16 overflows
    integral, scientific, width = True, False, 1
    if values.size:
        magnitude = np.abs(values)
        low, high = magnitude.min(), magnitude.max()
        integral = bool(np.all(values == np.ceil(values)))
        scientific = (
            bool(high / low > 1000.0 or high > 1.0e8 or low < 1.0e-4)
            if sci_mode is None
            else sci_mode
        )
        # The widest string is at an extreme: the largest and smallest value, and (for the
        # exponent's digits) the values nearest zero on either side.
        positive, negative = values[values > 0], values[values < 0]
        extremes = [values.max(), values.min()]
        extremes += [positive.min()] if positive.size else []
        extremes += [negative.max()] if negative.size else []
        if scientific:
            width = max(len(f"{v:.{precision}e}") for v in extremes)
        elif integral:
            width = max(len(f"{v:.0f}") + 1 for v in extremes)
        else:
            width = max(len(f"{v:.{precision}f}") for v in extremes)

    def write(value: Any) -> str:
        value = float(value)
        if scientific:
            text = f"{value:.{precision}e}"
        elif integral:
            text = f"{value:.0f}" + ("" if math.isinf(value) or math.isnan(value) else ".")
        else:
            text = f"{value:.{precision}f}"
        return text.rjust(width)

    return write, width


def _plain_formatter(array: np.ndarray) -> tuple[Callable[[Any], str], int]:
    """Integers and bools as PyTorch writes them: ``str`` of each, right-aligned to the
    widest (so ``[ True, False]``)."""
    width = max((len(str(v)) for v in array.reshape(-1).tolist()), default=1)
    return (lambda value: str(value).rjust(width)), width


def _layout(
    array: np.ndarray, indent: int, summarise: bool, write: Callable[[Any], str], width: int
) -> str:
    """PyTorch's ``_tensor_str_with_formatter``: a fixed number of elements per line (from
    the column width), ``...`` for the middle of a summarised dim, one blank line more
    between slices for each dim above the second."""
    edgeitems = _options["edgeitems"]
    if array.ndim == 0:
        return write(array.item())
    cut = summarise and array.shape[0] > 2 * edgeitems
    if array.ndim == 1:
        per_line = max(1, (_options["linewidth"] - indent) // (width + 2))
        if summarise and not edgeitems:
            data = ["..."]
        elif cut:
            head, tail = array[:edgeitems].tolist(), array[-edgeitems:].tolist()
            data = [write(v) for v in head] + [" ..."] + [write(v) for v in tail]
        else:
            data = [write(v) for v in array.tolist()]
        lines = [", ".join(data[i : i + per_line]) for i in range(0, len(data), per_line)]
        return "[" + (",\n" + " " * (indent + 1)).join(lines) + "]"
    rows = list(range(edgeitems)) + [None] + list(range(len(array) - edgeitems, len(array)))
    slices = [
        "..." if i is None else _layout(array[i], indent + 1, summarise, write, width)
        for i in (rows if cut else range(len(array)))
    ]
    return "[" + ("," + "\n" * (array.ndim - 1) + " " * (indent + 1)).join(slices) + "]"


def format_tensor(t: Tensor) -> str:
    """``tensor([[1., 2.], [3., 4.]], requires_grad=True)`` and the like, laid out as
    PyTorch's ``_tensor_str``."""
    array = as_numpy(t._array)
    prefix = "tensor("
    extras = []
    device = device_of(t._array)
    if device.type != "cpu":
        extras.append(f"device='{device}'")
    if array.size == 0:
        body = "[]"
        if array.ndim != 1:  # as PyTorch (and numpy): the shape, unless it is (0,)
            extras.append(f"size={tuple(array.shape)}")
    else:
        summarise = array.size > _options["threshold"]
        shown = _summarised(array, _options["edgeitems"]) if summarise else array
        if array.dtype.kind == "f":
            write, width = _float_formatter(shown, _options["precision"], _options["sci_mode"])
        else:
            write, width = _plain_formatter(shown)
        body = _layout(array, len(prefix), summarise, write, width)
    if array.dtype not in _IMPLIED_DTYPES or (array.size == 0 and array.dtype != DEFAULT_FLOAT):
        extras.append(f"dtype={name(array.dtype)}")
    if t.grad_fn is not None:
        extras.append(f"grad_fn=<{t.grad_fn.name()}>")
    elif t._requires_grad:
        extras.append("requires_grad=True")
    return _with_suffixes(prefix + body, extras, len(prefix))


def _with_suffixes(text: str, suffixes: list, indent: int) -> str:
    """PyTorch's ``_add_suffixes``: each suffix on the last line, or on a line of its own
    when it would pass the line width."""
    parts = [text]
    last_line = len(text) - text.rfind("\n") + 1
    for suffix in suffixes:
        if last_line + len(suffix) + 2 > _options["linewidth"]:
            parts.append(",\n" + " " * indent + suffix)
            last_line = indent + len(suffix)
        else:
            parts.append(", " + suffix)
            last_line += len(suffix) + 2
    return "".join(parts) + ")"
