"""Ops give inf and NaN silently, as PyTorch does, without silencing numpy in user code."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import warnings

import numpy as np

with warnings.catch_warnings():  # as pytest imports a test module: the filter list is a copy
    import dtrain as dt

x = dt.tensor([1.0, 0.0, -1.0])
results = [
    x / 0, 1 / x, x.reciprocal(), dt.sqrt(x), dt.rsqrt(x), x.pow(-1), dt.exp(x * 1000),
    x * 1e300 * 1e300, (x * 1e5).half(), dt.log(x), x / dt.zeros(3),
]
big = dt.tensor([3e38, 3e38])
empty = dt.tensor([])
results += [big.sum(), big.prod(), big.cumsum(0), big.cumprod(0), empty.mean(), empty.var()]
print([r.tolist() for r in results][0])
try:
    np.array([1.0]) / 0
except RuntimeWarning:
    print("user numpy still warns")
"""


def test_float_edge_results_are_silent_but_user_numpy_still_warns():
    # A fresh interpreter with every warning an error: pytest's own warning capture would
    # otherwise hide what a user's script sees.
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[inf, nan, -inf]", "user numpy still warns"]
