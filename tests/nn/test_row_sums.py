"""Rows added at repeated indices by sorted runs equal numpy's add.at, runs of any length."""

from __future__ import annotations

import numpy as np
import pytest

import dtrain as dt
from dtrain._tensor.nn.functional.row_sums import RANKS, add_rows_sorted


@pytest.mark.parametrize("vocab", [1, 3, 65, 5000])  # runs far longer than RANKS, and short
def test_sorted_runs_equal_add_at(vocab):
    rng = np.random.default_rng(vocab)
    index = rng.integers(0, vocab, 4 * RANKS * 40)
    rows = rng.standard_normal((index.size, 5))
    expected = np.zeros((vocab, 5))
    np.add.at(expected, index, rows)
    table = np.zeros((vocab, 5))
    add_rows_sorted(table, index, lambda at: rows[at])
    np.testing.assert_allclose(table, expected, rtol=1e-12, atol=1e-12)
    add_rows_sorted(table, index[:0], lambda at: rows[at])  # no entries: nothing added
    np.testing.assert_allclose(table, expected, rtol=1e-12, atol=1e-12)


def test_embedding_gradient_with_a_small_vocabulary_and_a_tied_table():
    rng = np.random.default_rng(0)
    indices = rng.integers(0, 7, (16, 30))
    weight = dt.tensor(rng.standard_normal((7, 4)), requires_grad=True)
    upstream = rng.standard_normal((16, 30, 4))
    # A tied table: the lookup's rows are added onto the output layer's gradient.
    out = dt.nn.functional.embedding(dt.tensor(indices), weight) * dt.tensor(upstream)
    (out.sum() + (weight * 2).sum()).backward()
    expected = np.full((7, 4), 2.0)
    np.add.at(expected, indices.reshape(-1), upstream.reshape(-1, 4))
    np.testing.assert_allclose(weight.grad.numpy(), expected, rtol=1e-12)
