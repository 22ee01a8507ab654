"""Time an embedding lookup's forward + backward in dtrain against hand-written numpy
(``table[idx]``, then ``np.add.at`` for the gradient) and PyTorch on the CPU.

Cases: a character model's table (65 rows: long runs of equal indices), a GPT-2 table
(50257 rows: mostly distinct) and a mid-sized one, float32, each ``F.embedding(idx,
weight).sum().backward()``. The gradients of all three are checked to agree first. The
table shows median milliseconds per step and the ratios to numpy and torch.

    python bench/embedding.py                     # defaults: 15 steps in 3 rounds
    python bench/embedding.py --threads 1 --steps 30
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
from harness import cpu_name, relative_error, set_numpy_threads, time_variants

import dtrain as dt

try:
    import torch
except ImportError:  # torch is an optional baseline
    torch = None

CASES = ((65, 8192, 128), (10000, 50000, 64), (50257, 8192, 256))  # rows, lookups, width


def _steps(rows: int, lookups: int, width: int) -> dict[str, Callable[[], Any]]:
    rng = np.random.default_rng(0)
    index = rng.integers(0, rows, lookups)
    table = rng.standard_normal((rows, width)).astype(np.float32)

    def numpy_step() -> np.ndarray:
        out = table[index]
        grad = np.zeros_like(table)
        np.add.at(grad, index, np.ones_like(out))
        return grad

    weight, ids = dt.tensor(table, requires_grad=True), dt.tensor(index)

    def dtrain_step() -> np.ndarray:
        weight.grad = None
        dt.nn.functional.embedding(ids, weight).sum().backward()
        return weight.grad.numpy()

    steps = {"numpy": numpy_step, "dtrain": dtrain_step}
    if torch is not None:
        t_weight, t_ids = torch.tensor(table, requires_grad=True), torch.tensor(index)

        def torch_step() -> np.ndarray:
            t_weight.grad = None
            torch.nn.functional.embedding(t_ids, t_weight).sum().backward()
            return t_weight.grad.numpy()

        steps["torch"] = torch_step
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args(argv)
    blas = set_numpy_threads(args.threads)
    versions = "no torch"
    if torch is not None:
        torch.set_num_threads(args.threads)
        versions = f"torch {torch.__version__}"
    print(f"{cpu_name()}; numpy: {blas}; {versions}, {args.threads} threads")
    print(
        f"{'rows x lookups x width':24} {'numpy ms':>9} {'dtrain ms':>10} {'torch ms':>9} "
        f"{'/numpy':>7} {'/torch':>7}"
    )
    for rows, lookups, width in CASES:
        steps = _steps(rows, lookups, width)
        reference = steps["numpy"]()
        for name, step in steps.items():
            error = relative_error(step(), reference)
            if error > 1e-5:
                raise RuntimeError(f"{name}'s gradient differs from numpy's by {error:.2e}")
        times, _ = time_variants(steps, args.warmup, args.steps, args.rounds, False)
        ms = {name: statistics.median(t) * 1e3 for name, t in times.items()}
        line = f"{f'{rows} x {lookups} x {width}':24} {ms['numpy']:9.2f} {ms['dtrain']:10.2f}"
        if "torch" in ms:
            line += f" {ms['torch']:9.2f} {ms['dtrain'] / ms['numpy']:7.2f}"
            line += f" {ms['dtrain'] / ms['torch']:7.2f}"
        else:
            line += f" {'-':>9} {ms['dtrain'] / ms['numpy']:7.2f} {'-':>7}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
