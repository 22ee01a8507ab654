"""The strong-Wolfe line search of ``LBFGS`` (PyTorch's ``_strong_wolfe`` and
``_cubic_interpolate``, after minFunc / torch7's ``lswolfe.lua``).

Everything works on flat 1-D arrays (numpy or cupy). Step sizes, losses and directional
derivatives are Python numbers or 0-d arrays in the parameters' dtype, as PyTorch mixes
floats and 0-d tensors, so float32 problems round as PyTorch's do. Comparing a 0-d cupy
array reads it from the device, where PyTorch reads a tensor with ``.item()``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from dtrain.runtime.backend import get_array_module

#: ``obj_func(x, t, d)``: the loss (a float) and flat gradient at ``x + t * d``.
ObjFunc = Callable[[Any, Any, Any], tuple[float, Any]]


def _sqrt(value: Any) -> Any:
    if isinstance(value, (int, float)):
        return math.sqrt(value)
    return get_array_module(value).sqrt(value)


def cubic_interpolate(
    x1: Any, f1: Any, g1: Any, x2: Any, f2: Any, g2: Any, bounds: tuple[Any, Any] | None = None
) -> Any:
    """The minimiser of the cubic through ``(x1, f1)`` and ``(x2, f2)`` with slopes ``g1``,
    ``g2``, clamped to ``bounds`` (default: between the two points); their midpoint when the
    cubic has no minimum."""
    if bounds is not None:
        lo, hi = bounds
    else:
        lo, hi = (x1, x2) if x1 <= x2 else (x2, x1)
    with np.errstate(all="ignore"):  # an overflowing loss gives NaN silently, as in PyTorch
        d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
        d2_square = d1**2 - g1 * g2
        if not d2_square >= 0:
            return (lo + hi) / 2.0
        d2 = _sqrt(d2_square)
        if x1 <= x2:
            min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
    return min(max(min_pos, lo), hi)


def strong_wolfe(
    obj_func: ObjFunc,
    x: Any,
    t: Any,
    d: Any,
    f: float,
    g: Any,
    gtd: Any,
    c1: float = 1e-4,
    c2: float = 0.9,
    tolerance_change: float = 1e-9,
    max_ls: int = 25,
) -> tuple[float, Any, Any, int]:
    """Find a step ``t`` along ``d`` from ``x`` that satisfies the strong Wolfe conditions.

    Args:
        obj_func: evaluates the loss and flat gradient at ``x + t * d``.
        x: what ``obj_func`` restores the parameters to (passed through).
        t: the first step to try.
        d: the search direction (flat).
        f, g, gtd: the loss, flat gradient and ``g . d`` at ``t = 0``.
        c1, c2: the sufficient-decrease and curvature constants.
        tolerance_change: stop zooming once the bracket moves the parameters less than this.
        max_ls: the most evaluations of ``obj_func``.

    Returns:
        ``(loss, flat_grad, t, evaluations)`` at the step found.
    """
    xp = get_array_module(d)
    d_norm = xp.abs(d).max()
    f_new, g_new = obj_func(x, t, d)
    evals = 1
    gtd_new = xp.dot(g_new, d)

    # Bracket an interval that holds a point satisfying the conditions (or find one).
    t_prev, f_prev, g_prev, gtd_prev = 0, f, g, gtd
    done = False
    ls_iter = 0
    while ls_iter < max_ls:
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new], [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new], [gtd_prev, gtd_new]
            break
        # Extrapolate: a cubic step at least 1% beyond t and at most 10 t.
        min_step = t + 0.01 * (t - t_prev)
        max_step = t * 10
        t_prev, t = (
            t,
            cubic_interpolate(
                t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(min_step, max_step)
            ),
        )
        f_prev, g_prev, gtd_prev = f_new, g_new, gtd_new
        f_new, g_new = obj_func(x, t, d)
        evals += 1
        gtd_new = xp.dot(g_new, d)
        ls_iter += 1

    if ls_iter == max_ls:  # out of evaluations: the bracket is [0, last t]
        bracket, bracket_f, bracket_g = [0, t], [f, f_new], [g, g_new]

    # Zoom: shrink the bracket until a point in it satisfies the conditions.
    insufficient_progress = False
    low, high = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = cubic_interpolate(
            bracket[0], bracket_f[0], bracket_gtd[0], bracket[1], bracket_f[1], bracket_gtd[1]
        )
        # A trial too close to an end of the bracket makes little progress: after two such
        # in a row (or one outside the bracket) move it 10% of the bracket inside.
        b_max, b_min = max(bracket), min(bracket)
        eps = 0.1 * (b_max - b_min)
        if min(b_max - t, t - b_min) < eps:
            if insufficient_progress or t >= b_max or t <= b_min:
                t = b_max - eps if abs(t - b_max) < abs(t - b_min) else b_min + eps
                insufficient_progress = False
            else:
                insufficient_progress = True
        else:
            insufficient_progress = False

        f_new, g_new = obj_func(x, t, d)
        evals += 1
        gtd_new = xp.dot(g_new, d)
        ls_iter += 1

        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low]:
            # No sufficient decrease, or not below the low end: t is the new high end.
            bracket[high], bracket_f[high] = t, f_new
            bracket_g[high], bracket_gtd[high] = g_new, gtd_new
            low, high = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high] - bracket[low]) >= 0:
                # The old low end becomes the high end.
                bracket[high], bracket_f[high] = bracket[low], bracket_f[low]
                bracket_g[high], bracket_gtd[high] = bracket_g[low], bracket_gtd[low]
            bracket[low], bracket_f[low] = t, f_new
            bracket_g[low], bracket_gtd[low] = g_new, gtd_new

    return bracket_f[low], bracket_g[low], bracket[low], evals


__all__ = ["cubic_interpolate", "strong_wolfe"]
