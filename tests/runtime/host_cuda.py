"""dtrain's CUDA C kernel sources compiled with g++ and run on the CPU, thread by thread.

The kernels' numpy references say what a kernel should compute; this runs what the CUDA C
actually computes, without a GPU, so an indexing slip, a missed element, a wrong barrier or
a bad half conversion shows up in CI rather than on the lent GPU machine.

How: each registered source (``dtrain.runtime.kernels``) is compiled as C++17 after a shim
(``SHIM``) that defines CUDA's qualifiers, ``threadIdx``/``blockIdx``/``blockDim``/
``gridDim`` and the intrinsics the sources use. A launch runs the grid's blocks one after
another; a block's threads are fibers (``ucontext``) on one OS thread, switched at each
``__syncthreads()``, so a barrier means what it means on a GPU: every thread of the block
reaches it before any goes on. ``__shared__`` variables are ``static``, one copy that the
block's threads share. ``__shfl_down_sync`` is an exchange through a buffer between two
barriers, which is exact when every thread of the block calls it (the block reductions of
the prelude require that anyway). A block whose threads split between a barrier and the
kernel's end is an error, as it would hang or misbehave on a GPU.

What it cannot show: speed, races between blocks (blocks run in order) and within a warp
(fibers switch only at barriers), and anything NVRTC accepts but g++ does not, or the
reverse (``test_kernels.py`` compiles every source with nvcc as well).

    launch(source, "layer_norm_forward<float>", grid, block, args)

``args`` as the kernel wrappers pass them to cupy: arrays (anything with
``__array_interface__``, read and written in place), numpy scalars of the kernel's C types,
and one-element ``LIST_DTYPE`` arrays passed by value.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from dtrain.runtime.kernels.build import OPTIONS, KernelSource

SHIM = r"""
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>
#include <ucontext.h>

struct dim3 { unsigned x, y, z; };
namespace dt_host {
dim3 thread_index, block_index, block_dim, grid_dim;
}
#define threadIdx dt_host::thread_index
#define blockIdx dt_host::block_index
#define blockDim dt_host::block_dim
#define gridDim dt_host::grid_dim
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __restrict__ __restrict

using std::exp; using std::log; using std::sqrt; using std::erf; using std::tanh;
using std::fabs; using std::isnan;
template <typename T> inline T min(T a, T b) { return b < a ? b : a; }
template <typename T> inline T max(T a, T b) { return a < b ? b : a; }
inline float rsqrtf(float v) { return 1.0f / std::sqrt(v); }
inline double rsqrt(double v) { return 1.0 / std::sqrt(v); }

inline _Float16 dt_host_half(unsigned short bits) {
    _Float16 h; std::memcpy(&h, &bits, 2); return h;
}
inline unsigned short dt_host_half_bits(_Float16 h) {
    unsigned short bits; std::memcpy(&bits, &h, 2); return bits;
}
inline int __float_as_int(float v) { int i; std::memcpy(&i, &v, 4); return i; }
inline float __int_as_float(int i) { float v; std::memcpy(&v, &i, 4); return v; }
inline long long __double_as_longlong(double v) { long long i; std::memcpy(&i, &v, 8); return i; }
inline double __longlong_as_double(long long i) { double v; std::memcpy(&v, &i, 8); return v; }
// One OS thread runs every CUDA thread, and switches only at barriers: plain updates are
// atomic here.
template <typename T> inline T atomicAdd(T* address, T value) {
    T old = *address; *address = old + value; return old;
}

namespace dt_host {
enum State { RUNNING, AT_BARRIER, FINISHED };
struct Fiber { ucontext_t context; State state; dim3 index; };
const size_t STACK_BYTES = 256 * 1024;
std::vector<Fiber> fibers;
std::vector<char*> stacks;
int current = 0;
ucontext_t scheduler;
std::function<void()> body;
std::string error;
alignas(16) unsigned char exchange[1024 * 8];

void fiber_main() {
    body();
    fibers[current].state = FINISHED;
    swapcontext(&fibers[current].context, &scheduler);
}

void barrier() {
    fibers[current].state = AT_BARRIER;
    swapcontext(&fibers[current].context, &scheduler);
}

int linear(dim3 i) { return (int)(i.x + block_dim.x * (i.y + block_dim.y * i.z)); }

// Runs one block: every fiber until it reaches a barrier or the end, round after round.
bool run_block() {
    const int n = (int)(block_dim.x * block_dim.y * block_dim.z);
    while ((int)stacks.size() < n) stacks.push_back(static_cast<char*>(std::malloc(STACK_BYTES)));
    fibers.assign(n, Fiber());
    for (int t = 0; t < n; ++t) {
        Fiber& f = fibers[t];
        f.index = dim3{t % block_dim.x, (t / block_dim.x) % block_dim.y,
                       t / (block_dim.x * block_dim.y)};
        f.state = RUNNING;
        getcontext(&f.context);
        f.context.uc_stack.ss_sp = stacks[t];
        f.context.uc_stack.ss_size = STACK_BYTES;
        f.context.uc_link = nullptr;
        makecontext(&f.context, fiber_main, 0);
    }
    for (;;) {
        int finished = 0, waiting = 0;
        for (int t = 0; t < n; ++t) {
            if (fibers[t].state == FINISHED) { ++finished; continue; }
            fibers[t].state = RUNNING;
            current = t;
            thread_index = fibers[t].index;
            swapcontext(&scheduler, &fibers[t].context);
            if (fibers[t].state == FINISHED) ++finished; else ++waiting;
        }
        if (finished == n) return true;
        if (finished > 0) {
            error = "block (" + std::to_string(block_index.x) + "," +
                    std::to_string(block_index.y) + "): " + std::to_string(waiting) +
                    " threads wait at a barrier that " + std::to_string(finished) +
                    " finished threads never reach";
            return false;
        }
    }
}

int launch(dim3 grid, dim3 block, std::function<void()> kernel) {
    if (block.x * block.y * block.z > 1024) {
        error = "more than 1024 threads in a block";
        return 1;
    }
    body = kernel;
    grid_dim = grid;
    block_dim = block;
    error.clear();
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) {
                block_index = dim3{x, y, z};
                if (!run_block()) return 1;
            }
    return 0;
}

