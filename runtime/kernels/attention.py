"""Attention for short sequences, fused: ``y = softmax(scale * q kᵀ, causal) v`` in one
launch forward and two backward, reading q, k, v and the output's gradient through their
strides.

A small model's attention is launch-bound: composed of copies, matrix products and a
softmax it takes 7 launches forward and about 11 backward per layer, and the heads split out
of one projection are strided views that cuBLAS cannot batch, so they are copied first.
These kernels take each operand as (batch, heads, length, dim) with four element strides,
so the views are read where they lie, and write ``y`` and the gradients in (batch, length,
heads, dim) order, which the caller returns as a (batch, heads, length, dim) view: the
usual ``y.transpose(1, 2).reshape(b, l, heads * dim)`` after attention is then a view too.

Forward, one block per query row ``(b, h, i)``: the row's scores against every key it may
see (``j <= i`` when causal), their softmax, and the weighted sum of the values; the row's
log-sum-exp ``lse`` is kept for backward. Backward recomputes the probabilities from
``lse`` rather than keeping the (length x length) softmax:

- rows, one block per query row: ``D_i = dy_i . y_i``; ``ds_ij = p_ij (dy_i . v_j - D_i)
  scale``; ``dq_i = sum_j ds_ij k_j``;
- columns, one block per key row ``(b, h, j)``: ``dv_j = sum_i p_ij dy_i`` and
  ``dk_j = sum_i ds_ij q_i``, each from the rows' ``lse`` and ``D``.

A block holds a row's scores in shared memory, so keys and queries are limited to
``MAX_LENGTH`` and the head dim to ``MAX_DIM``; longer ones take the composed path, whose
matrix products suit them better anyway. Each block reads all of K and V: this is for
short sequences only.

Host time: the forward's ``lse`` and the backward's ``D`` share one (2, b, h, l) allocation,
and for a split qkv projection the backward writes dq, dk and dv into one array at offsets
the kernels are given, not through views made for each.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import numpy as np

from dtrain.runtime.backend import require_cupy
from dtrain.runtime.kernels.build import (
    f64,
    i64,
    kernel,
    launch,
    on_array_device,
    register,
    row_block,
    templated,
    type_name,
)
from dtrain.runtime.kernels.cross_entropy import acc_dtype  # lse and D, as cross-entropy's lse

MAX_LENGTH = 256  # keys per row (forward), queries per column (backward)
MAX_DIM = 256
_MAX_GRID = 65536

_BODY = (
    f"#define MAX_LENGTH {MAX_LENGTH}\n#define MAX_DIM {MAX_DIM}\n"
    + r"""
// One operand: (batch, heads, length, dim) at `data` with these element strides.
template <typename T> struct View {
    const T* data;
    long long sb, sh, sl, sd;
};

template <typename T>
__device__ __forceinline__ const T* row_of(const View<T>& v, long long b, long long h,
                                           long long i) {
    return v.data + b * v.sb + h * v.sh + i * v.sl;
}

// Loads a row of `dim` elements (stride sd) into shared memory, in the math type.
template <typename T, typename A>
__device__ __forceinline__ void load_row(const T* row, long long sd, long long dim, A* out) {
    for (long long d = threadIdx.x; d < dim; d += blockDim.x) out[d] = to_acc(row[d * sd]);
}

template <typename T, typename A>
__device__ __forceinline__ A dot_row(const A* shared_row, const T* row, long long sd,
                                     long long dim) {
    A total = 0;
    for (long long d = 0; d < dim; ++d) total += shared_row[d] * to_acc(row[d * sd]);
    return total;
}

// sum over rows j in [first, end) of w[j] * x[b, h, j, d]
template <typename T, typename A>
__device__ __forceinline__ A weighted_sum(const A* w, const View<T>& x, long long b,
                                          long long h, long long first, long long end,
                                          long long d) {
    A total = 0;
    for (long long j = first; j < end; ++j) total += w[j] * to_acc(row_of(x, b, h, j)[d * x.sd]);
    return total;
}

// Keys row i may see: j <= i when causal (top-left aligned), all otherwise.
__device__ __forceinline__ long long visible_keys(long long i, long long keys, int causal) {
    return causal ? (i + 1 < keys ? i + 1 : keys) : keys;
}

