"""Sparse tensors are not offered: the names ported scripts use say so clearly."""

from __future__ import annotations

import pytest

import dtrain as dt


def test_dense_tensors_answer_as_dense():
    x = dt.ones(2, 2)
    assert x.is_sparse is False
    assert x.to_dense() is x
    assert x.to_dense(dt.float64).dtype == dt.float64


@pytest.mark.parametrize(
    "call",
    [
        lambda: dt.ones(2, 2).to_sparse(),
        lambda: dt.ones(2, 2).to_sparse_csr(),
        lambda: dt.sparse.mm(dt.ones(2, 2), dt.ones(2, 2)),
        lambda: dt.sparse_coo_tensor([[0], [1]], [1.0], (2, 2)),
    ],
)
def test_sparse_entry_points_raise_not_offered(call):
    with pytest.raises(NotImplementedError, match="sparse tensors are not offered"):
        call()
