"""``embedding_bag``: sums, means or maxima of bags of embedding rows, without building
the per-entry embeddings as a graph node.

Every entry of the (flattened) input gets its bag number (``searchsorted`` over the
offsets) and a weight: 1 for ``sum`` (or its ``per_sample_weights``), 1 / bag size for
``mean``, 0 for entries excluded (``padding_idx``). One scatter-add
of the weighted rows then makes the bags, and backward scatters the bag gradients back onto
the table rows the same way; ``max`` takes a scatter-max and remembers the entry that won
each bag and feature. No Python loop runs over bags, and nothing is read on the host.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.nn.functional.embedding import _scatter_rows
from dtrain._tensor.ops._util import add_at
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.backend import get_array_module, scatter_add
from dtrain.runtime.value_checks import may_check_values

MODES = ("sum", "mean", "max")


class EmbeddingBagSum(Op):
    """``out[bag[j]] += scale[j] · psw[j] · weight[index[j]]`` (``psw`` 1 when None)."""

    def forward(self, weight: Any, psw: Any, index: Any, bag: Any, scale: Any, bags: int) -> Any:
        rows = weight[index]
        factor = scale if psw is None else scale * psw.reshape(-1)
        out = get_array_module(weight).zeros((bags, weight.shape[1]), dtype=weight.dtype)
        _scatter_rows(out, bag, rows * factor[:, None])
        self.index, self.bag, self.scale, self.factor = index, bag, scale, factor
        self.rows, self.shape = rows, weight.shape
        self.psw_shape = None if psw is None else psw.shape
        return out

    def backward(self, grad: Any) -> tuple:
        need_weight, need_psw = self.needs_input_grad
        per_entry = grad[self.bag]
        grad_weight = grad_psw = None
        if need_weight:
            grad_weight = get_array_module(grad).zeros(self.shape, dtype=grad.dtype)
            _scatter_rows(grad_weight, self.index, per_entry * self.factor[:, None])
        if need_psw:
            grad_psw = ((per_entry * self.rows).sum(axis=1) * self.scale).reshape(self.psw_shape)
        return grad_weight, grad_psw


class EmbeddingBagMax(Op):
    """Per bag and feature, the largest row entry (0 for an empty bag); the gradient goes to
    the first entry that holds it."""

    def forward(self, weight: Any, index: Any, bag: Any, valid: Any, bags: int) -> Any:
        xp = get_array_module(weight)
        rows = weight[index]
        lowest = xp.asarray(-np.inf, dtype=weight.dtype)
        masked = xp.where(valid[:, None], rows, lowest)
        out = xp.full((bags, weight.shape[1]), -np.inf, dtype=weight.dtype)
        xp.maximum.at(out, bag, masked)  # NaN propagates, as PyTorch
        won = masked == out[bag]
        won |= xp.isnan(masked)
        won &= valid[:, None]
        entries = index.shape[0]
        first = xp.where(won, xp.arange(entries)[:, None], entries)
        winner = xp.full(out.shape, entries, dtype=first.dtype)
        xp.minimum.at(winner, bag, first)
        self.filled = winner < entries  # False for an empty bag
        self.source = index[xp.minimum(winner, max(entries - 1, 0))] if entries else winner
        self.shape = weight.shape
        return xp.where(self.filled, out, xp.zeros((), dtype=out.dtype))

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        full = xp.zeros(self.shape, dtype=grad.dtype)
        columns = xp.broadcast_to(xp.arange(self.shape[1]), self.source.shape)
        values = xp.where(self.filled, grad, xp.zeros((), dtype=grad.dtype))
        add_at(full, (self.source, columns), values, "embedding_bag max backward")
        return (full,)


def _bags(
    where: str, indices: Any, offsets: Tensor | None, include_last_offset: bool
) -> tuple[Any, Any, Any, int]:
    """Flat indices, each entry's bag, which entries fall in a bag, and the bag count."""
    xp = get_array_module(indices)
    if indices.ndim == 2:
        if offsets is not None:
            raise ValueError(
                f"{where}: offsets must be None for a 2-D input (each row is a bag); pass a "
                "1-D input with offsets instead"
            )
        bags, length = indices.shape
        flat = indices.reshape(-1)
        bag = xp.arange(flat.shape[0]) // max(length, 1)
        return flat, bag, xp.ones(flat.shape, dtype=bool), bags
    if indices.ndim != 1:
        raise ValueError(
            f"{where}: input must be 1-D (with offsets) or 2-D (bags of equal size), got "
            f"shape {tuple(indices.shape)}"
        )
    if not isinstance(offsets, Tensor) or offsets.ndim != 1:
        got = tuple(offsets.shape) if isinstance(offsets, Tensor) else type(offsets).__name__
        raise ValueError(f"{where}: a 1-D input needs a 1-D offsets tensor, got {got}")
    starts = offsets._array
    if starts.dtype.kind not in "iu":
        raise TypeError(f"{where}: offsets must be integers, got dtype {offsets.dtype}")
    bags = starts.shape[0] - 1 if include_last_offset else starts.shape[0]
    if bags < 0:
        raise ValueError(f"{where}: include_last_offset needs at least one offset, got none")
    if starts.size and may_check_values(starts) and int(starts[0]) != 0:
        raise ValueError(
            f"{where}: offsets[0] must be 0 (the first bag starts at the first index), got "
            f"{int(starts[0])}"
        )
    position = xp.arange(indices.shape[0])
    bag = xp.searchsorted(starts[:bags], position, side="right") - 1
    valid = bag >= 0
    return indices, xp.where(valid, bag, 0), valid, bags


