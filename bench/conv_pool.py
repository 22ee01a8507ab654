"""Time dtrain's conv2d, conv_transpose2d and max_pool2d (forward + backward) against
PyTorch on the CPU.

The layers of a small CNN for the 8x8 digits: batch 64, 3x3 convolutions with padding 1
taking 1 → 16 and 16 → 32 channels, 2x2 max pooling, and the whole block
conv → relu → pool → conv → relu → pool. Then two DCGAN-sized layers, batch 64, kernel 4,
stride 2, padding 1: the discriminator's conv 256 → 512 channels (8x8 → 4x4) and the
generator's transposed conv 512 → 256 (4x4 → 8x8); these run ``steps // 40`` steps (at
least 2) with 1 warmup step. Each case runs forward and backward (gradients of input,
weight and bias) in float32; the table shows median microseconds and dtrain / torch.

    python bench/conv_pool.py                 # defaults: 200 steps, all CPUs
    python bench/conv_pool.py --threads 1 --steps 500
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Callable

import numpy as np
from harness import cpu_name, set_numpy_threads, time_variants

import dtrain as dt
from dtrain._tensor.nn.functional.conv import conv2d
from dtrain._tensor.nn.functional.conv_transpose import conv_transpose2d
from dtrain._tensor.nn.functional.pooling import max_pool2d

try:
    import torch
except ImportError:  # torch is the baseline; without it there is nothing to compare
    torch = None

BATCH = 64
#: Cases this slow (hundreds of ms a step) run fewer steps.
HEAVY = ("conv 256->512 8x8 s2 (DCGAN D)", "convT 512->256 4x4 s2 (DCGAN G)")


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
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