// y (batch, length, heads, dv), lse (batch, heads, length): the first half of the (2, batch,
// heads, length) stats that backward reads (and whose second half it writes, D).
template <typename T>
__global__ void attention_forward(
        const T* q, long long qsb, long long qsh, long long qsl, long long qsd,
        const T* k, long long ksb, long long ksh, long long ksl, long long ksd,
        const T* v, long long vsb, long long vsh, long long vsl, long long vsd,
        T* y, typename Acc<T>::type* lse, long long batch, long long heads, long long length,
        long long keys, long long dim, long long dim_v, int causal, double scale) {
    typedef typename Acc<T>::type A;
    __shared__ A q_row[MAX_DIM];
    __shared__ A p[MAX_LENGTH];
    __shared__ A scratch[32];
    const View<T> Q{q, qsb, qsh, qsl, qsd}, K{k, ksb, ksh, ksl, ksd}, V{v, vsb, vsh, vsl, vsd};
    const long long rows = batch * heads * length;
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const long long i = r % length, h = (r / length) % heads, b = r / (length * heads);
        __syncthreads();  // the previous row's readers of q_row and p are done
        load_row(row_of(Q, b, h, i), qsd, dim, q_row);
        __syncthreads();
        const long long seen = visible_keys(i, keys, causal);
        A best = neg_inf<A>();
        for (long long j = threadIdx.x; j < seen; j += blockDim.x) {
            const A s = dot_row(q_row, row_of(K, b, h, j), ksd, dim) * (A)scale;
            p[j] = s;
            best = s > best ? s : best;
        }
        best = block_max(best, scratch);
        A sum = 0;
        for (long long j = threadIdx.x; j < seen; j += blockDim.x) {
            p[j] = dt_exp(p[j] - best);
            sum += p[j];
        }
        sum = block_sum(sum, scratch);  // its barriers also publish p
        T* out = y + ((b * length + i) * heads + h) * dim_v;
        for (long long d = threadIdx.x; d < dim_v; d += blockDim.x)
            out[d] = from_acc<T>(weighted_sum(p, V, b, h, 0, seen, d) / sum);
        if (threadIdx.x == 0) lse[r] = best + dt_log(sum);
    }
}

// dq (batch, length, heads, dim), `dq_row` elements from one (b, i) row to the next (heads
// * dim, or more when dq shares its rows with dk and dv). stats: (2, batch, heads, length),
// forward's lse, then D, written here for the columns kernel.
template <typename T>
__global__ void attention_backward_rows(
        const T* q, long long qsb, long long qsh, long long qsl, long long qsd,
        const T* k, long long ksb, long long ksh, long long ksl, long long ksd,
        const T* v, long long vsb, long long vsh, long long vsl, long long vsd,
        const T* dy, long long gsb, long long gsh, long long gsl, long long gsd,
        const T* y, typename Acc<T>::type* stats, T* dq, long long dq_row, long long batch,
        long long heads, long long length, long long keys, long long dim, long long dim_v,
        int causal, double scale) {
    typedef typename Acc<T>::type A;
    const A* lse = stats;
    A* D = stats + batch * heads * length;
    __shared__ A q_row[MAX_DIM];
    __shared__ A dy_row[MAX_DIM];
    __shared__ A ds[MAX_LENGTH];
    __shared__ A scratch[32];
    const View<T> Q{q, qsb, qsh, qsl, qsd}, K{k, ksb, ksh, ksl, ksd}, V{v, vsb, vsh, vsl, vsd};
    const View<T> G{dy, gsb, gsh, gsl, gsd};
    const long long rows = batch * heads * length;
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const long long i = r % length, h = (r / length) % heads, b = r / (length * heads);
        __syncthreads();
        load_row(row_of(Q, b, h, i), qsd, dim, q_row);
        load_row(row_of(G, b, h, i), gsd, dim_v, dy_row);
        const T* y_row = y + ((b * length + i) * heads + h) * dim_v;
        A d_part = 0;
        for (long long d = threadIdx.x; d < dim_v; d += blockDim.x)
            d_part += dy_row[d] * to_acc(y_row[d]);  // each thread reads the dims it loaded
        const A d_i = block_sum(d_part, scratch);  // its barriers also publish the rows
        const long long seen = visible_keys(i, keys, causal);
        const A row_lse = lse[r];
        for (long long j = threadIdx.x; j < seen; j += blockDim.x) {
            const A s = dot_row(q_row, row_of(K, b, h, j), ksd, dim) * (A)scale;
            const A prob = dt_exp(s - row_lse);
            const A dp = dot_row(dy_row, row_of(V, b, h, j), vsd, dim_v);
            ds[j] = prob * (dp - d_i) * (A)scale;
        }
        __syncthreads();
        T* out = dq + (b * length + i) * dq_row + h * dim;
        for (long long d = threadIdx.x; d < dim; d += blockDim.x)
            out[d] = from_acc<T>(weighted_sum(ds, K, b, h, 0, seen, d));
        if (threadIdx.x == 0) D[r] = d_i;
    }
}

