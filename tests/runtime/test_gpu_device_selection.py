"""The one-GPU-per-process selection (runtime/device_selection.py) on real cupy, in a fresh
process (nothing selected yet): a seed given before the selection reaches the GPU, plain
"cuda" and an int name the GPU, the dt.cuda queries take a device, and DataLoader worker
threads index GPU tensors. The emulator covers several GPUs; this checks cupy's own API."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import dtrain as dt

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not dt.cuda_is_available(), reason="needs a CUDA GPU and cupy"),
]

SCRIPT = textwrap.dedent(
    """
    import numpy as np
    import dtrain as dt
    from dtrain.runtime import device_selection

    dt.manual_seed(3)
    assert device_selection.selected_cuda_device() is None
    first = dt.randn(5, device="cuda")  # the first placement selects, then the seed applies
    assert device_selection.selected_cuda_device() == 0
    dt.manual_seed(3)
    again = dt.randn(5, device="cuda")
    assert np.array_equal(first.cpu().numpy(), again.cpu().numpy()), (first, again)

    assert dt.device("cuda") == dt.device("cuda:0") == dt.device(0)
    x = dt.ones(1000).to(0)
    assert x.device == dt.device("cuda:0") and dt.cuda.current_device() == 0
    assert dt.cuda.memory_allocated(0) > 0 and dt.cuda.memory_reserved("cuda:0") > 0
    dt.cuda.synchronize(dt.device("cuda"))
    assert dt.cuda.get_device_name(0) == dt.cuda.get_device_name()

    data = dt.utils.data.TensorDataset(dt.arange(12.0, device="cuda").reshape(6, 2))
    loader = dt.utils.data.DataLoader(data, batch_size=2, num_workers=2)
    rows = [batch.cpu().numpy().tolist() for (batch,) in loader]
    assert rows[2] == [[8.0, 9.0], [10.0, 11.0]], rows
    print("OK")
    """
)


def test_selection_seeding_and_queries_on_real_cupy():
    env = {k: v for k, v in os.environ.items() if k not in ("DTRAIN_DEVICE", "LOCAL_RANK")}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("OK"), done.stderr[-3000:]
