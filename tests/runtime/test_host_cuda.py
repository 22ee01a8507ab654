"""``host_cuda``, the runner of the kernels' CUDA C on the CPU: that a barrier, shared memory,
a warp shuffle and the float16 conversions mean what they mean on a GPU, and that a block
whose threads miss a barrier is reported, not run."""

from __future__ import annotations

import numpy as np
import pytest

from dtrain.runtime.kernels.build import KernelSource
from dtrain.runtime.kernels.prelude import PRELUDE

host_cuda = pytest.importorskip("host_cuda")
if host_cuda.compiler() is None:
    pytest.skip("no g++ to compile CUDA C for the CPU", allow_module_level=True)

BODY = r"""
// Each thread writes its slot, then reads its neighbour's: right only if every write
// happens before any read, i.e. if __syncthreads() is a barrier.
__global__ void rotate(const float* x, float* y) {
    __shared__ float slots[1024];
    const int t = threadIdx.x;
    slots[t] = x[blockIdx.x * blockDim.x + t];
    __syncthreads();
    y[blockIdx.x * blockDim.x + t] = slots[(t + 1) % blockDim.x];
}

template <typename T>
__global__ void row_sums(const T* x, T* out, long long cols) {
    typedef typename Acc<T>::type A;
    __shared__ A scratch[32];
    A v = 0;
    for (long long c = threadIdx.x; c < cols; c += blockDim.x)
        v += to_acc(x[blockIdx.x * cols + c]);
    v = block_sum(v, scratch);
    if (threadIdx.x == 0) out[blockIdx.x] = from_acc<T>(v);
}

__global__ void half_round_trip(const float* x, half_t* h, float* back, long long n) {
    for (long long i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        h[i] = from_acc<half_t>(x[i]);
        back[i] = to_acc(h[i]);
    }
}

__global__ void half_the_block_waits(float* y) {
    if (threadIdx.x < 16) __syncthreads();
    y[threadIdx.x] = 1;
}
"""

SOURCE = KernelSource(
    "host_cuda_test",
    PRELUDE + BODY,
    ("rotate", "row_sums<float>", "row_sums<double>", "half_round_trip", "half_the_block_waits"),
)


@pytest.mark.parametrize("block", [32, 96, 1024])
def test_syncthreads_is_a_barrier_and_shared_memory_is_shared(block):
    x = np.arange(3 * block, dtype=np.float32)
    y = np.full_like(x, np.nan)
    host_cuda.launch(SOURCE, "rotate", (3,), block, (x, y))
    expected = np.roll(x.reshape(3, block), -1, axis=1).ravel()
    np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("cols", "block"), [(1, 32), (100, 64), (1000, 256)])
def test_block_sum_through_warp_shuffles(dtype, cols, block):
    x = np.random.default_rng(0).standard_normal((5, cols)).astype(dtype)
    out = np.full(5, np.nan, dtype)
    expression = f"row_sums<{'float' if dtype == np.float32 else 'double'}>"
    host_cuda.launch(SOURCE, expression, (5,), block, (x, out, np.int64(cols)))
    np.testing.assert_allclose(out, x.sum(axis=1), rtol=1e-5)


def test_float16_conversions_round_as_numpy_does():
    x = np.concatenate([
        np.random.default_rng(1).standard_normal(1000) * 1000,
        [0.0, -0.0, 1e-8, 65504.0, 65520.0, 1e6, np.inf, -np.inf, 2049.0, 2051.0],
    ]).astype(np.float32)  # fmt: skip
    h = np.zeros(x.size, np.float16)
    back = np.full(x.size, np.nan, np.float32)
    host_cuda.launch(SOURCE, "half_round_trip", (4,), 32, (x, h, back, np.int64(x.size)))
    with np.errstate(over="ignore"):  # 65520 and up round to inf, as they should
        expected = x.astype(np.float16)
    np.testing.assert_array_equal(h.view(np.uint16), expected.view(np.uint16))
    np.testing.assert_array_equal(back, expected.astype(np.float32))


def test_threads_that_miss_a_barrier_are_an_error():
    with pytest.raises(RuntimeError, match="16 threads wait at a barrier that 16 finished"):
        host_cuda.launch(SOURCE, "half_the_block_waits", (1,), 32, (np.zeros(32, np.float32),))


def test_arguments_must_be_arrays_or_numpy_scalars():
    with pytest.raises(TypeError, match="numpy scalar"):
        host_cuda.launch(SOURCE, "row_sums<float>", (1,), 32, (np.zeros(1), np.zeros(1), 3))