// dk (batch, keys, heads, dim) at dk + dk_offset, dv (batch, keys, heads, dim_v) at dv +
// dv_offset, with `dk_row` and `dv_row` elements from one (b, j) row to the next (the
// offsets place them in one array with dq, for a split qkv projection). stats: forward's
// lse, then the rows kernel's D.
template <typename T>
__global__ void attention_backward_columns(
        const T* q, long long qsb, long long qsh, long long qsl, long long qsd,
        const T* k, long long ksb, long long ksh, long long ksl, long long ksd,
        const T* v, long long vsb, long long vsh, long long vsl, long long vsd,
        const T* dy, long long gsb, long long gsh, long long gsl, long long gsd,
        const typename Acc<T>::type* stats, T* dk, long long dk_offset, long long dk_row,
        T* dv, long long dv_offset, long long dv_row, long long batch, long long heads,
        long long length, long long keys, long long dim, long long dim_v, int causal,
        double scale) {
    typedef typename Acc<T>::type A;
    const A* lse = stats;
    const A* D = stats + batch * heads * length;
    __shared__ A k_row[MAX_DIM];
    __shared__ A v_row[MAX_DIM];
    __shared__ A p[MAX_LENGTH];
    __shared__ A ds[MAX_LENGTH];
    const View<T> Q{q, qsb, qsh, qsl, qsd}, K{k, ksb, ksh, ksl, ksd}, V{v, vsb, vsh, vsl, vsd};
    const View<T> G{dy, gsb, gsh, gsl, gsd};
    const long long columns = batch * heads * keys;
    for (long long c = blockIdx.x; c < columns; c += gridDim.x) {
        const long long j = c % keys, h = (c / keys) % heads, b = c / (keys * heads);
        __syncthreads();
        load_row(row_of(K, b, h, j), ksd, dim, k_row);
        load_row(row_of(V, b, h, j), vsd, dim_v, v_row);
        __syncthreads();
        const long long first = causal ? j : 0;  // the queries that see key j
        for (long long i = first + threadIdx.x; i < length; i += blockDim.x) {
            const long long r = (b * heads + h) * length + i;
            const A prob = dt_exp(dot_row(k_row, row_of(Q, b, h, i), qsd, dim) * (A)scale - lse[r]);
            const A dp = dot_row(v_row, row_of(G, b, h, i), gsd, dim_v);
            p[i] = prob;
            ds[i] = prob * (dp - D[r]) * (A)scale;
        }
        __syncthreads();
        T* out_v = dv + dv_offset + (b * keys + j) * dv_row + h * dim_v;
        for (long long d = threadIdx.x; d < dim_v; d += blockDim.x)
            out_v[d] = from_acc<T>(weighted_sum(p, G, b, h, first, length, d));
        T* out_k = dk + dk_offset + (b * keys + j) * dk_row + h * dim;
        for (long long d = threadIdx.x; d < dim; d += blockDim.x)
            out_k[d] = from_acc<T>(weighted_sum(ds, Q, b, h, first, length, d));
    }
}
"""
)

SOURCE = register(
    "attention",
    _BODY,
    templated(("attention_forward", "attention_backward_rows", "attention_backward_columns")),
)


def supported(q: Any, k: Any, v: Any) -> bool:
    """Whether the kernels take these (batch, heads, length, dim) operands: one float dtype,
    the same batch and heads, non-empty, and short enough for a block's shared memory."""
    if type_name(q.dtype) is None or not q.dtype == k.dtype == v.dtype:
        return False
    if not q.ndim == k.ndim == v.ndim == 4 or 0 in q.shape or 0 in k.shape or 0 in v.shape:
        return False
    return (
        q.shape[:2] == k.shape[:2] == v.shape[:2]
        and k.shape[2] == v.shape[2]
        and q.shape[3] == k.shape[3]
        and max(q.shape[2], k.shape[2]) <= MAX_LENGTH
        and max(q.shape[3], v.shape[3]) <= MAX_DIM
        and all(stride % q.itemsize == 0 for x in (q, k, v) for stride in x.strides)
    )


