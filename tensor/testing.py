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
    device), Python numbers (floats compared as float64), and lists, tuples and dicts of them.
    Integers and bools compare exactly; the tolerance applies only where both values are
    finite, so ``inf`` matches only the same ``inf``.
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
    if actual is None and expected is None:
        return  # as torch: two Nones are equal
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
        item = f"\n\nThe failure occurred for item {where}" if where else ""
        raise AssertionError(
            msg or f"The values for attribute '{name}' do not match: {a} != {e}.{item}"
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
    floats = {a.dtype.kind, e.dtype.kind} & {"f", "c"}
    if floats:
        # Differences in the inputs' float dtype (float32 at least), as PyTorch reports them.
        common = np.result_type(a.dtype, e.dtype)
        work = np.promote_types(common, np.float32)
    else:
        # Integers and bools compare exactly: float32 (or even float64) would round 2**24 + 1
        # to 2**24. Python ints beyond int64 arrive as object arrays and stay Python ints.
        common = None
        big = "O" in (a.dtype.kind, e.dtype.kind) or np.uint64 in (a.dtype, e.dtype)
        work = object if big else np.int64
    aw, ew = a.astype(work), e.astype(work)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        difference = np.asarray(np.abs(aw - ew))
        ok = np.asarray(aw == ew, dtype=bool)  # equal values, infinities included
        within = np.asarray(difference <= atol + rtol * np.abs(ew), dtype=bool)
        if floats:
            # As torch.isclose: the tolerance applies only where both values are finite, so
            # an expected inf is matched by the same inf alone.
            within &= np.isfinite(aw) & np.isfinite(ew)
        ok |= within
        if equal_nan and floats:
            ok |= np.isnan(aw) & np.isnan(ew)
        if ok.all():
            return
        if floats:  # in the float dtype, as PyTorch reports it
            relative = difference / np.abs(ew)
        else:  # PyTorch divides integer tensors in float32, integer scalars as Python floats
            ratio = np.float32 if a.ndim else np.float64
            relative = difference.astype(ratio) / np.abs(ew.astype(ratio))
    if msg is not None:
        raise AssertionError(msg)
    verdict = "equal" if exact else "close"
    allowed_abs = "" if exact else f" (up to {atol} allowed)"
    allowed_rel = "" if exact else f" (up to {rtol} allowed)"
    if a.ndim == 0:
        lines = [
            f"Scalars are not {verdict}!",
            "",
            f"Expected {e.item()} but got {a.item()}.",
            f"Absolute difference: {_number(difference.item(), common)}{allowed_abs}",
            f"Relative difference: {relative.item()}{allowed_rel}",
        ]
    else:
        bad = ~ok
        worst_abs = _worst(difference.astype(np.float64), bad)
        worst_rel = _worst(relative, bad)
        lines = [
            f"{what} are not {verdict}!",
            "",
            f"Mismatched elements: {int(bad.sum())} / {a.size} ({100 * bad.sum() / a.size:.1f}%)",
            f"Greatest absolute difference: {_number(difference[worst_abs], common)} at index "
            f"{tuple(int(i) for i in worst_abs)}{allowed_abs}",
            f"Greatest relative difference: {float(relative[worst_rel])} at index "
            f"{tuple(int(i) for i in worst_rel)}{allowed_rel}",
        ]
    if where:
        lines += ["", f"The failure occurred for item {where}"]
    raise AssertionError("\n".join(lines))


def _worst(values: np.ndarray, bad: np.ndarray) -> tuple:
    """The index of the largest of ``values`` among the mismatched elements (NaN first)."""
    ranked = np.where(bad, np.nan_to_num(values, nan=np.inf), -1.0)
    return np.unravel_index(np.argmax(ranked), values.shape)


def _number(value: Any, float_dtype: Any) -> Any:
    """An integer comparison's difference as an int (``3``), a float one's as a float."""
    return int(value) if float_dtype is None else float(value)


__all__ = ["assert_close"]