template <typename... P, size_t... I>
void call(void (*kernel)(P...), void** args, std::index_sequence<I...>) {
    kernel(*reinterpret_cast<std::remove_cv_t<std::remove_reference_t<P>>*>(args[I])...);
}

template <typename... P>
int launch_kernel(void (*kernel)(P...), const unsigned* dims, void** args) {
    return launch(dim3{dims[0], dims[1], dims[2]}, dim3{dims[3], dims[4], dims[5]},
                  [=] { call(kernel, args, std::index_sequence_for<P...>{}); });
}
}  // namespace dt_host

inline void __syncthreads() { dt_host::barrier(); }
// Blocks run one after another on one OS thread: every write is already seen by all.
inline void __threadfence() {}

// Every thread of the block must call it (see the module docstring).
template <typename T> inline T __shfl_down_sync(unsigned mask, T value, int offset) {
    (void)mask;
    const int t = dt_host::linear(threadIdx);
    std::memcpy(dt_host::exchange + 8 * t, &value, sizeof(T));
    dt_host::barrier();
    const int source = (t % 32) + offset < 32 ? t + offset : t;
    T out;
    std::memcpy(&out, dt_host::exchange + 8 * source, sizeof(T));
    dt_host::barrier();
    return out;
}

extern "C" const char* dt_host_error() { return dt_host::error.c_str(); }
"""

_libraries: dict[str, tuple[ctypes.CDLL, dict[str, Any]]] = {}


def compiler() -> str | None:
    """The C++ compiler used (g++ or c++ on PATH), or None."""
    return shutil.which("g++") or shutil.which("c++")


def _cache_dir() -> Path:
    path = Path(tempfile.gettempdir()) / f"dtrain-host-cuda-{os.getuid()}"
    path.mkdir(exist_ok=True)
    return path


def _build(source: KernelSource) -> tuple[ctypes.CDLL, dict[str, Any]]:
    """The source compiled with one ``extern "C"`` entry per instantiation (cached on disk by
    the hash of everything that goes into it)."""
    entries = {expr: f"dt_launch_{i}" for i, expr in enumerate(source.name_expressions)}
    wrappers = "".join(
        f'extern "C" int {entry}(const unsigned* dims, void** args) {{\n'
        f"    return dt_host::launch_kernel(&{expr}, dims, args);\n}}\n"
        for expr, entry in entries.items()
    )
    text = "#define DTRAIN_HOST_CUDA 1\n" + SHIM + source.code + "\n" + wrappers
    digest = hashlib.sha256(text.encode()).hexdigest()[:20]
    library = _cache_dir() / f"{source.name}-{digest}.so"
    if not library.exists():
        cxx = compiler()
        if cxx is None:
            raise RuntimeError("host_cuda needs a C++ compiler (g++) on PATH")
        code = library.with_suffix(".cpp")
        code.write_text(text)
        partial = library.with_suffix(f".{os.getpid()}.tmp")
        command = [cxx, *OPTIONS, "-O1", "-fPIC", "-shared", "-w", str(code), "-o", str(partial)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"g++ failed on kernel source {source.name}:\n{result.stderr}")
        os.replace(partial, library)
    lib = ctypes.CDLL(str(library))
    lib.dt_host_error.restype = ctypes.c_char_p
    functions = {}
    for expr, entry in entries.items():
        function = getattr(lib, entry)
        function.argtypes = [ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_void_p)]
        function.restype = ctypes.c_int
        functions[expr] = function
    return lib, functions


def _address(arg: Any, keep: list) -> int:
    """Where the kernel reads argument ``arg``'s value: for an array, a slot holding its data
    pointer; for a scalar or a by-value struct, its own bytes."""
    if isinstance(arg, np.ndarray) and arg.dtype.names is None:
        slot = ctypes.c_void_p(arg.__array_interface__["data"][0])
        keep.append(slot)
        return ctypes.addressof(slot)
    if isinstance(arg, np.ndarray):  # a one-element struct array, passed by value
        value = np.ascontiguousarray(arg.view(np.ndarray)).reshape(())
    elif isinstance(arg, np.generic):
        value = np.array(arg)
    else:
        raise TypeError(f"kernel argument of type {type(arg).__name__}: pass an array or a "
                        "numpy scalar of the kernel's C type")  # fmt: skip
    keep.append(value)
    return value.__array_interface__["data"][0]


def launch(source: KernelSource, expression: str, grid: tuple, block: Any, args: tuple) -> None:
    """Run kernel ``expression`` of ``source`` over ``grid`` x ``block`` on the CPU."""
    if source.name not in _libraries:
        _libraries[source.name] = _build(source)
    lib, functions = _libraries[source.name]
    grid3 = (tuple(grid) + (1, 1, 1))[:3]
    block3 = ((tuple(block) if isinstance(block, tuple) else (block,)) + (1, 1, 1))[:3]
    dims = (ctypes.c_uint * 6)(*grid3, *block3)
    keep: list = []
    pointers = (ctypes.c_void_p * max(1, len(args)))(*(_address(a, keep) for a in args))
    if functions[expression](dims, pointers) != 0:
        raise RuntimeError(f"{expression}: {lib.dt_host_error().decode()}")
