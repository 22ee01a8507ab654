"""PyTorch's backend switches and ``torch.cuda`` helpers that scripts set in their first
lines (``dt.backends``, ``dt.cuda``), on a machine without CUDA."""

from __future__ import annotations

import warnings

import pytest

import dtrain as dt
import dtrain.backends.cudnn as cudnn
from dtrain.runtime import matmul_precision


@pytest.fixture
def precision():
    """Restores float32 products to full precision after the test."""
    yield
    matmul_precision.set_float32_matmul_precision("highest")


def test_allow_tf32_is_the_float32_matmul_precision(precision):
    assert dt.get_float32_matmul_precision() == "highest"
    assert not dt.backends.cuda.matmul.allow_tf32
    dt.backends.cuda.matmul.allow_tf32 = True
    assert dt.get_float32_matmul_precision() == "high"
    dt.set_float32_matmul_precision("medium")
    assert dt.backends.cuda.matmul.allow_tf32
    dt.set_float32_matmul_precision("highest")
    assert not dt.backends.cuda.matmul.allow_tf32


def test_cudnn_and_mps_flags_are_accepted():
    cudnn.benchmark = True
    dt.backends.cudnn.deterministic = True
    assert dt.backends.cudnn.benchmark and not dt.backends.cudnn.is_available()
    assert not dt.backends.mps.is_available() and not dt.backends.mps.is_built()


@pytest.mark.skipif(dt.cuda.is_available(), reason="checks the machine without CUDA")
def test_cuda_helpers_without_cuda():
    dt.cuda.manual_seed(3)
    dt.cuda.manual_seed_all(3)
    dt.cuda.empty_cache()
    assert dt.cuda.memory_reserved() == 0
    assert not dt.cuda.is_bf16_supported()
    with pytest.raises(TypeError, match="seed must be an int"):
        dt.cuda.manual_seed(1.5)
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        dt.cuda.get_device_name()


@pytest.mark.skipif(dt.cuda.is_available(), reason="checks the machine without CUDA")
def test_cuda_amp_is_amp_on_cuda():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scaler = dt.cuda.amp.GradScaler(init_scale=8.0)
    assert isinstance(scaler, dt.amp.GradScaler) and not scaler.is_enabled()
    assert "CUDA is not available" in str(caught[0].message)
    region = dt.cuda.amp.autocast(enabled=False)
    assert isinstance(region, dt.amp.autocast) and region.device_type == "cuda"
    with region:
        assert not dt.is_autocast_enabled()


def test_torch_style_helpers_at_the_top_level():
    t = dt.ones(2, 3)
    assert dt.is_tensor(t) and dt.is_tensor(dt.nn.Parameter(t)) and not dt.is_tensor([1.0])
    assert dt.numel(t) == 6
    assert dt.inf == float("inf") and dt.nan != dt.nan and abs(dt.pi - 3.14159) < 1e-5
    assert dt.finfo(dt.float32).min == -dt.finfo(dt.float32).max


def test_distributed_and_multiprocessing_are_attributes_loaded_on_first_use():
    import subprocess
    import sys

    code = (
        "import sys, dtrain as torch\n"
        "assert 'dtrain.parallel' not in sys.modules\n"
        "assert torch.distributed.is_available() and not torch.distributed.is_initialized()\n"
        "assert callable(torch.multiprocessing.spawn)\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "ok", done.stderr
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        dt.nonsense  # noqa: B018


def test_sharing_a_model_between_processes_is_refused_with_the_alternative():
    with pytest.raises(NotImplementedError, match="DistributedDataParallel"):
        dt.nn.Linear(2, 2).share_memory()
    with pytest.raises(NotImplementedError, match="DistributedDataParallel"):
        dt.ones(2).share_memory_()
