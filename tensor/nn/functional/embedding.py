"""``embedding`` (a lookup table with a scatter-add backward) and ``one_hot``."""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain._tensor.autograd.op import Op
from dtrain._tensor.nn.functional.row_sums import add_rows_sorted
from dtrain._tensor.ops._util import add_at
from dtrain._tensor.settings import deterministic_requested
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import get_array_module, is_cuda_array, scatter_add
from dtrain.runtime.device import device_of
from dtrain.runtime.kernels import embedding as _kernels
from dtrain.runtime.value_checks import may_check_values


class Embedding(Op):
    # A tied table (an output layer's weight too) already has that layer's gradient when
    # the lookup's backward runs: the rows are added to it, with no zeroed table of their
    # own and no sum after.
    adds_pending = True

    def forward(self, indices: Any, weight: Any, *, padding_idx: int | None) -> Any:
        self.indices, self.shape, self.padding_idx = indices, weight.shape, padding_idx
        return weight[indices]

    def backward(self, grad: Any) -> tuple:
        if self._one_kernel(grad):
            return None, _kernels.embedding_backward(
                grad, self.indices, self.shape[0], self.padding_idx
            )
        xp = get_array_module(grad)
        full = xp.zeros(self.shape, dtype=grad.dtype)
        _scatter_rows(full, self.indices.reshape(-1), grad.reshape(-1, self.shape[1]))
        if self.padding_idx is not None:
            full[self.padding_idx] = 0
        return None, full

    def backward_adding(self, grad: Any, pending: tuple) -> tuple[tuple, tuple]:
        found = pending[1]
        if found is None:
            return self.backward(grad), (False, False)
        table, owned = found
        if table.dtype != grad.dtype or table.shape != self.shape:
            return self.backward(grad), (False, False)
        if self._one_kernel(grad):  # reads the pending table, writes a new one
            summed = _kernels.embedding_backward(
                grad, self.indices, self.shape[0], self.padding_idx, addend=table
            )
            return (None, summed), (False, True)
        if not owned or self.padding_idx is not None or not table.flags.c_contiguous:
            return self.backward(grad), (False, False)  # not ours to write, or a row to keep
        _scatter_rows(table, self.indices.reshape(-1), grad.reshape(-1, self.shape[1]))
        return (None, table), (False, True)

    def _one_kernel(self, grad: Any) -> bool:
        """On CUDA, small tables take one deterministic launch (runtime/kernels/embedding)."""
        return is_cuda_array(grad) and _kernels.supported(self.indices, grad, self.shape[0])


def embedding(input: Tensor, weight: Tensor, padding_idx: int | None = None) -> Tensor:
    """Rows of ``weight`` at the integer ``input`` indices (output shape input.shape + (dim,))."""
    indices = input._array if isinstance(input, Tensor) else input
    if indices.dtype.kind not in "iu":
        raise TypeError(f"embedding: indices must be integers, got dtype {indices.dtype}")
    if is_cuda_array(indices) != is_cuda_array(weight._array):
        raise RuntimeError(
            f"embedding: indices on {device_of(indices)} but the weight on {weight.device}; move "
            "the indices with .to(weight.device) (on CUDA, e.g. dt.arange(n, device=...))"
        )
    rows = weight.shape[0]
    # On CUDA (unless DTRAIN_DEBUG=1) indices are not checked: cupy wraps them around.
    if indices.size and may_check_values(indices) and (indices.min() < 0 or indices.max() >= rows):
        raise IndexError(
            f"embedding: index {int(indices.max() if indices.max() >= rows else indices.min())} "
            f"is out of range for a table of {rows} rows"
        )
    if padding_idx is not None and padding_idx < 0:
        padding_idx += rows
    return Embedding.apply(indices, weight, padding_idx=padding_idx)


def one_hot(tensor: Tensor, num_classes: int = -1) -> Tensor:
    """int64 one-hot vectors along a new last dim."""
    indices = tensor._array
    if indices.dtype.kind not in "iu":
        raise TypeError(f"one_hot: expected an integer tensor, got dtype {indices.dtype}")
    xp = get_array_module(indices)
    if num_classes < 0:
        num_classes = int(indices.max()) + 1 if indices.size else 0
    if indices.size and (indices.min() < 0 or indices.max() >= num_classes):
        bad = int(indices.min() if indices.min() < 0 else indices.max())
        raise ValueError(
            f"one_hot: class value {bad} is outside [0, {num_classes}); raise num_classes or "
            "fix the labels"
        )
    return wrap((indices[..., None] == xp.arange(num_classes)).astype(xp.int64))


def _scatter_rows(table: Any, indices: Any, rows: Any) -> None:
    """``table[indices] += rows``, repeated indices summed. On CUDA cupy sums with atomics,
    in no fixed order; under ``use_deterministic_algorithms(True)`` the sum takes a fixed
    order instead (as PyTorch's deterministic embedding backward; the small-table kernel is
    deterministic already)."""
    if not is_cuda_array(table):
        add_rows_sorted(table, indices, lambda at: np.take(rows, at, axis=0))
    elif deterministic_requested():
        add_at(table, indices, rows, "embedding backward")
    else:
        scatter_add(table, indices, rows)
