"""Time dtrain's LSTM and GRU layers (forward + backward) against PyTorch on the CPU.

Each case is ``nn.LSTM`` / ``nn.GRU`` with input 128, hidden 256, 2 layers, on a float32
sequence of 100 steps and batch 32 (time-major), forward then ``output.sum().backward()``
(gradients of the input and every weight); the packed case runs the LSTM on a
``PackedSequence`` of 32 sequences of lengths 100 down to 38. Both libraries start from
the same weights, and before timing the outputs are checked to agree. The table shows the
median milliseconds per step and dtrain / torch; without PyTorch only dtrain's times print.

    python bench/step_rnn.py                  # defaults: 12 steps in 3 rounds, all CPUs
    python bench/step_rnn.py --threads 1 --steps 20
    python bench/step_rnn.py --profile 3      # also cProfile 3 dtrain LSTM steps
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
from harness import cpu_name, profile, relative_error, set_numpy_threads, time_variants

import dtrain as dt
import dtrain.nn
from dtrain.nn.utils.rnn import pack_padded_sequence

try:
    import torch
except ImportError:  # torch is an optional baseline
    torch = None

LENGTH, BATCH, INPUT, HIDDEN, LAYERS = 100, 32, 128, 256, 2


def _lengths() -> list[int]:
    return list(range(LENGTH, LENGTH - 2 * BATCH, -2))


def _case(library: Any, kind: str, packed: bool, x: np.ndarray, state: dict | None) -> tuple:
    """(module, step): the module's state is loaded from ``state`` when given; the step runs
    forward + backward and returns the output as numpy."""
    if library is dt:
        dt.manual_seed(0)
        module = getattr(dtrain.nn, kind)(INPUT, HIDDEN, LAYERS)
        if state is not None:
            module.load_state_dict({k: dt.tensor(v) for k, v in state.items()})
        pack = pack_padded_sequence
    else:
        torch.manual_seed(0)
        module = getattr(torch.nn, kind)(INPUT, HIDDEN, LAYERS)
        if state is not None:
            module.load_state_dict({k: torch.tensor(v) for k, v in state.items()})
        pack = torch.nn.utils.rnn.pack_padded_sequence
    inp = library.tensor(x, requires_grad=True)

    def step() -> np.ndarray:
        out = module(pack(inp, _lengths()))[0].data if packed else module(inp)[0]
        out.sum().backward()
        return out.detach().numpy()

    return module, step


def _cases() -> dict[str, tuple[Callable, Callable | None]]:
    x = np.random.default_rng(0).standard_normal((LENGTH, BATCH, INPUT)).astype(np.float32)
    cases = {}
    for kind, packed in (("LSTM", False), ("GRU", False), ("LSTM", True)):
        name = f"{kind} {INPUT}->{HIDDEN} x{LAYERS}" + (" packed" if packed else "")
        module, ours = _case(dt, kind, packed, x, None)
        theirs = None
        if torch is not None:
            state = {k: v.numpy().copy() for k, v in module.state_dict().items()}
            _, theirs = _case(torch, kind, packed, x, state)
            error = relative_error(ours(), theirs())
            if error > 1e-4:
                raise RuntimeError(f"{name}: dtrain and torch outputs differ by {error:.2e}")
        cases[name] = (ours, theirs)
    return cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--profile", type=int, default=0, help="cProfile this many LSTM steps")
    args = parser.parse_args(argv)
    blas = set_numpy_threads(args.threads)
    versions = "no torch"
    if torch is not None:
        torch.set_num_threads(args.threads)
        versions = f"torch {torch.__version__}"
    print(f"{cpu_name()}; numpy: {blas}; {versions}, {args.threads} threads")
    print(
        f"{f'case (fwd+bwd, float32, L{LENGTH} N{BATCH})':32} {'dtrain ms':>10} "
        f"{'torch ms':>10} {'ratio':>7}"
    )
    cases = _cases()
    for name, (ours, theirs) in cases.items():
        variants = {"dtrain": ours} if theirs is None else {"dtrain": ours, "torch": theirs}
        times, _ = time_variants(variants, args.warmup, args.steps, args.rounds, False)
        mine = statistics.median(times["dtrain"]) * 1e3
        if theirs is None:
            print(f"{name:32} {mine:10.1f}")
            continue
        base = statistics.median(times["torch"]) * 1e3
        print(f"{name:32} {mine:10.1f} {base:10.1f} {mine / base:7.2f}")
    if args.profile:
        print(profile(next(iter(cases.values()))[0], args.profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
