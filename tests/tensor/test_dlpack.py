"""DLPack: zero-copy exchange with numpy and PyTorch (a write through one side is read
through the other), every dtype, capsules, the requires-grad refusal PyTorch also makes,
errors; cupy and torch.cuda on the GPU."""

from __future__ import annotations

import numpy as np
import pytest

import dtrain as dt
from dtrain.runtime.dtypes import SUPPORTED
from dtrain.utils import dlpack as dlpack_utils

needs_gpu = pytest.mark.skipif(not dt.cuda_is_available(), reason="needs a CUDA GPU and cupy")


def sample(dtype: np.dtype, shape=(2, 3)) -> np.ndarray:
    values = np.arange(int(np.prod(shape))).reshape(shape) % 2 if dtype.kind == "b" else None
    if values is None:
        values = np.arange(int(np.prod(shape))).reshape(shape) + 1
    return values.astype(dtype)


def test_from_numpy_shares_memory_both_ways():
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = dt.from_dlpack(array)
    assert isinstance(t, dt.Tensor) and not t.requires_grad
    assert t.shape == (2, 3) and t.dtype == dt.float32
    array[0, 0] = 42.0
    assert t[0, 0].item() == 42.0
    t.add_(1.0)
    assert array[1, 2] == 6.0


def test_to_numpy_shares_memory_both_ways():
    t = dt.arange(6).reshape(2, 3).float()
    view = np.from_dlpack(t)
    view[1, 1] = -7.0
    assert t[1, 1].item() == -7.0
    t.mul_(2.0)
    assert view[1, 1] == -14.0
    assert t.__dlpack_device__() == (1, 0)


def test_non_contiguous_and_zero_dim():
    t = dt.arange(12).reshape(3, 4).float().T
    view = np.from_dlpack(t)
    np.testing.assert_array_equal(view, t.numpy())
    view[0, 2] = 99.0
    assert t[0, 2].item() == 99.0
    scalar = dt.from_dlpack(np.array(3.5))
    assert scalar.shape == () and scalar.item() == 3.5


@pytest.mark.parametrize("dtype", SUPPORTED, ids=str)
def test_every_dtype_round_trips_through_numpy(dtype):
    array = sample(dtype)
    t = dt.from_dlpack(array)
    assert t.dtype == dtype
    back = np.from_dlpack(t)
    assert back.dtype == dtype and np.shares_memory(back, array)
    np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize("dtype", SUPPORTED, ids=str)
def test_every_dtype_round_trips_through_torch(dtype):
    torch = pytest.importorskip("torch")
    t = dt.from_dlpack(sample(dtype))
    theirs = torch.from_dlpack(t)
    assert str(theirs.dtype) == f"torch.{'bool' if dtype.kind == 'b' else dtype.name}"
    back = dt.from_dlpack(theirs)
    assert back.dtype == dtype
    np.testing.assert_array_equal(back.numpy(), t.numpy())


def test_torch_shares_memory_both_ways():
    torch = pytest.importorskip("torch")
    theirs = torch.arange(6, dtype=torch.float64).reshape(3, 2)
    ours = dt.from_dlpack(theirs)
    theirs[2, 1] = 100.0
    assert ours[2, 1].item() == 100.0
    ours.sub_(1.0)
    assert theirs[0, 0].item() == -1.0
    again = torch.from_dlpack(ours)
    again[0, 1] = 55.0
    assert ours[0, 1].item() == 55.0 and theirs[0, 1].item() == 55.0


def test_requires_grad_refuses_as_torch_does():
    torch = pytest.importorskip("torch")
    with pytest.raises(BufferError) as theirs:
        torch.ones(2, requires_grad=True).__dlpack__()
    ours = dt.ones(2, requires_grad=True)
    with pytest.raises(BufferError, match="detach") as mine:
        ours.__dlpack__()
    assert type(mine.value) is type(theirs.value)
    with pytest.raises(BufferError):
        np.from_dlpack(ours)
    view = np.from_dlpack(ours.detach())  # the data, without the graph
    view[0] = 3.0
    assert ours[0].item() == 3.0


def test_capsules_as_torch_utils_dlpack():
    torch = pytest.importorskip("torch")
    t = dt.tensor([1.0, 2.0, 3.0])
    theirs = torch.utils.dlpack.from_dlpack(dlpack_utils.to_dlpack(t))
    theirs[0] = 10.0
    assert t[0].item() == 10.0
    source = torch.arange(4, dtype=torch.int32)
    ours = dlpack_utils.from_dlpack(torch.utils.dlpack.to_dlpack(source))
    source[3] = -1
    assert ours.dtype == dt.int32 and ours.tolist() == [0, 1, 2, -1]
    versioned = source.__dlpack__(max_version=(1, 0))  # a "dltensor_versioned" capsule
    assert dt.from_dlpack(versioned).tolist() == [0, 1, 2, -1]
    used = torch.utils.dlpack.to_dlpack(source)
    dt.from_dlpack(used)
    with pytest.raises(ValueError, match="only once"):
        dt.from_dlpack(used)


def test_stream_argument_on_the_cpu():
    t = dt.tensor([1.0, 2.0])
    assert np.from_dlpack(_Exporter(t.__dlpack__(stream=-1))).tolist() == [1.0, 2.0]


class _Exporter:
    """A producer handing out a capsule made earlier (numpy's importer wants an object)."""

    def __init__(self, capsule: object) -> None:
        self.capsule = capsule

    def __dlpack__(self, **_: object) -> object:
        return self.capsule

    def __dlpack_device__(self) -> tuple[int, int]:
        return (1, 0)


def test_unsupported_objects_and_dtypes():
    with pytest.raises(TypeError, match=r"list has no __dlpack__.*dtrain.tensor"):
        dt.from_dlpack([1.0, 2.0])
    with pytest.raises(TypeError, match="complex64 is not supported"):
        dt.from_dlpack(np.zeros(2, np.complex64))
    with pytest.raises(TypeError, match="uint16 is not supported"):
        dt.from_dlpack(np.zeros(2, np.uint16))

    class OnAnAccelerator(_Exporter):
        def __dlpack_device__(self) -> tuple[int, int]:
            return (8, 0)  # kDLMetal

    with pytest.raises(TypeError, match="device type 8"):
        dt.from_dlpack(OnAnAccelerator(None))


@pytest.mark.gpu
@needs_gpu
def test_cupy_exchange_shares_memory():
    import cupy

    theirs = cupy.arange(6, dtype=cupy.float32).reshape(2, 3)
    ours = dt.from_dlpack(theirs)
    assert ours.is_cuda and ours.device == dt.device("cuda:0")
    theirs[0, 0] = 42.0
    assert ours[0, 0].item() == 42.0
    ours.add_(1.0)
    assert float(theirs[1, 2]) == 6.0
    back = cupy.from_dlpack(ours)
    assert back.data.ptr == theirs.data.ptr
    assert ours.__dlpack_device__() == (2, 0)
    assert dt.from_dlpack(ours.detach()).is_cuda


@pytest.mark.gpu
@needs_gpu
def test_torch_cuda_exchange_shares_memory():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch without CUDA")
    theirs = torch.arange(6, dtype=torch.float32, device="cuda")
    ours = dt.from_dlpack(theirs)
    assert ours.is_cuda
    theirs[1] = -5.0
    assert ours[1].item() == -5.0
    ours.mul_(2.0)
    torch.cuda.synchronize()
    assert theirs[1].item() == -10.0
    again = torch.from_dlpack(ours)
    assert again.device.type == "cuda" and again.data_ptr() == theirs.data_ptr()