def _strided(x: Any) -> tuple:
    """``x`` and its four strides in elements: how the kernels read a (b, h, l, d) operand."""
    return (x, *_element_strides(x.strides, x.itemsize))


# Launch arguments by shape, worked out once: asked at every launch, for a model's few
# shapes (each step's Python calls are host time on a GPU).
@functools.lru_cache(maxsize=256)
def _element_strides(strides: tuple, itemsize: int) -> tuple:
    return tuple(i64(stride // itemsize) for stride in strides)


@functools.lru_cache(maxsize=256)
def _plan(shape: tuple, causal: bool, scale: float) -> tuple:
    """``(rows grid, columns grid, rows block, columns block, sizes)`` for the sizes
    ``(batch, heads, length, keys, dim, dim_v)``; ``sizes`` the trailing launch arguments."""
    batch, heads, length, keys, dim, dim_v = shape
    sizes = (*(i64(n) for n in shape), np.int32(causal), f64(scale))
    grids = [(max(1, min(n, _MAX_GRID)),) for n in (batch * heads * length, batch * heads * keys)]
    return (*grids, row_block(max(keys, dim, dim_v)), row_block(max(length, dim, dim_v)), sizes)


class Saved(NamedTuple):
    """What backward needs from forward besides q, k, v: the output (b, l, h, dv) and
    ``stats`` (2, b, h, l), the rows' log-sum-exp then room for backward's ``D = dy . y``
    (one allocation for both: each costs host time)."""

    y: Any
    stats: Any


@on_array_device
def attention_forward(q: Any, k: Any, v: Any, scale: float, causal: bool) -> tuple[Any, Saved]:
    """``softmax(scale * q kᵀ) v`` for cupy (b, h, l, d) q and (b, h, s, d) k, v of any
    strides; query ``i`` sees keys ``j <= i`` only when ``causal``. Returns the (b, h, l, dv)
    output, a view of a (b, l, h, dv) array, and what backward needs."""
    cupy = require_cupy("attention_forward")
    batch, heads, length, dim = q.shape
    keys, dim_v = k.shape[2], v.shape[3]
    y = cupy.empty((batch, length, heads, dim_v), q.dtype)
    stats = cupy.empty((2, batch, heads, length), acc_dtype(q.dtype))
    fn = kernel(SOURCE, f"attention_forward<{type_name(q.dtype)}>")
    grid, _, block, _, sizes = _plan((batch, heads, length, keys, dim, dim_v), causal, scale)
    args = (*_strided(q), *_strided(k), *_strided(v), y, stats, *sizes)
    launch(fn, grid, block, args)
    return y.transpose(0, 2, 1, 3), Saved(y, stats)


def _thirds_of_one_array(q: Any, k: Any, v: Any) -> bool:
    """Whether (b, h, l, d) q, k and v are the heads of the first, second and third part of
    the rows of one contiguous (b, l, 3 * h * d) array: a qkv projection split in three, as
    in a GPT block. Their gradients then go to the same places of one such array, which is
    the gradient of the projection's output as it is (no launch to gather the three)."""
    if not q.shape == k.shape == v.shape:
        return False
    _, heads, length, dim = q.shape
    item, row = q.itemsize, 3 * heads * dim
    strides = (length * row * item, dim * item, row * item, item)
    if not q.strides == k.strides == v.strides == strides:
        return False
    step = heads * dim * item
    return k.data.ptr - q.data.ptr == step and v.data.ptr - k.data.ptr == step


@on_array_device
def attention_backward(
    grad: Any, q: Any, k: Any, v: Any, saved: Saved, scale: float, causal: bool
) -> tuple[Any, Any, Any]:
    """The gradients of ``attention_forward``'s output ``grad`` (b, h, l, dv, any strides)
    with respect to q, k and v: (b, h, ., .) views of (b, ., h, .) arrays, or, when q, k
    and v are the thirds of one array's rows, of one (b, l, 3 * h * d) array laid out as it."""
    cupy = require_cupy("attention_backward")
    batch, heads, length, dim = q.shape
    keys, dim_v = k.shape[2], v.shape[3]
    if grad.dtype != q.dtype:
        grad = grad.astype(q.dtype)
    packed = _thirds_of_one_array(q, k, v)
    if packed:  # one array; dk and dv at offsets in its rows, passed to the kernel
        dq = dk = dv = cupy.empty((batch, length, 3 * heads * dim), q.dtype)
        row = i64(3 * heads * dim)
        rows, offsets = (row, row, row), (i64(heads * dim), i64(2 * heads * dim))
    else:
        dq = cupy.empty((batch, length, heads, dim), q.dtype)
        dk = cupy.empty((batch, keys, heads, dim), q.dtype)
        dv = cupy.empty((batch, keys, heads, dim_v), q.dtype)
        rows, offsets = (i64(heads * dim), i64(heads * dim), i64(heads * dim_v)), (i64(0),) * 2
    operands = (*_strided(q), *_strided(k), *_strided(v), *_strided(grad))
    grids = _plan((batch, heads, length, keys, dim, dim_v), causal, scale)
    sizes = grids[4]
    name = type_name(q.dtype)
    fn = kernel(SOURCE, f"attention_backward_rows<{name}>")
    args = (*operands, saved.y, saved.stats, dq, rows[0], *sizes)
    launch(fn, grids[0], grids[2], args)
    fn = kernel(SOURCE, f"attention_backward_columns<{name}>")
    args = (*operands, saved.stats, dk, offsets[0], rows[1], dv, offsets[1], rows[2], *sizes)
    launch(fn, grids[1], grids[3], args)
    if packed:  # the three (b, h, l, d) views: 5 views (a view is host time), not 7
        thirds = dq.reshape(batch, length, 3, heads, dim).transpose(2, 0, 3, 1, 4)
        return thirds[0], thirds[1], thirds[2]
    return dq.transpose(0, 2, 1, 3), dk.transpose(0, 2, 1, 3), dv.transpose(0, 2, 1, 3)


# ---- numpy references -----------------------------------------------------------------------
def _probabilities(q: np.ndarray, k: np.ndarray, scale: float, causal: bool) -> np.ndarray:
    scores = q.astype(np.float64) @ np.swapaxes(k.astype(np.float64), -1, -2) * scale
    if causal:
        length, keys = scores.shape[-2:]
        scores = np.where(np.tri(length, keys, dtype=bool), scores, -np.inf)
    scores = scores - scores.max(axis=-1, keepdims=True)
    e = np.exp(scores)
    return e / e.sum(axis=-1, keepdims=True)


def attention_forward_reference(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, causal: bool
) -> np.ndarray:
    """numpy ``attention_forward``'s output (b, h, l, dv), computed in float64."""
    return (_probabilities(q, k, scale, causal) @ v.astype(np.float64)).astype(q.dtype)


def attention_backward_reference(
    grad: np.ndarray, q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, causal: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """numpy ``attention_backward``: (dq, dk, dv), computed in float64."""
    p = _probabilities(q, k, scale, causal)
    g, q64, k64, v64 = (x.astype(np.float64) for x in (grad, q, k, v))
    dv = np.swapaxes(p, -1, -2) @ g
    dp = g @ np.swapaxes(v64, -1, -2)
    ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True)) * scale
    dq, dk = ds @ k64, np.swapaxes(ds, -1, -2) @ q64
    return dq.astype(q.dtype), dk.astype(q.dtype), dv.astype(q.dtype)
