"""Time one training step of the digits CNN in dtrain against the same network in PyTorch.

The model is ``examples/cnn_digits.build_model(16)``: conv 3x3 (1 → 16) → batch norm → ReLU →
max-pool 2 → conv 3x3 (16 → 32) → batch norm → ReLU → max-pool 2 → flatten → linear (128 →
10). One step, as the example trains: ``loss = CrossEntropyLoss(label_smoothing=0.05)(model(x),
y)``, ``optimizer.zero_grad()``, ``loss.backward()``, ``optimizer.step()`` with Adam (lr 2e-3),
``loss.item()``, on a batch of 64 random 1x8x8 images, float32.

The torch model is the same architecture written with ``torch.nn``; it starts from dtrain's
weights and buffers (``load_state_dict``). Before timing, the script checks that both give the
same loss and gradients on the first step and the same loss after a few Adam steps. Each
variant then runs ``--steps`` timed steps in ``--rounds`` blocks that the variants take turns
at (see bench/harness.py).

    python bench/step_cnn.py                   # defaults: 200 steps, all CPUs
    python bench/step_cnn.py --threads 1
    python bench/step_cnn.py --profile 50      # also cProfile 50 dtrain steps

Page faults: the table counts minor page faults per step. Arrays freed by one step that glibc
gives back to the OS are mapped afresh by the next, and dtrain's many temporaries make this a
large share of its step; ``MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=1073741824
python bench/<script>.py`` keeps freed memory in the heap and shows the step without them.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
from harness import (
    LoadMeter,
    cpu_name,
    import_example,
    print_timings,
    profile,
    relative_error,
    set_numpy_threads,
    time_variants,
    to_torch_state,
)

import dtrain as dt

try:
    import torch
except ImportError:  # torch is the baseline; without it there is nothing to compare
    torch = None

BATCH = 64
CLASSES = 10
LEARNING_RATE = 2e-3
LABEL_SMOOTHING = 0.05
CHECK_STEPS = 3  # Adam steps before the second loss comparison


def torch_cnn(channels: int) -> Any:
    """examples/cnn_digits.build_model, written with torch.nn (same layer order and names)."""
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, channels, 3, padding=1),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(channels, 2 * channels, 3, padding=1),
        nn.BatchNorm2d(2 * channels),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * channels * 4, 10),
    )


class Step:
    """One training step as examples/cnn_digits.py writes it, for either library."""

    def __init__(self, model: Any, nn_module: Any, optim_module: Any) -> None:
        self.model = model
        self.loss_fn = nn_module.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
        self.optimizer = optim_module.Adam(model.parameters(), lr=LEARNING_RATE)

    def __call__(self, x: Any, y: Any) -> float:
        loss = self.loss_fn(self.model(x), y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def loss_and_grads(self, x: Any, y: Any) -> tuple[float, dict[str, np.ndarray]]:
        """The loss and every parameter's gradient, by name, without updating."""
        self.optimizer.zero_grad()
        loss = self.loss_fn(self.model(x), y)
        loss.backward()
        grads = {name: p.grad.numpy().copy() for name, p in self.model.named_parameters()}
        return loss.item(), grads


def make_steps(channels: int, seed: int) -> tuple[Step, Step | None]:
    """The dtrain step on build_model(channels) and the torch step on a copy of its state."""
    cnn_digits = import_example("cnn_digits")
    dt.manual_seed(seed)
    model = cnn_digits.build_model(channels)
    dtrain_step = Step(model, dt.nn, dt.optim)
    if torch is None:
        return dtrain_step, None
    torch_model = torch_cnn(channels)
    torch_model.load_state_dict(to_torch_state(model.state_dict()))
    return dtrain_step, Step(torch_model, torch.nn, torch.optim)


