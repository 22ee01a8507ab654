"""Host time per call on a GPU: what one op costs before the GPU does any work.

A small model's eager step is bound by the host, so the figure that decides it is the host
time per launch. This times calls whose GPU work is negligible (1024 elements, 64 x 64
products), back to back, and prints µs per call: cupy's calls that launch nothing (an
allocation, a view, a Device object, a device switch), cupy's own dispatch (a ufunc, a fill,
a reduction), dtrain's layers below the ops (a fused kernel's launch, a cuBLAS and a cuBLASLt
product), dtrain's ops on tensors with and without autograd recording, and the same ops in
PyTorch.
``bench/gpu_check.sh`` runs it after ``bench/gpu_step.py``.

    python bench/gpu_dispatch.py
    python bench/gpu_dispatch.py --calls 500 --rounds 7 --json dispatch.json

Each figure is the median over ``--rounds`` of (``--calls`` calls queued back to back, then
one synchronisation) divided by ``--calls``; with 200 calls the closing synchronisation
adds about 0.1 µs per call.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import dtrain as dt
import dtrain.nn.functional as F
from dtrain.runtime import cublas, cublaslt
from dtrain.runtime import kernels as K

try:
    import torch
except ImportError:  # the baseline only
    torch = None

ELEMENTS = 1024
SIDE = 64


def _sync() -> None:
    dt.cuda.synchronize()
    if torch is not None and torch.cuda.is_available():
        torch.cuda.synchronize()


def per_call_us(call: Callable[[], Any], calls: int, rounds: int, warmup: int) -> float:
    """Median over ``rounds`` of the µs per call of ``calls`` calls and one sync."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(rounds):
        _sync()
        start = time.perf_counter()
        for _ in range(calls):
            call()
        _sync()
        times.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(times)


def dtrain_calls() -> dict[str, Callable[[], Any]]:
    """The dtrain and cupy calls, by name."""
    import cupy

    rng = np.random.default_rng(0)
    vector = [cupy.asarray(rng.standard_normal(ELEMENTS).astype(np.float32)) for _ in range(2)]
    square = [cupy.asarray(rng.standard_normal((SIDE, SIDE)).astype(np.float32)) for _ in range(2)]
    bias = cupy.asarray(rng.standard_normal(SIDE).astype(np.float32))
    a, b = (dt.tensor(v.get(), device="cuda") for v in vector)
    ga, gb = (dt.tensor(v.get(), device="cuda", requires_grad=True) for v in vector)
    x, w = (dt.tensor(m.get(), device="cuda") for m in square)
    wb = dt.tensor(bias.get(), device="cuda")
    gx, gw, gwb = (t.detach().requires_grad_() for t in (x, w, wb))
    # "recorded": inputs that require grad, so the op also records its node (dropped at
    # once with its output, as a loop drops the last step's graph)
    device = cupy.cuda.Device()

    def switch() -> None:
        with device:
            pass

    return {
        # what costs host time without a launch (bench/host_cost.py counts these per step)
        "cupy empty (pool allocation and free)": lambda: cupy.empty(ELEMENTS, np.float32),
        "cupy reshape (a view)": lambda: square[0].reshape(-1),
        "cupy a[0] (a view)": lambda: square[0][0],
        "cupy .T (a view)": lambda: square[0].T,
        "cupy .device (a Device object)": lambda: square[0].device,
        "cupy .flags.c_contiguous": lambda: square[0].flags.c_contiguous,
        "cupy with device: (a switch)": switch,
        "cupy a + b (ufunc)": lambda: vector[0] + vector[1],
        "cupy fill": lambda: vector[0].fill(0),
        "cupy sum over axis 0 (reduction)": lambda: square[0].sum(axis=0),
        "dtrain kernel launch (relu_backward)": lambda: K.relu_backward(vector[0], vector[1]),
        "dtrain cuBLAS product": lambda: cublas.matmul(square[0], square[1]),
        "dtrain cuBLASLt product + bias": lambda: cublaslt.matmul_bias(square[0], square[1], bias),
        "dtrain tensor a + b": lambda: a + b,
        "dtrain tensor a + b, recorded": lambda: ga + gb,
        "dtrain F.linear": lambda: F.linear(x, w, wb),
        "dtrain F.linear, recorded": lambda: F.linear(gx, gw, gwb),
        "dtrain F.relu, recorded": lambda: F.relu(ga),
        "dtrain tensor sum(0)": lambda: x.sum(0),
    }


def torch_calls() -> dict[str, Callable[[], Any]]:
    """The same tensor-level calls in PyTorch, by the dtrain name they stand beside."""
    if torch is None or not torch.cuda.is_available():
        return {}
    rng = np.random.default_rng(0)
    a, b = (torch.from_numpy(rng.standard_normal(ELEMENTS).astype(np.float32)).cuda() for _ in "ab")
    ga, gb = (t.clone().requires_grad_() for t in (a, b))
    x, w = (
        torch.from_numpy(rng.standard_normal((SIDE, SIDE)).astype(np.float32)).cuda() for _ in "xw"
    )
    wb = torch.from_numpy(rng.standard_normal(SIDE).astype(np.float32)).cuda()
    gx, gw, gwb = (t.clone().requires_grad_() for t in (x, w, wb))
    linear = torch.nn.functional.linear
    return {
        "dtrain tensor a + b": lambda: a + b,
        "dtrain tensor a + b, recorded": lambda: ga + gb,
        "dtrain F.linear": lambda: linear(x, w, wb),
        "dtrain F.linear, recorded": lambda: linear(gx, gw, gwb),
        "dtrain F.relu, recorded": lambda: torch.relu(ga),
        "dtrain tensor sum(0)": lambda: x.sum(0),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    if not dt.cuda.is_available():
        print("no CUDA device: this benchmark runs on the GPU machine (bench/gpu_check.sh)")
        return 2
    ours, theirs = dtrain_calls(), torch_calls()
    results: dict[str, dict] = {}
    print(f"\n## dispatch: host µs per call ({ELEMENTS} elements, {SIDE}x{SIDE} products)")
    print(f"{'call':<40} {'dtrain':>8} {'torch':>8} {'ratio':>7}")
    for name, call in ours.items():
        try:
            mine = per_call_us(call, args.calls, args.rounds, args.warmup)
            other = theirs.get(name)
            base = per_call_us(other, args.calls, args.rounds, args.warmup) if other else None
        except Exception as exc:  # one failing call must not hide the others' figures
            print(f"{name:<40} FAILED: {type(exc).__name__}: {exc}")
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        results[name] = {"dtrain_us": mine, "torch_us": base}
        torch_text = f"{base:8.1f} {mine / base:6.2f}x" if base else f"{'-':>8} {'-':>7}"
        print(f"{name:<40} {mine:8.1f} {torch_text}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
