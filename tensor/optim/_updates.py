"""Steps shared by the xp update loops of the optimizers without a fused kernel (RMSprop,
Adagrad, Adadelta): in-place numpy/cupy ufuncs into ``Scratch`` buffers, in PyTorch's order
of operations, so float32 results stay within a few ulp of its (its kernels fuse
multiply-adds; numpy rounds after each ufunc)."""

from __future__ import annotations

from typing import Any

from dtrain._tensor.optim.optimizer import Scratch


def effective_grad(
    xp: Any, p: Any, g: Any, weight_decay: float, maximize: bool, scratch: Scratch
) -> Any:
    """``-g`` when maximizing, plus ``weight_decay * p``; ``g`` itself when neither (the
    result uses scratch slot 0 otherwise)."""
    if weight_decay != 0:
        work = scratch.get(p, 0)
        xp.multiply(p, weight_decay, out=work)
        if maximize:
            xp.subtract(work, g, out=work)
        else:
            xp.add(work, g, out=work)
        return work
    if maximize:
        return xp.negative(g, out=scratch.get(p, 0))
    return g


def decay_add_square_(xp: Any, average: Any, g: Any, decay: float, tmp: Any) -> None:
    """``average = decay * average + (1 - decay) * g * g`` in place (``tmp``: a work array)."""
    average *= decay
    xp.multiply(g, 1 - decay, out=tmp)
    tmp *= g
    average += tmp


def lerp_(xp: Any, target: Any, end: Any, weight: float, tmp: Any) -> None:
    """``target.lerp_(end, weight)`` in PyTorch's two-sided form (exact at both ends)."""
    xp.subtract(end, target, out=tmp)
    if weight < 0.5:
        tmp *= weight
        target += tmp
    else:
        tmp *= 1 - weight
        xp.subtract(end, tmp, out=target)
