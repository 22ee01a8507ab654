"""Launches per training step on the CUDA paths, counted on the CPU (no GPU needed).

Runs the steps of ``bench/gpu_step.py`` (the small MLP with SGD, an MLP step under float16
autocast with a GradScaler, the char-GPT with AdamW and clipping) at a small batch, through
``tests/runtime/cuda_emulator.py``: a numpy-backed stand-in for cupy under which every op
takes its CUDA branch, each kernel is checked against its signature and carried out by its
numpy reference, and every call a GPU would run is counted. A launch costs host time (about
20 µs in cupy), so on a small model the count is the step's host cost; ``bench/gpu_step.py``
times the same steps on a GPU.

    python bench/emulated_launches.py
    python bench/emulated_launches.py --json launches.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests" / "runtime")]

import pytest  # noqa: E402 - the emulator installs itself with pytest's MonkeyPatch
from cuda_emulator import Emulator, install  # noqa: E402

import dtrain as dt  # noqa: E402
import dtrain.nn.functional as F  # noqa: E402
from dtrain import nn  # noqa: E402


def mlp_step() -> tuple:
    """bench/gpu_step.py's mlp-small: MLP 784-1024-1024-10 (batch 8 here), SGD."""
    layers: list = []
    for a, b in itertools.pairwise((784, 1024, 1024, 10)):
        layers += [nn.Linear(a, b), nn.ReLU()]
    model = nn.Sequential(*layers[:-1]).to("cuda")
    optimizer = dt.optim.SGD(model.parameters(), lr=0.01)
    rng = np.random.default_rng(0)
    x = dt.tensor(rng.standard_normal((8, 784)).astype(np.float32), device="cuda")
    y = dt.tensor(rng.integers(0, 10, 8), device="cuda")

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    return step, None


def fp16_step() -> tuple:
    """bench/gpu_step.py's fp16 step (there on the large MLP; the count of launches does
    not depend on the sizes): an MLP 784-1024-1024-10 (batch 8 here) under
    ``autocast(float16)`` with a ``GradScaler``, SGD."""
    layers: list = []
    for a, b in itertools.pairwise((784, 1024, 1024, 10)):
        layers += [nn.Linear(a, b), nn.ReLU()]
    model = nn.Sequential(*layers[:-1]).to("cuda")
    optimizer = dt.optim.SGD(model.parameters(), lr=0.01)
    scaler = dt.amp.GradScaler("cuda")
    rng = np.random.default_rng(0)
    x = dt.tensor(rng.standard_normal((8, 784)).astype(np.float32), device="cuda")
    y = dt.tensor(rng.integers(0, 10, 8), device="cuda")

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with dt.autocast("cuda", dtype=dt.float16):
            loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return step, "the scaler's one read of its inf flag"


def gpt_step() -> tuple:
    """bench/gpu_step.py's gpt: the char-GPT (96, 64, 96, 3 blocks, 4 heads; batch 2 here),
    AdamW and clipping, reading the loss as the example does."""
    import step_gpt
    from harness import import_example

    char_gpt = import_example("char_gpt")
    dt.manual_seed(0)
    model = char_gpt.GPT(96, 64, 96, 3, 4, dropout=0.0).to("cuda")
    windows = np.random.default_rng(1).integers(0, 96, size=(2, 65))
    x = dt.tensor(windows[:, :-1].copy(), device="cuda")
    y = dt.tensor(windows[:, 1:].copy(), device="cuda")
    step = step_gpt.Step(model, dt, F, dt.nn.utils.clip_grad_norm_)
    return (lambda: step(x, y)), "the loss read back (.item())"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="also write the counts here")
    args = parser.parse_args(argv)
    patcher = pytest.MonkeyPatch()
    emulator = install(patcher)
    results = {}
    try:
        for name, make in (("mlp-small", mlp_step), ("mlp-fp16", fp16_step), ("gpt", gpt_step)):
            step, reads = make()
            for _ in range(2):  # optimizer state, caches
                step()
            with emulator.counting() as counts:
                step()
            total = Emulator.total(counts)
            results[name] = {"launches": total, "by_kind": dict(counts.most_common())}
            print(f"\n## {name}: {total} launches per step" + (f"; plus {reads}" if reads else ""))
            for kind, n in counts.most_common():
                print(f"{n:5d}  {kind}")
    finally:
        patcher.undo()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
