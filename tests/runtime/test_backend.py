"""``backend.may_share_memory``: numpy's bounds check on the CPU; on CUDA (a numpy-backed
stand-in for cupy arrays here) whether two arrays lie in one allocation."""

from __future__ import annotations

import numpy as np
from kernel_signatures import fake

from dtrain.runtime.backend import is_cuda_array, may_share_memory


def test_numpy_arrays_use_numpys_check():
    a = np.arange(10.0)
    assert may_share_memory(a, a[2:5]) and may_share_memory(a[::2], a.reshape(2, 5))
    assert not may_share_memory(a[:5], a[5:])  # one buffer, disjoint halves
    assert not may_share_memory(a, a.copy())


def test_cuda_arrays_share_when_they_lie_in_one_allocation():
    a = fake(np.arange(12.0).reshape(3, 4))
    assert is_cuda_array(a)
    assert may_share_memory(a, a.T) and may_share_memory(a[1:, ::2], a.reshape(-1)[3:])
    assert may_share_memory(a[:1], a[2:])  # disjoint, but one allocation: the safe answer
    assert not may_share_memory(a, a.copy())
    assert not may_share_memory(a, np.asarray(a)) and not may_share_memory(np.asarray(a), a)
