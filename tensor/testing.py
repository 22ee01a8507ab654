"""``dtrain.testing.assert_close``: PyTorch's comparison of tensors, numbers and nests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dtrain._tensor.tensor import Tensor
from dtrain.runtime.device import as_numpy

# (rtol, atol) by dtype, as torch.testing: float16 1e-3/1e-5, float32 1.3e-6/1e-5,
# float64 1e-7/1e-7; integers and bool compare exactly.
_TOLERANCES = {
    np.dtype(np.float16): (1e-3, 1e-5),
    np.dtype(np.float32): (1.3e-6, 1e-5),
    np.dtype(np.float64): (1e-7, 1e-7),
}
_NUMBERS = (bool, int, float, np.generic)


def assert_close(
    actual: Any,
    expected: Any,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    equal_nan: bool = False,
    check_device: bool = True,
    check_dtype: bool = True,
    msg: str | None = None,
) -> None:
    """Assert ``|actual - expected| <= atol + rtol * |expected|`` elementwise, as
    ``torch.testing.assert_close``: tensors (same shape, and by default the same dtype and
    device), Python numbers (compared as float64), and lists, tuples and dicts of them.
    Without ``rtol``/``atol`` (give both or neither), the looser dtype's defaults apply.

    Raises:
        AssertionError: naming the mismatched elements, the greatest differences and where.
        TypeError: a tensor compared with a list or another unsupported pair.
    """
    if (rtol is None) != (atol is None):
        missing = "atol" if atol is None else "rtol"
        raise ValueError(
            f"Both 'rtol' and 'atol' must be either specified or omitted, but got no {missing}."
        )
    _compare(actual, expected, rtol, atol, equal_nan, check_device, check_dtype, msg, "")


def _compare(actual, expected, rtol, atol, equal_nan, check_device, check_dtype, msg, where):
    args = (rtol, atol, equal_nan, check_device, check_dtype, msg)
    if isinstance(actual, Mapping) and isinstance(expected, Mapping):
        if set(actual) != set(expected):
            raise AssertionError(
                f"The keys of the mappings{where} do not match: {sorted(map(str, actual))} "
                f"!= {sorted(map(str, expected))}."
            )
        for key in actual:
            _compare(actual[key], expected[key], *args, f"{where}[{key!r}]")
        return
    sequence = (Sequence,)
    if (
        isinstance(actual, sequence)
        and isinstance(expected, sequence)
        and not isinstance(actual, str)
        and not isinstance(expected, str)
    ):
        if len(actual) != len(expected):
            raise AssertionError(
                f"The length of the sequences{where} do not match: {len(actual)} != "
                f"{len(expected)}."
            )
        for i, (a, e) in enumerate(zip(actual, expected)):
            _compare(a, e, *args, f"{where}[{i}]")
        return
    if isinstance(actual, Tensor) and isinstance(expected, Tensor):
        _tensors(actual, expected, *args, where)
    elif isinstance(actual, _NUMBERS) and isinstance(expected, _NUMBERS):
        _numbers(actual, expected, *args, where)
    else:
        raise TypeError(
            f"assert_close{where}: cannot compare {type(actual).__name__} with "
            f"{type(expected).__name__}; pass two tensors, two numbers, or nests of them"
        )


def _attribute(name: str, a: Any, e: Any, where: str, msg: str | None) -> None:
    if a != e:
        raise AssertionError(
            msg or f"The values for attribute '{name}'{where} do not match: {a} != {e}."
        )


def _tensors(actual, expected, rtol, atol, equal_nan, check_device, check_dtype, msg, where):
    _attribute("shape", tuple(actual.shape), tuple(expected.shape), where, msg)
    if check_device:
        _attribute("device", actual.device, expected.device, where, msg)
    if check_dtype:
        _attribute("dtype", actual.dtype, expected.dtype, where, msg)
    a = as_numpy(actual.detach()._array)
    e = as_numpy(expected.detach()._array)
    _values(a, e, rtol, atol, equal_nan, msg, "Tensor-likes", where)


def _numbers(actual, expected, rtol, atol, equal_nan, check_device, check_dtype, msg, where):
    if (
        check_dtype
        and type(actual) is not type(expected)
        and not (isinstance(actual, np.generic) or isinstance(expected, np.generic))
    ):
        _attribute("type", type(actual), type(expected), where, msg)
    a, e = np.asarray(actual), np.asarray(expected)
    if rtol is None and a.dtype.kind == "f":
        rtol, atol = _TOLERANCES[np.dtype(np.float64)]
    _values(a, e, rtol, atol, equal_nan, msg, "Scalars", where)


def _values(a, e, rtol, atol, equal_nan, msg, what, where) -> None:
    if rtol is None:
        defaults = [_TOLERANCES.get(d, (0.0, 0.0)) for d in (a.dtype, e.dtype)]
        rtol, atol = (max(pair) for pair in zip(*defaults))
    exact = rtol == 0 and atol == 0
    # Differences in the inputs' float dtype (float32 at least), as PyTorch reports them.
    common = np.result_type(a.dtype, e.dtype) if "f" in (a.dtype.kind, e.dtype.kind) else None
    work = np.promote_types(common, np.float32) if common is not None else np.float32
    a64, e64 = a.astype(work), e.astype(work)
    with np.errstate(invalid="ignore", divide="ignore"):
        difference = np.abs(a64 - e64)
        ok = difference <= atol + rtol * np.abs(e64)
        ok |= a64 == e64  # equal infinities
        if equal_nan:
            ok |= np.isnan(a64) & np.isnan(e64)
        if ok.all():
            return
        relative = difference / np.abs(e64)
    if msg is not None:
        raise AssertionError(msg)
    verdict = "equal" if exact else "close"
    if a.ndim == 0:
        lines = [
            f"{what} are not {verdict}{where}!",
            "",
            f"Expected {e.item()} but got {a.item()}.",
            f"Absolute difference: {difference.item()} (up to {atol} allowed)",
            f"Relative difference: {relative.item()} (up to {rtol} allowed)",
        ]
        raise AssertionError("\n".join(lines))
    bad = ~ok
    worst_abs = _worst(difference, bad)
    worst_rel = _worst(relative, bad)
    allowed_abs = "" if exact else f" (up to {atol} allowed)"
    allowed_rel = "" if exact else f" (up to {rtol} allowed)"
    lines = [
        f"{what} are not {verdict}{where}!",
        "",
        f"Mismatched elements: {int(bad.sum())} / {a.size} ({100 * bad.sum() / a.size:.1f}%)",
        f"Greatest absolute difference: {_number(difference[worst_abs], common)} at index "
        f"{tuple(int(i) for i in worst_abs)}{allowed_abs}",
        f"Greatest relative difference: {float(relative[worst_rel])} at index "
        f"{tuple(int(i) for i in worst_rel)}{allowed_rel}",
    ]
    raise AssertionError("\n".join(lines))


def _worst(values: np.ndarray, bad: np.ndarray) -> tuple:
    """The index of the largest of ``values`` among the mismatched elements (NaN first)."""
    ranked = np.where(bad, np.nan_to_num(values, nan=np.inf), -1.0)
    return np.unravel_index(np.argmax(ranked), values.shape)


def _number(value: Any, float_dtype: Any) -> Any:
    """An integer comparison's difference as an int (``3``), a float one's as a float."""
    return int(value) if float_dtype is None and float(value).is_integer() else float(value)


__all__ = ["assert_close"]
