"""Time dtrain's conv2d, conv_transpose2d and max_pool2d (forward + backward) against
PyTorch on the CPU.

The layers of a small CNN for the 8x8 digits: batch 64, 3x3 convolutions with padding 1
taking 1 → 16 and 16 → 32 channels, 2x2 max pooling, and the whole block
conv → relu → pool → conv → relu → pool. Then two DCGAN-sized layers, batch 64, kernel 4,
stride 2, padding 1: the discriminator's conv 256 → 512 channels (8x8 → 4x4) and the
generator's transposed conv 512 → 256 (4x4 → 8x8); these run ``steps // 40`` steps (at
least 2) with 1 warmup step. Then depthwise 3x3 convolutions (``groups`` = channels, the
tap route of tensor/nn/functional/conv_taps.py), batch 32: 64 channels on 16x16 and 32
channels on 32x32 at stride 2; and two convolutions whose im2col columns are recomputed in
backward instead of kept (``RECOMPUTE_BYTES`` in tensor/nn/functional/conv.py): 3x3 64 → 64
on 32x32, batch 32, and 3x3x3 16 → 16 on 16^3, batch 4. Each case runs forward and backward
(gradients of input, weight and bias) in float32; the table shows median microseconds and
dtrain / torch.

A second table gives the memory of the last three cases (and of the depthwise one) with the
columns kept, as before, and as now: tracemalloc's bytes alive after forward (what the graph
keeps for backward) and its peak over forward + backward, in MB (torch's are not traced).

    python bench/conv_pool.py                 # defaults: 200 steps, all CPUs
    python bench/conv_pool.py --threads 1 --steps 500
    python bench/conv_pool.py --case depthwise --case 64->64
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tracemalloc
from collections.abc import Callable

import numpy as np
from harness import cpu_name, set_numpy_threads, time_variants

import dtrain as dt
from dtrain._tensor.nn.functional import conv as conv_module
from dtrain._tensor.nn.functional import conv_taps
from dtrain._tensor.nn.functional.conv import conv2d
from dtrain._tensor.nn.functional.conv_transpose import conv_transpose2d
from dtrain._tensor.nn.functional.pooling import max_pool2d

try:
    import torch
except ImportError:  # torch is the baseline; without it there is nothing to compare
    torch = None

BATCH = 64
#: Cases this slow (hundreds of ms a step) run fewer steps.
HEAVY = (
    "conv 256->512 8x8 s2 (DCGAN D)",
    "convT 512->256 4x4 s2 (DCGAN G)",
    "conv 64->64 32x32 p1 (b32)",
    "conv3d 16->16 16^3 p1 (b4)",
)
#: The cases of the memory table: (name, input shape, weight shape, groups).
MEMORY_CASES = (
    ("depthwise 64 16x16 p1 (b32)", (32, 64, 16, 16), (64, 1, 3, 3), 64),
    ("conv 64->64 32x32 p1 (b32)", (32, 64, 32, 32), (64, 64, 3, 3), 1),
    ("conv3d 16->16 16^3 p1 (b4)", (4, 16, 16, 16, 16), (16, 16, 3, 3, 3), 1),
)


def _cases(rng: np.random.Generator) -> dict[str, tuple[Callable, Callable]]:
    """name → (dtrain step, torch step), each a forward + backward on the same data."""
    x1 = rng.standard_normal((BATCH, 1, 8, 8)).astype(np.float32)
    x2 = rng.standard_normal((BATCH, 16, 8, 8)).astype(np.float32)
    w1 = (rng.standard_normal((16, 1, 3, 3)) / 3).astype(np.float32)
    w2 = (rng.standard_normal((32, 16, 3, 3)) / 12).astype(np.float32)
    b1, b2 = np.zeros(16, np.float32), np.zeros(32, np.float32)
    xd = rng.standard_normal((BATCH, 256, 8, 8)).astype(np.float32)
    wd = (rng.standard_normal((512, 256, 4, 4)) / 64).astype(np.float32)
    xg = rng.standard_normal((BATCH, 512, 4, 4)).astype(np.float32)
    wg = (rng.standard_normal((512, 256, 4, 4)) / 64).astype(np.float32)
    bd, bg = np.zeros(512, np.float32), np.zeros(256, np.float32)

    def leaves(module, *arrays):
        if module is dt:
            return [dt.tensor(a, requires_grad=True) for a in arrays]
        return [torch.tensor(a, requires_grad=True) for a in arrays]

    def conv_step(module, conv, x, w, b):
        tx, tw, tb = leaves(module, x, w, b)
        return lambda: conv(tx, tw, tb, padding=1).sum().backward()

    def strided_step(module, conv, x, w, b):
        tx, tw, tb = leaves(module, x, w, b)
        return lambda: conv(tx, tw, tb, stride=2, padding=1).sum().backward()

    def pool_step(module, pool, x):
        (tx,) = leaves(module, x)
        return lambda: pool(tx, 2).sum().backward()

    def block_step(module, conv, pool):
        tx, tw1, tb1, tw2, tb2 = leaves(module, x1, w1, b1, w2, b2)

        def step():
            h = pool(conv(tx, tw1, tb1, padding=1).relu(), 2)
            pool(conv(h, tw2, tb2, padding=1).relu(), 2).sum().backward()

        return step

    def grouped_step(module, conv, shapes, groups, stride=1):
        arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        arrays[1] /= np.float32(np.sqrt(np.prod(shapes[1][1:])))
        tx, tw, tb = leaves(module, *arrays)
        return lambda: conv(tx, tw, tb, stride=stride, padding=1, groups=groups).sum().backward()

    def pair(shapes, groups, stride=1, dims=2):
        ours = dt.nn.functional.conv3d if dims == 3 else conv2d
        theirs = torch.nn.functional.conv3d if dims == 3 else torch.nn.functional.conv2d
        return (
            grouped_step(dt, ours, shapes, groups, stride),
            grouped_step(torch, theirs, shapes, groups, stride),
        )

    tconv, tpool = torch.nn.functional.conv2d, torch.nn.functional.max_pool2d
    return {
        "conv 1->16 8x8": (conv_step(dt, conv2d, x1, w1, b1), conv_step(torch, tconv, x1, w1, b1)),
        "conv 16->32 8x8": (
            conv_step(dt, conv2d, x2, w2, b2),
            conv_step(torch, tconv, x2, w2, b2),
        ),
        "max_pool 2x2 16x8x8": (pool_step(dt, max_pool2d, x2), pool_step(torch, tpool, x2)),
        "block conv-relu-pool x2": (
            block_step(dt, conv2d, max_pool2d),
            block_step(torch, tconv, tpool),
        ),
        HEAVY[0]: (strided_step(dt, conv2d, xd, wd, bd), strided_step(torch, tconv, xd, wd, bd)),
        HEAVY[1]: (
            strided_step(dt, conv_transpose2d, xg, wg, bg),
            strided_step(torch, torch.nn.functional.conv_transpose2d, xg, wg, bg),
        ),
        "depthwise 64 16x16 p1 (b32)": pair(((32, 64, 16, 16), (64, 1, 3, 3), (64,)), 64),
        "depthwise 32 32x32 s2 (b32)": pair(((32, 32, 32, 32), (32, 1, 3, 3), (32,)), 32, 2),
        HEAVY[2]: pair(((32, 64, 32, 32), (64, 64, 3, 3), (64,)), 1),
        HEAVY[3]: pair(((4, 16, 16, 16, 16), (16, 16, 3, 3, 3), (16,)), 1, dims=3),
    }


def _memory(shape: tuple, weight: tuple, groups: int) -> tuple[float, float]:
    """MB alive after forward and peak over forward + backward of one convolution (tracemalloc;
    the input and weight exist before tracing starts)."""
    rng = np.random.default_rng(0)
    x = dt.tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=True)
    w = dt.tensor(rng.standard_normal(weight).astype(np.float32), requires_grad=True)
    conv = dt.nn.functional.conv3d if len(shape) == 5 else conv2d
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    out = conv(x, w, padding=1, groups=groups)
    alive = tracemalloc.get_traced_memory()[0] - base
    out.sum().backward()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return alive / 1e6, peak / 1e6


def memory_table() -> None:
    """The memory table: columns kept for backward (as before) against now."""
    print(
        f"\n{'memory, MB (fwd+bwd, float32)':36} {'kept: alive':>11} {'peak':>7} "
        f"{'now: alive':>11} {'peak':>7}"
    )
    for name, shape, weight, groups in MEMORY_CASES:
        before = conv_module.RECOMPUTE_BYTES
        conv_module.RECOMPUTE_BYTES = 1 << 62  # keep every column: the old behaviour
        taps_before = conv_taps.TAPS_MAX
        conv_taps.TAPS_MAX = 0  # depthwise by the GEMM route, as before
        try:
            kept = _memory(shape, weight, groups)
        finally:
            conv_module.RECOMPUTE_BYTES, conv_taps.TAPS_MAX = before, taps_before
        now = _memory(shape, weight, groups)
        print(f"{name:36} {kept[0]:11.1f} {kept[1]:7.1f} {now[0]:11.1f} {now[1]:7.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument(
        "--case", action="append", default=[], help="run only cases whose name contains this"
    )
    args = parser.parse_args(argv)
    if torch is None:
        print("torch is not installed: nothing to compare against", file=sys.stderr)
        return 1
    blas = set_numpy_threads(args.threads)
    torch.set_num_threads(args.threads)
    print(f"{cpu_name()}; numpy: {blas}; torch {torch.__version__}, {args.threads} threads")
    print(
        f"{'case (fwd+bwd, float32, batch 64)':36} {'dtrain us':>10} {'torch us':>10} {'ratio':>7}"
    )
    for name, (ours, theirs) in _cases(np.random.default_rng(0)).items():
        if args.case and not any(part in name for part in args.case):
            continue
        heavy = name in HEAVY
        steps = max(args.steps // 40, 2) if heavy else args.steps
        times, _ = time_variants(
            {"dtrain": ours, "torch": theirs},
            min(args.warmup, 1) if heavy else args.warmup,
            steps,
            min(args.rounds, steps),
            False,
        )
        mine = statistics.median(times["dtrain"]) * 1e6
        base = statistics.median(times["torch"]) * 1e6
        print(f"{name:36} {mine:10.0f} {base:10.0f} {mine / base:7.2f}")
    memory_table()
    return 0


if __name__ == "__main__":
    sys.exit(main())
