"""Adding rows into a table at repeated indices on numpy, without ``ufunc.at`` on rows.

``np.add.at(table, index, rows)`` walks entry by entry and is 4-10x slower than PyTorch's
embedding backward. Sorted by index, the entries form runs of equal indices: the first
entry of every run is added with one fancy-index ``+=`` (the rows it touches are distinct,
so none is lost), then the second of every run still going, and so on for ``RANKS`` ranks;
what longer runs hold beyond that (a small vocabulary: a character model's 65 rows) is
summed per run with one ``add.reduceat``. The CUDA path keeps cupy's scatter-add.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

RANKS = 8  # fancy-index passes before the rest of each longer run is reduced


def add_rows_sorted(table: Any, index: Any, rows_at: Callable[[Any], Any]) -> None:
    """``table[index[j]] += rows_at([j])[0]`` for every entry ``j`` (numpy arrays):
    ``rows_at(positions)`` gives the rows of those entries, so callers can build them
    lazily (a bag's gradient times a weight) instead of materialising all of them."""
    entries = index.shape[0]
    if entries == 0:
        return
    order = np.argsort(index, kind="stable")
    index = index[order]
    head = np.empty(entries, dtype=bool)
    head[0] = True
    np.not_equal(index[1:], index[:-1], out=head[1:])
    starts = np.flatnonzero(head)
    lengths = np.diff(starts, append=entries)
    table[index[starts]] += rows_at(order[starts])
    for rank in range(1, RANKS):
        live = starts[lengths > rank] + rank
        if live.size == 0:
            return
        table[index[live]] += rows_at(order[live])
    long = lengths > RANKS
    if long.any():
        first, counts = starts[long] + RANKS, lengths[long] - RANKS
        segments = np.cumsum(counts) - counts  # each run's start among the gathered rest
        take = np.repeat(first - segments, counts) + np.arange(int(counts.sum()))
        table[index[first]] += np.add.reduceat(rows_at(order[take]), segments, axis=0)
