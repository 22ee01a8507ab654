"""CUDA C helpers every kernel source starts with.

The sources include no header at all: cupy compiles them with NVRTC on the GPU machine,
where the CUDA toolkit headers may be absent, and with nvcc in CI. So float16 storage is a
two-byte struct converted with the same PTX instructions ``cuda_fp16.h`` uses, and the math
functions are picked per type by hand rather than through overloads a header would bring.

Types: ``T`` is the storage type (``float``, ``double`` or ``half_t``); ``Acc<T>::type`` is
the type the math runs in (``float`` for ``half_t`` and ``float``, ``double`` for ``double``).
"""

PRELUDE = r"""
struct half_t { unsigned short bits; };

template <typename T> struct Acc { typedef T type; };
template <> struct Acc<half_t> { typedef float type; };

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
#ifdef DTRAIN_HOST_CUDA  // tests/runtime/host_cuda.py runs these sources on the CPU
__device__ __forceinline__ float to_acc(half_t v) { return (float)dt_host_half(v.bits); }
#else
__device__ __forceinline__ float to_acc(half_t v) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.bits));
    return f;
}
#endif

template <typename T> __device__ __forceinline__ T from_acc(float v);
template <typename T> __device__ __forceinline__ T from_acc(double v);
template <> __device__ __forceinline__ float from_acc<float>(float v) { return v; }
template <> __device__ __forceinline__ double from_acc<double>(double v) { return v; }
template <> __device__ __forceinline__ double from_acc<double>(float v) { return v; }
template <> __device__ __forceinline__ float from_acc<float>(double v) { return (float)v; }
#ifdef DTRAIN_HOST_CUDA
template <> __device__ __forceinline__ half_t from_acc<half_t>(float v) {
    return half_t{dt_host_half_bits((_Float16)v)};
}
template <> __device__ __forceinline__ half_t from_acc<half_t>(double v) {
    return half_t{dt_host_half_bits((_Float16)v)};
}
#else
template <> __device__ __forceinline__ half_t from_acc<half_t>(float v) {
    half_t h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h.bits) : "f"(v));
    return h;
}
template <> __device__ __forceinline__ half_t from_acc<half_t>(double v) {
    half_t h;
    asm("cvt.rn.f16.f64 %0, %1;" : "=h"(h.bits) : "d"(v));
    return h;
}
#endif

__device__ __forceinline__ float dt_exp(float v) { return expf(v); }
__device__ __forceinline__ double dt_exp(double v) { return exp(v); }
__device__ __forceinline__ float dt_log(float v) { return logf(v); }
__device__ __forceinline__ double dt_log(double v) { return log(v); }
__device__ __forceinline__ float dt_sqrt(float v) { return sqrtf(v); }
__device__ __forceinline__ double dt_sqrt(double v) { return sqrt(v); }
__device__ __forceinline__ float dt_erf(float v) { return erff(v); }
__device__ __forceinline__ double dt_erf(double v) { return erf(v); }
__device__ __forceinline__ float dt_tanh(float v) { return tanhf(v); }
__device__ __forceinline__ double dt_tanh(double v) { return tanh(v); }

// Finite: neither inf nor NaN (all exponent bits set), read from the bits: no header.
__device__ __forceinline__ bool dt_isfinite(float v) {
    return (__float_as_int(v) & 0x7f800000) != 0x7f800000;
}
__device__ __forceinline__ bool dt_isfinite(double v) {
    return (__double_as_longlong(v) & 0x7ff0000000000000LL) != 0x7ff0000000000000LL;
}

template <typename A> __device__ __forceinline__ A neg_inf();
template <> __device__ __forceinline__ float neg_inf<float>() { return __int_as_float(0xff800000); }
template <> __device__ __forceinline__ double neg_inf<double>() {
    return __longlong_as_double(0xfff0000000000000LL);
}

// Block reductions. blockDim.x must be a multiple of 32 (launch.row_block guarantees it);
// every thread of the block must call them, and every thread gets the result. `scratch`
// is a __shared__ array of 32 values; the leading barrier lets a block reuse it.
template <typename A> __device__ __forceinline__ A block_sum(A v, A* scratch) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
    __syncthreads();
    if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = v;
    __syncthreads();
    A total = 0;
    for (int w = 0; w < (int)(blockDim.x >> 5); ++w) total += scratch[w];
    return total;
}

// A launch that finishes its own reduction (CUDA's threadFenceReduction pattern): each
// block calls this once, every thread of it, after writing its partial results; it is true
// in the one block that counts itself done last on *counter (blocks in all), whose reads
// then see every other block's partials (read them through volatile pointers). That block
// sets *counter back to 0 when it is done (build.done_counter: one counter per stream).
__device__ __forceinline__ bool last_block_done(int* counter, long long blocks) {
    __shared__ int last;
    __threadfence();  // this block's partials, visible to the whole GPU before it counts
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(counter, 1) == blocks - 1;
    __syncthreads();
    if (!last) return false;
    __threadfence();
    return true;
}

template <typename A> __device__ __forceinline__ A block_max(A v, A* scratch) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        const A other = __shfl_down_sync(0xffffffffu, v, offset);
        v = other > v ? other : v;
    }
    __syncthreads();
    if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = v;
    __syncthreads();
    A best = scratch[0];
    for (int w = 1; w < (int)(blockDim.x >> 5); ++w) best = scratch[w] > best ? scratch[w] : best;
    return best;
}
"""