def make_batch(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((BATCH, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, CLASSES, size=BATCH, dtype=np.int64)
    return x, y


def grad_errors(grads: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict:
    """Per parameter: max |difference| / max |reference|, the denominator at least 1 % of the
    largest gradient of all. A conv bias right before batch norm has a gradient of 0 in exact
    arithmetic (the norm subtracts the mean): its float32 value (~1e-8) is rounding noise."""
    floor = 1e-2 * max(float(np.abs(g).max()) for g in reference.values())
    return {
        name: float(np.abs(grads[name] - g).max()) / max(float(np.abs(g).max()), floor)
        for name, g in reference.items()
    }


def check_same_math(args: argparse.Namespace, x: np.ndarray, y: np.ndarray) -> bool:
    """Same loss and gradients on the first step, same loss after ``CHECK_STEPS`` steps."""
    dtrain_step, torch_step = make_steps(args.channels, args.seed)
    dx, dy, tx, ty = dt.tensor(x), dt.tensor(y), torch.from_numpy(x), torch.from_numpy(y)
    loss_d, grads_d = dtrain_step.loss_and_grads(dx, dy)
    loss_t, grads_t = torch_step.loss_and_grads(tx, ty)
    errors = grad_errors(grads_d, grads_t)
    worst = max(errors, key=errors.get)
    grad_error = errors[worst]
    for _ in range(CHECK_STEPS):
        later_d, later_t = dtrain_step(dx, dy), torch_step(tx, ty)
    loss_error = relative_error(loss_d, loss_t)
    later_error = relative_error(later_d, later_t)
    ok = max(loss_error, later_error) <= args.tolerance and grad_error <= args.tolerance
    print(f"check vs torch, same weights and batch, float32 (tolerance {args.tolerance:g}):")
    print(f"  first step: loss {loss_d:.6f} (torch {loss_t:.6f}, rel err {loss_error:.0e})")
    print(f"  first step: grads max rel err {grad_error:.0e} (worst: {worst})")
    print(
        f"  after {CHECK_STEPS} Adam steps: loss {later_d:.6f} (torch {later_t:.6f}, rel err "
        f"{later_error:.0e})  {'OK' if ok else 'MISMATCH'}"
    )
    return ok


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--steps", type=int, default=200, help="timed steps (median of these)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before each block")
    parser.add_argument("--rounds", type=int, default=5, help="blocks the variants take turns at")
    parser.add_argument("--channels", type=int, default=16, help="build_model(channels)")
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count(),
        help="BLAS threads for numpy (OpenBLAS) and torch (set_num_threads); default: all CPUs",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=1e-4, help="same-math check")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="also cProfile N dtrain steps"
    )
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.threads < 1 or not 1 <= args.rounds <= args.steps:
        raise ValueError(
            f"--steps {args.steps}, --warmup {args.warmup}, --threads {args.threads}, --rounds "
            f"{args.rounds}: give positive steps and threads, warmup ≥ 0, 1 ≤ rounds ≤ steps"
        )
    if torch is None:
        print("torch is not installed: nothing to compare with (pip install torch)")
        return 1
    numpy_blas = set_numpy_threads(args.threads)
    torch.set_num_threads(args.threads)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs ({cpu_name()}); Python "
        f"{platform.python_version()}; numpy {np.__version__} ({numpy_blas}); torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads)"
    )
    print(
        f"digits CNN build_model({args.channels}), batch {BATCH} of 1x8x8, float32, "
        f"cross-entropy (label smoothing {LABEL_SMOOTHING}), Adam lr {LEARNING_RATE}; "
        f"{args.steps} timed steps each in {args.rounds} round(s)"
    )
    x, y = make_batch(args.seed)
    if not check_same_math(args, x, y):
        print("dtrain and torch do not compute the same math; timings would not be comparable")
        return 1
    print()

    dtrain_step, torch_step = make_steps(args.channels, args.seed)
    dx, dy, tx, ty = dt.tensor(x), dt.tensor(y), torch.from_numpy(x), torch.from_numpy(y)
    variants: dict[str, Callable[[], Any]] = {
        "torch": lambda: torch_step(tx, ty),
        "dtrain": lambda: dtrain_step(dx, dy),
    }
    progress = not args.no_progress and sys.stderr.isatty()
    meter = LoadMeter()
    meter.start()
    times, faults = time_variants(variants, args.warmup, args.steps, args.rounds, progress)
    load = meter.stop()
    medians = print_timings(times, faults)
    print(load)
    ratio = medians["dtrain"] / medians["torch"]
    print(f"\ndtrain / torch {ratio:.2f} (goal: parity, ≤ 1)")

    if args.profile:
        print(f"\ncProfile of {args.profile} dtrain steps:")
        print(profile(lambda: dtrain_step(dx, dy), args.profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
