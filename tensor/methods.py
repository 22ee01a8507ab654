"""The PyTorch-named methods of ``Tensor`` that compute something, one family a module.

Each method is a door to the function of the same name in ``dtrain._tensor.functions``,
where its docstring lives. ``Tensor`` inherits them from ``TensorMethods``, which gathers
the families below; the functions module is bound by ``tensor.py`` once every op module has
loaded (they import ``Tensor``, so these modules cannot import them first).
"""

from __future__ import annotations

from typing import Any

from dtrain._tensor import (
    methods_compare,
    methods_convert,
    methods_inplace,
    methods_linalg,
    methods_math,
    methods_pointwise,
    methods_random,
    methods_reduce,
    methods_shape,
    methods_sparse,
)

_FAMILIES = (
    methods_math,
    methods_reduce,
    methods_shape,
    methods_compare,
    methods_inplace,
    methods_random,
    methods_convert,
    methods_pointwise,
    methods_linalg,
    methods_sparse,
)


def bind(functions: Any) -> None:
    """Point the methods at ``dtrain._tensor.functions`` (called once, by tensor.py)."""
    for family in _FAMILIES:
        family._fn = functions


class TensorMethods(
    methods_math.MathMethods,
    methods_reduce.ReductionMethods,
    methods_shape.ShapeMethods,
    methods_compare.ComparisonMethods,
    methods_inplace.InplaceMethods,
    methods_random.RandomMethods,
    methods_convert.ConversionMethods,
    methods_pointwise.PointwiseMethods,
    methods_linalg.LinalgMethods,
    methods_sparse.SparseMethods,
):
    """Mixed into ``Tensor``: the PyTorch-named methods that compute something."""

    __slots__ = ()


__all__ = ["TensorMethods", "bind"]
