"""Comparisons and logical ops. Their results are bool tensors and carry no gradient."""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module


def _array(value: Any) -> Any:
    return value._array if isinstance(value, Tensor) else value


def _elementwise(ufunc_name: str, *operands: Any) -> Tensor:
    arrays = [_array(v) for v in operands]
    xp = get_array_module(*arrays)
    try:
        result = getattr(xp, ufunc_name)(*arrays)
    except ValueError as exc:
        shapes = " and ".join(str(getattr(a, "shape", ())) for a in arrays)
        raise ValueError(f"{ufunc_name}: shapes {shapes} do not broadcast ({exc})") from None
    return wrap(result if isinstance(result, xp.ndarray) else np.asarray(result))


def eq(input: Any, other: Any) -> Tensor:
    """Elementwise ``==``."""
    return _elementwise("equal", input, other)


def ne(input: Any, other: Any) -> Tensor:
    """Elementwise ``!=``."""
    return _elementwise("not_equal", input, other)


def lt(input: Any, other: Any) -> Tensor:
    """Elementwise ``<``."""
    return _elementwise("less", input, other)


def le(input: Any, other: Any) -> Tensor:
    """Elementwise ``<=``."""
    return _elementwise("less_equal", input, other)


def gt(input: Any, other: Any) -> Tensor:
    """Elementwise ``>``."""
    return _elementwise("greater", input, other)


def ge(input: Any, other: Any) -> Tensor:
    """Elementwise ``>=``."""
    return _elementwise("greater_equal", input, other)


def logical_and(input: Any, other: Any) -> Tensor:
    """Elementwise logical and (any nonzero value is true)."""
    return _elementwise("logical_and", input, other)


def logical_or(input: Any, other: Any) -> Tensor:
    """Elementwise logical or."""
    return _elementwise("logical_or", input, other)


def logical_xor(input: Any, other: Any) -> Tensor:
    """Elementwise logical exclusive or."""
    return _elementwise("logical_xor", input, other)


def logical_not(input: Any) -> Tensor:
    """Elementwise logical not."""
    return _elementwise("logical_not", input)


def bitwise(name: str, *operands: Any) -> Tensor:
    """``& | ^ ~`` on bool or integer tensors."""
    for value in operands:
        array = _array(value)
        if getattr(getattr(array, "dtype", None), "kind", "i") not in "biu":
            raise TypeError(
                f"{name} needs bool or integer tensors, got dtype {array.dtype}; compare first "
                "(x > 0) or use logical_and / logical_or"
            )
    return _elementwise(name, *operands)


def isnan(input: Tensor) -> Tensor:
    """Elementwise test for NaN."""
    return _elementwise("isnan", input)


def isinf(input: Tensor) -> Tensor:
    """Elementwise test for ±infinity."""
    return _elementwise("isinf", input)


def isfinite(input: Tensor) -> Tensor:
    """Elementwise test for a finite value."""
    return _elementwise("isfinite", input)


def allclose(input: Tensor, other: Tensor, rtol: float = 1e-5, atol: float = 1e-8) -> bool:
    """True when every element is within ``atol + rtol * |other|``."""
    a, b = _array(input), _array(other)
    return bool(get_array_module(a, b).allclose(a, b, rtol=rtol, atol=atol))


def equal(input: Tensor, other: Tensor) -> bool:
    """True when both have the same shape and elements."""
    a, b = _array(input), _array(other)
    return a.shape == b.shape and bool((a == b).all())
