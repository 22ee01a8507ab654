"""A non-finite value stays in its channel group's gradients on the CPU's wide-row columns
(conv_columns.py: each output row's windows run past the row, into the next row, channel
or image; the surplus is dropped, but inf * 0 there would be NaN)."""

from __future__ import annotations

import numpy as np

import dtrain as dt
import dtrain.nn.functional as F


def _finite_by(a: dt.Tensor, axis: int) -> list:
    array = a.detach().numpy()
    other = tuple(i for i in range(array.ndim) if i != axis)
    return np.isfinite(array).all(axis=other).tolist()


def test_an_inf_input_leaves_other_groups_weight_gradients_finite():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    x[0, 1, 0, 0] = np.inf  # group 1 (output channels 2, 3)
    xt = dt.tensor(x, requires_grad=True)
    w = dt.tensor(rng.standard_normal((6, 1, 3, 3)).astype(np.float32), requires_grad=True)
    F.conv2d(xt, w, groups=3).sum().backward()
    assert _finite_by(w.grad, 0) == [True, True, False, False, True, True]


def test_an_inf_weight_leaves_other_groups_input_gradients_finite():
    rng = np.random.default_rng(1)
    x = dt.tensor(rng.standard_normal((2, 3, 4, 4)).astype(np.float32), requires_grad=True)
    w = rng.standard_normal((6, 1, 3, 3)).astype(np.float32)
    w[2, 0, 2, 2] = np.inf  # group 1; the last tap reaches past the row
    F.conv2d(x, dt.tensor(w, requires_grad=True), groups=3).sum().backward()
    assert _finite_by(x.grad, 1) == [True, False, True]


def test_conv_transpose_keeps_an_inf_in_its_group_forward_and_backward():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    w[1, 0, 2, 2] = np.inf  # group 1 (output channels 2, 3; channel 2 meets the inf)
    out = F.conv_transpose2d(dt.tensor(x), dt.tensor(w), groups=3)
    assert _finite_by(out, 1) == [True, True, False, True, True, True]

    xt = dt.tensor(x, requires_grad=True)
    wt = dt.tensor(rng.standard_normal((3, 2, 3, 3)).astype(np.float32), requires_grad=True)
    grad = rng.standard_normal((2, 6, 6, 6)).astype(np.float32)
    grad[0, 2, 1, 1] = np.inf  # output channel 2: group 1
    F.conv_transpose2d(xt, wt, groups=3).backward(dt.tensor(grad))
    assert _finite_by(wt.grad, 0) == [True, False, True]
