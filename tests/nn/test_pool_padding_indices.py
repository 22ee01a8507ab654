"""max_pool1d/2d: the padding never wins a window, so indices stay inside the input."""

from __future__ import annotations

import numpy as np
import pytest

import dtrain as dt
import dtrain.nn.functional as F


@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_a_window_of_only_the_lowest_value_picks_its_first_inside_position(dtype):
    lowest = -np.inf if dtype == np.float32 else np.iinfo(dtype).min
    x = np.full((1, 1, 4, 4), lowest, dtype=dtype)
    x[0, 0, 2:, 2:] = 1
    _, indices = F.max_pool2d(dt.tensor(x), 2, stride=2, padding=1, return_indices=True)
    # PyTorch's: each window's first position inside the 4x4 input.
    assert indices.tolist() == [[[[0, 1, 3], [4, 10, 11], [12, 14, 15]]]]
    line = np.full((1, 1, 5), lowest, dtype=dtype)
    line[0, 0, 3:] = 1
    _, indices = F.max_pool1d(dt.tensor(line), 2, stride=2, padding=1, return_indices=True)
    assert indices.tolist() == [[[0, 1, 3]]]


def test_no_gradient_is_lost_in_the_padding():
    x = dt.full((1, 1, 2, 2), -float("inf"), requires_grad=True)
    F.max_pool2d(x, 2, stride=2, padding=1).sum().backward()
    assert x.grad.tolist() == [[[[1.0, 1.0], [1.0, 1.0]]]]


def test_indices_unpool_back_into_the_input():
    x = dt.full((1, 1, 4, 4), -float("inf"))
    _, indices = F.max_pool2d(x, 2, stride=2, padding=1, return_indices=True)
    assert int(indices.min()) >= 0 and int(indices.max()) < 16
