"""``embedding_bag``: sums, means or maxima of bags of embedding rows, without building
the per-entry embeddings as a graph node.

Every entry of the (flattened) input gets its bag number (``searchsorted`` over the
offsets) and, where needed, a weight: its ``per_sample_weights``, 0 for entries excluded
(``padding_idx``). The bags are segment sums of the weighted rows: a reshape and sum for a
2-D input, ``add.reduceat`` over the sorted offsets on numpy, a scatter-add on CUDA; a mean
divides each bag by its count afterwards. Backward adds the bag gradients onto the table
rows: on numpy, after sorting the indices, one row assignment per rank within each run of
equal indices (no ``ufunc.at`` on whole rows); on CUDA a scatter-add. Float16 tables sum in
float32, as PyTorch's. ``max`` takes a scatter-max and remembers the entry that won each
bag and feature. No Python loop runs over bags.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.nn.functional.embedding import _scatter_rows
from dtrain._tensor.nn.functional.row_sums import add_rows_sorted
from dtrain._tensor.ops._util import add_at
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.backend import get_array_module, scatter_add
from dtrain.runtime.device import as_numpy
from dtrain.runtime.dtypes import accumulation_dtype
from dtrain.runtime.value_checks import may_check_values

MODES = ("sum", "mean", "max")


def _sum_bags(values: Any, bag: Any, bags: int, layout: Any) -> Any:
    """``out[bag[j]] += values[j]``: ``layout`` is the bag length (a 2-D input), the host
    ``(starts, ends)`` of sorted bags on numpy, or None (a scatter-add)."""
    if isinstance(layout, int):
        return values.reshape(bags, layout, values.shape[1]).sum(axis=1)
    xp = get_array_module(values)
    out = xp.zeros((bags, values.shape[1]), dtype=values.dtype)
    if layout is None:
        _scatter_rows(out, bag, values)
        return out
    starts, ends = layout
    filled = ends > starts  # reduceat gives an empty bag the row at its start: skip those
    if filled.any():
        out[filled] = np.add.reduceat(values, starts[filled], axis=0)
    return out


def _rows_into_table(table: Any, index: Any, per_bag: Any, bag: Any, factor: Any) -> None:
    """``table[index[j]] += per_bag[bag[j]] · factor[j]`` (``factor`` 1 when None); on numpy
    by sorted runs (``row_sums``), each entry's row built only when it is added."""
    xp = get_array_module(table)
    if xp is not np:
        values = per_bag[bag] if factor is None else per_bag[bag] * factor[:, None]
        _scatter_rows(table, index, values)
        return

    def values(at: Any) -> Any:
        rows = np.take(per_bag, bag[at], axis=0)
        return rows if factor is None else rows * factor[at][:, None]

    add_rows_sorted(table, index, values)


class EmbeddingBagSum(Op):
    """``out[bag[j]] += keep[j] · psw[j] · weight[index[j]]`` (1 where None), then divided by
    ``divisor`` (each bag's count, for a mean) when given; summed in float32 for float16."""

    def forward(
        self,
        weight: Any,
        psw: Any,
        index: Any,
        bag: Any,
        keep: Any,
        divisor: Any,
        bags: int,
        layout: Any,
    ) -> Any:
        xp = get_array_module(weight)
        wide = accumulation_dtype(weight.dtype)
        rows = xp.take(weight, index, axis=0).astype(wide, copy=False)
        factor = keep
        if psw is not None:
            factor = psw.reshape(-1).astype(wide)
            factor = factor if keep is None else factor * keep
        out = _sum_bags(rows if factor is None else rows * factor[:, None], bag, bags, layout)
        if divisor is not None:
            out /= divisor[:, None]
        self.index, self.bag, self.keep, self.factor, self.divisor = (
            index,
            bag,
            keep,
            factor,
            divisor,
        )
        self.rows = rows if psw is not None else None  # only psw's gradient reads them
        self.shape, self.dtype = weight.shape, weight.dtype
        self.psw_shape = None if psw is None else psw.shape
        return out.astype(weight.dtype, copy=False)

    def backward(self, grad: Any) -> tuple:
        need_weight, need_psw = self.needs_input_grad
        xp = get_array_module(grad)
        wide = accumulation_dtype(grad.dtype)
        grad = grad.astype(wide, copy=False)
        if self.divisor is not None:
            grad = grad / self.divisor[:, None]
        grad_weight = grad_psw = None
        if need_weight:
            grad_weight = xp.zeros(self.shape, dtype=wide)
            _rows_into_table(grad_weight, self.index, grad, self.bag, self.factor)
            grad_weight = grad_weight.astype(self.dtype, copy=False)
        if need_psw:
            grad_psw = (grad[self.bag] * self.rows).sum(axis=1)
            grad_psw = grad_psw if self.keep is None else grad_psw * self.keep
            grad_psw = grad_psw.astype(self.dtype, copy=False).reshape(self.psw_shape)
        return grad_weight, grad_psw