def embedding_bag(
    input: Tensor,
    weight: Tensor,
    offsets: Tensor | None = None,
    max_norm: float | None = None,
    norm_type: float = 2,
    scale_grad_by_freq: bool = False,
    mode: str = "mean",
    sparse: bool = False,
    per_sample_weights: Tensor | None = None,
    include_last_offset: bool = False,
    padding_idx: int | None = None,
) -> Tensor:
    """Sum, mean or max of bags of rows of ``weight``, as PyTorch's ``embedding_bag``.

    Args:
        input: a 2-D ``(B, L)`` int tensor (``B`` bags of ``L`` indices), or a 1-D one
            whose bags start at ``offsets``.
        weight: the ``(num_embeddings, dim)`` float table.
        offsets: with 1-D input, each bag's first position (``offsets[0]`` must be 0);
            with ``include_last_offset``, one more entry, the input's length (the last bag
            runs to the end of the input whatever it says, as in PyTorch).
        mode: ``"sum"``, ``"mean"`` or ``"max"``; an empty bag gives zeros.
        per_sample_weights: the input's shape; weights for each entry (``"sum"`` only).
        include_last_offset: ``offsets`` has ``B + 1`` entries, the last one the end.
        padding_idx: entries equal to it are left out of their bag (and of the mean).

    Returns:
        ``(B, dim)``.

    Raises:
        TypeError: non-integer indices or offsets, or mismatched dtypes.
        ValueError: a bad mode or shape, ``per_sample_weights`` outside ``"sum"``, or
            ``max_norm``, ``scale_grad_by_freq`` or ``sparse`` (not supported).
        IndexError: an index outside the table (not checked on CUDA, see ``embedding``).
    """
    where = "embedding_bag"
    if not isinstance(input, Tensor) or not isinstance(weight, Tensor):
        raise TypeError(f"{where}: input and weight must be Tensors")
    if max_norm is not None or scale_grad_by_freq or sparse:
        raise ValueError(
            f"{where}: max_norm, scale_grad_by_freq and sparse are not supported; leave them "
            "at their defaults (renormalise the table with torch-style code beforehand)"
        )
    if mode not in MODES:
        raise ValueError(f"{where}: mode must be one of {list(MODES)}, got {mode!r}")
    if weight.ndim != 2 or weight._array.dtype.kind != "f":
        raise ValueError(
            f"{where}: weight must be a 2-D float table, got shape {tuple(weight.shape)} "
            f"and dtype {weight.dtype}"
        )
    indices = input._array
    if indices.dtype.kind not in "iu":
        raise TypeError(f"{where}: input must hold integer indices, got dtype {input.dtype}")
    rows = weight.shape[0]
    if indices.size and may_check_values(indices) and (indices.min() < 0 or indices.max() >= rows):
        bad = int(indices.max() if indices.max() >= rows else indices.min())
        raise IndexError(f"{where}: index {bad} is out of range for a table of {rows} rows")
    if per_sample_weights is not None:
        if mode != "sum":
            raise ValueError(
                f"{where}: per_sample_weights is only supported for mode='sum', got mode={mode!r}"
            )
        if tuple(per_sample_weights.shape) != tuple(input.shape):
            raise ValueError(
                f"{where}: per_sample_weights of shape {tuple(per_sample_weights.shape)} must "
                f"match the input's {tuple(input.shape)}"
            )
        if per_sample_weights.dtype != weight.dtype:
            raise TypeError(
                f"{where}: per_sample_weights is {per_sample_weights.dtype} but weight is "
                f"{weight.dtype}; convert one so both match"
            )
    flat, bag, valid, bags = _bags(where, indices, offsets, include_last_offset)
    if padding_idx is not None:
        if not -rows <= padding_idx < rows:
            raise ValueError(f"{where}: padding_idx {padding_idx} must be within [-{rows}, {rows})")
        valid = valid & (flat != padding_idx % rows)
    xp = get_array_module(indices)
    if mode == "max":
        return EmbeddingBagMax.apply(weight, index=flat, bag=bag, valid=valid, bags=bags)
    scale = valid.astype(weight._array.dtype)
    if mode == "mean":
        counts = xp.zeros(bags, dtype=scale.dtype)
        scatter_add(counts, bag, scale)  # whole numbers: exact in any order
        scale = scale / xp.maximum(counts, 1)[bag]
    return EmbeddingBagSum.apply(
        weight, per_sample_weights, index=flat, bag=bag, scale=scale, bags=bags
    )


__all__ = ["embedding_bag"]