class EmbeddingBagMax(Op):
    """Per bag and feature, the largest row entry (0 for an empty bag); the gradient goes to
    the first entry that holds it. The scatter-max runs in float32 for float16 tables and
    the winning positions are int32 (uint64 past 2**31 entries): cupy's ``maximum.at`` and
    ``minimum.at`` take neither float16 nor int64."""

    def forward(self, weight: Any, index: Any, bag: Any, valid: Any, bags: int) -> Any:
        xp = get_array_module(weight)
        wide = accumulation_dtype(weight.dtype)
        rows = xp.take(weight, index, axis=0).astype(wide, copy=False)
        lowest = xp.asarray(-np.inf, dtype=rows.dtype)
        masked = rows if valid is None else xp.where(valid[:, None], rows, lowest)
        out = xp.full((bags, weight.shape[1]), -np.inf, dtype=rows.dtype)
        xp.maximum.at(out, bag, masked)  # NaN propagates, as PyTorch
        won = masked == out[bag]
        won |= xp.isnan(masked)
        if valid is not None:
            won &= valid[:, None]
        entries = index.shape[0]
        position = np.int32 if entries < 2**31 - 1 else np.uint64
        none = xp.asarray(entries, dtype=position)
        first = xp.where(won, xp.arange(entries, dtype=position)[:, None], none)
        winner = xp.full(out.shape, entries, dtype=position)
        xp.minimum.at(winner, bag, first)
        self.filled = winner < none  # False for an empty bag
        self.source = index[xp.minimum(winner, max(entries - 1, 0))] if entries else winner
        self.shape = weight.shape
        return xp.where(self.filled, out, xp.zeros((), dtype=out.dtype)).astype(weight.dtype)

    def backward(self, grad: Any) -> tuple:
        xp = get_array_module(grad)
        full = xp.zeros(self.shape, dtype=grad.dtype)
        columns = xp.broadcast_to(xp.arange(self.shape[1]), self.source.shape)
        values = xp.where(self.filled, grad, xp.zeros((), dtype=grad.dtype))
        add_at(full, (self.source, columns), values, "embedding_bag max backward")
        return (full,)


def _bags(
    where: str, indices: Any, offsets: Tensor | None, include_last_offset: bool
) -> tuple[Any, Any, Any, int, Any]:
    """Flat indices, each entry's bag, which entries fall in a bag (None: all), the bag
    count, and the layout ``_sum_bags`` takes."""
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
        return flat, bag, None, bags, length
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
    length = indices.shape[0]
    position = xp.arange(length)
    bag = xp.searchsorted(starts[:bags], position, side="right") - 1
    if not (starts.size and may_check_values(starts)):
        valid = bag >= 0  # unchecked offsets (CUDA): entries before offsets[0] in no bag
        return indices, xp.where(valid, bag, 0), valid, bags, None
    host = np.asarray(as_numpy(starts), dtype=np.int64)
    if host[0] != 0:
        raise ValueError(
            f"{where}: offsets[0] must be 0 (the first bag starts at the first index), got "
            f"{host[0]}"
        )
    if (np.diff(host) < 0).any():
        raise ValueError(f"{where}: offsets must not decrease, got {host.tolist()}")
    if host[-1] > length:
        raise ValueError(
            f"{where}: offsets[-1] can not be greater than the input's length {length}, got "
            f"{host[-1]} (as PyTorch)"
        )
    if include_last_offset and host[-1] != length:
        raise ValueError(
            f"{where}: with include_last_offset the last offset must be the input's length "
            f"{length}, got {host[-1]}; drop the entries past it from the input"
        )
    layout = (host[:bags], np.append(host[1:bags], length)) if xp is np else None
    return indices, bag, None, bags, layout


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
        offsets: with 1-D input, each bag's first position: ``offsets[0]`` must be 0, and
            they must not decrease nor pass the input's length; with
            ``include_last_offset``, one more entry, which must be the input's length (not
            checked on CUDA, as the indices).
        mode: ``"sum"``, ``"mean"`` or ``"max"``; an empty bag gives zeros.
        per_sample_weights: the input's shape; weights for each entry (``"sum"`` only).
        include_last_offset: ``offsets`` has ``B + 1`` entries, the last one the end.
        padding_idx: entries equal to it are left out of their bag (and of the mean).

    Returns:
        ``(B, dim)``.

    Raises:
        TypeError: non-integer indices or offsets, or mismatched dtypes.
        ValueError: a bad mode, shape or offsets, ``per_sample_weights`` outside ``"sum"``, or
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
    flat, bag, valid, bags, layout = _bags(where, indices, offsets, include_last_offset)
    if padding_idx is not None:
        if not -rows <= padding_idx < rows:
            raise ValueError(f"{where}: padding_idx {padding_idx} must be within [-{rows}, {rows})")
        kept = flat != padding_idx % rows
        valid = kept if valid is None else valid & kept
    if mode == "max":
        return EmbeddingBagMax.apply(weight, index=flat, bag=bag, valid=valid, bags=bags)
    xp = get_array_module(indices)
    wide = accumulation_dtype(weight._array.dtype)
    keep = None if valid is None else valid.astype(wide)
    divisor = None
    if mode == "mean":
        if keep is None and isinstance(layout, int):
            divisor = xp.full(bags, max(layout, 1), dtype=wide)
        elif keep is None and layout is not None:
            divisor = np.maximum(layout[1] - layout[0], 1).astype(wide)
        else:
            divisor = xp.zeros(bags, dtype=wide)
            ones = xp.ones(flat.shape, dtype=wide) if keep is None else keep
            scatter_add(divisor, bag, ones)  # whole numbers: exact in any order
            divisor = xp.maximum(divisor, 1)
    return EmbeddingBagSum.apply(
        weight,
        per_sample_weights,
        index=flat,
        bag=bag,
        keep=keep,
        divisor=divisor,
        bags=bags,
        layout=layout,
    )


__all__ = ["embedding_bag"]
