"""Time one training step of an MLP in dtrain against numpy and PyTorch baselines.

The step: an MLP 784-1024-1024-10 (biases, ReLU), softmax cross-entropy, plain SGD, float32,
one batch of 256. The same math runs, in the same process, as

- ``numpy (a)``   numpy written the straightforward way (a new array for every result);
- ``numpy (b)``   numpy with preallocated buffers and in-place updates (``out=``);
- ``torch``       PyTorch on the CPU, when it is installed (a baseline only, never a
                  dependency of dtrain);
- ``dtrain``      dtrain tensors and autograd (``loss.backward()``);
- ``torch nn``    the step as a PyTorch user writes it: ``nn.Sequential`` of ``nn.Linear`` and
                  ``nn.ReLU``, ``nn.CrossEntropyLoss``, ``optim.SGD``, ``zero_grad`` /
                  ``backward`` / ``step`` (when torch is installed);
- ``dtrain nn``   the same code with ``dtrain.nn`` and ``dtrain.optim``: only the imports
                  differ.

The nn variants start from the same weights (copied in with ``load_state_dict``; nn.Linear
holds its weight as (out, in), the transpose of the other variants' (in, out)).

Before timing, every variant's loss and gradients are checked against numpy (a) for
the same weights and batch. Each variant then runs ``--steps`` timed steps, split into
``--rounds`` blocks that the variants take turns at (each block after ``--warmup`` untimed
steps); the table shows the median, the ratios to each baseline, and the per-op overhead of
dtrain (and torch) measured on a 1-element tensor.

    python bench/step_mlp.py                      # defaults: 30 steps, batch 256, hidden 1024
    python bench/step_mlp.py --steps 50 --threads 1
    python bench/step_mlp.py --profile 20         # also cProfile 20 dtrain nn steps

Thread counts: ``--threads`` (default: all CPUs) is applied to numpy's OpenBLAS at run time
and to ``torch.set_num_threads``; torch uses its own BLAS (MKL/oneDNN), so the two libraries'
GEMMs differ even at equal thread counts.

Page faults: the table counts minor page faults per step. With glibc's default (dynamic) mmap
threshold, freed temporaries of a few MB are reused from the heap and fault rarely; with a
fixed threshold every large temporary is a fresh mapping that faults on first touch, which is
what preallocated buffers (numpy (b)) avoid. ``MALLOC_MMAP_THRESHOLD_=131072 python
bench/step_mlp.py`` shows that regime.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from harness import (
    LoadMeter,
    cpu_name,
    print_timings,
    profile,
    relative_error,
    set_numpy_threads,
    time_variants,
)

import dtrain as dt
import dtrain.nn
import dtrain.optim

try:
    import torch
except ImportError:  # torch is an optional baseline
    torch = None

IN_FEATURES = 784
CLASSES = 10
LEARNING_RATE = 0.01
TARGET_VS_NUMPY = 1.10  # dtrain <= 1.10 x numpy (a), from the issue
TARGET_OP_US = 15.0  # µs per forward+backward of one op on a 1-element tensor


# ---- data and weights -----------------------------------------------------------------------
def make_params(sizes: list[int], seed: int) -> list[np.ndarray]:
    """He-initialised weights and zero biases, float32: [w1, b1, w2, b2, ...]."""
    rng = np.random.default_rng(seed)
    params = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        scale = np.sqrt(2.0 / fan_in)
        params.append((rng.standard_normal((fan_in, fan_out)) * scale).astype(np.float32))
        params.append(np.zeros(fan_out, dtype=np.float32))
    return params


def make_batch(batch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random inputs (float32) and labels (int64)."""
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((batch, IN_FEATURES)).astype(np.float32)
    y = rng.integers(0, CLASSES, size=batch, dtype=np.int64)
    return x, y


# ---- numpy (a): the straightforward way -----------------------------------------------------
def numpy_loss_and_grads(
    params: list[np.ndarray], x: np.ndarray, y: np.ndarray
) -> tuple[float, list[np.ndarray]]:
    """Forward and hand-written backward; every result is a new array."""
    weights, biases = params[0::2], params[1::2]
    batch = x.shape[0]
    rows = np.arange(batch)
    activations = [x]
    h = x
    for w, b in zip(weights[:-1], biases[:-1]):
        h = np.maximum(h @ w + b, 0)
        activations.append(h)
    logits = h @ weights[-1] + biases[-1]
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -logp[rows, y].mean()

    grad = np.exp(logp)  # d loss / d logits = (softmax - one_hot) / batch
    grad[rows, y] -= 1
    grad /= batch
    grads: list[np.ndarray] = [None] * len(params)
    for layer in range(len(weights) - 1, -1, -1):
        h = activations[layer]
        grads[2 * layer] = h.T @ grad
        grads[2 * layer + 1] = grad.sum(axis=0)
        if layer:
            grad = (grad @ weights[layer].T) * (h > 0)
    return float(loss), grads


def numpy_step(params: list[np.ndarray], x: np.ndarray, y: np.ndarray, lr: float) -> float:
    loss, grads = numpy_loss_and_grads(params, x, y)
    for p, g in zip(params, grads):
        p -= lr * g
    return loss


# ---- numpy (b): preallocated buffers, in-place updates --------------------------------------
class PreallocatedNumpyStep:
    """The same step with every intermediate in a buffer made once (``out=`` everywhere)."""

    def __init__(self, params: list[np.ndarray], batch: int) -> None:
        self.params = params
        self.weights, self.biases = params[0::2], params[1::2]
        widths = [w.shape[1] for w in self.weights]
        self.acts = [np.empty((batch, n), np.float32) for n in widths]
        self.masks = [np.empty((batch, n), np.bool_) for n in widths[:-1]]
        self.deltas = [np.empty((batch, n), np.float32) for n in widths]
        self.grads = [np.empty_like(p) for p in params]
        self.row_max = np.empty((batch, 1), np.float32)
        self.row_sum = np.empty((batch, 1), np.float32)
        self.rows = np.arange(batch)

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> float:
        """Fill ``self.grads``; return the loss."""
        weights, biases, acts = self.weights, self.biases, self.acts
        batch = x.shape[0]
        h = x
        for layer, (w, b) in enumerate(zip(weights, biases)):
            out = acts[layer]
            np.matmul(h, w, out=out)
            out += b
            if layer < len(weights) - 1:
                np.maximum(out, 0, out=out)
            h = out
        logp = acts[-1]  # log_softmax in place over the logits
        np.max(logp, axis=1, keepdims=True, out=self.row_max)
        logp -= self.row_max
        delta = self.deltas[-1]
        np.exp(logp, out=delta)
        np.sum(delta, axis=1, keepdims=True, out=self.row_sum)
        np.log(self.row_sum, out=self.row_sum)
        logp -= self.row_sum
        loss = -float(logp[self.rows, y].mean())

        np.exp(logp, out=delta)
        delta[self.rows, y] -= 1
        delta *= 1.0 / batch
        for layer in range(len(weights) - 1, -1, -1):
            h = acts[layer - 1] if layer else x
            np.matmul(h.T, delta, out=self.grads[2 * layer])
            np.sum(delta, axis=0, out=self.grads[2 * layer + 1])
            if layer:
                below = self.deltas[layer - 1]
                np.matmul(delta, weights[layer].T, out=below)
                mask = self.masks[layer - 1]
                np.greater(h, 0, out=mask)
                np.multiply(below, mask, out=below)
                delta = below
        return loss

    def __call__(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        loss = self.loss_and_grads(x, y)
        for p, g in zip(self.params, self.grads):
            g *= lr
            p -= g
        return loss


# ---- dtrain and torch: the same code ---------------------------------------------------------
def mlp_loss(params: list[Any], x: Any, y: Any) -> Any:
    """Forward and loss, written once for dtrain and torch tensors (the APIs match).

    Cross-entropy = -(log_softmax gathered at the labels).mean().
    """
    weights, biases = params[0::2], params[1::2]
    h = x
    for w, b in zip(weights[:-1], biases[:-1]):
        h = (h @ w + b).relu()
    logits = h @ weights[-1] + biases[-1]
    return -logits.log_softmax(1).gather(1, y.unsqueeze(1)).mean()


def sgd_step(params: list[Any], x: Any, y: Any, lr: float, no_grad: Callable[[], Any]) -> float:
    """One step: loss, backward, plain SGD; ``no_grad`` is ``dt.no_grad`` or ``torch.no_grad``."""
    loss = mlp_loss(params, x, y)
    loss.backward()
    with no_grad():
        for p in params:
            p.sub_(p.grad, alpha=lr)
            p.grad = None
    return loss.item()


# ---- dtrain nn and torch nn: the step as a user writes it -----------------------------------
def build_mlp(
    nn_module: Any, weights: list[np.ndarray], tensor: Callable[[Any], Any], dtype: Any = None
) -> Any:
    """``nn.Sequential(Linear, ReLU, ..., Linear)`` of ``nn_module`` (dtrain.nn or torch.nn)
    holding ``weights`` ([w1, b1, ...], each w of shape (in, out)); ``tensor`` makes a tensor
    of the library from a numpy array; ``dtype`` is the layers' (None: the default)."""
    layers, state = [], {}
    for i, (w, b) in enumerate(zip(weights[0::2], weights[1::2])):
        if i:
            layers.append(nn_module.ReLU())
        state[f"{len(layers)}.weight"] = tensor(np.ascontiguousarray(w.T))  # (out, in)
        state[f"{len(layers)}.bias"] = tensor(b)
        layers.append(nn_module.Linear(*w.shape, dtype=dtype))
    model = nn_module.Sequential(*layers)
    model.load_state_dict(state)
    return model


class NnStep:
    """One step written as in a PyTorch tutorial; ``nn_module`` and ``optim_module`` are
    ``dtrain.nn`` / ``dtrain.optim`` or ``torch.nn`` / ``torch.optim``."""

    def __init__(
        self,
        nn_module: Any,
        optim_module: Any,
        weights: list[np.ndarray],
        lr: float,
        tensor: Callable[[Any], Any],
        dtype: Any = None,
    ) -> None:
        self.model = build_mlp(nn_module, weights, tensor, dtype)
        self.loss_fn = nn_module.CrossEntropyLoss()
        self.optimizer = optim_module.SGD(self.model.parameters(), lr=lr)

    def __call__(self, x: Any, y: Any) -> float:
        loss = self.loss_fn(self.model(x), y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def loss_and_grads(self, x: Any, y: Any) -> tuple[float, list[np.ndarray]]:
        """Loss and gradients (weights back in the (in, out) layout) without updating."""
        self.optimizer.zero_grad()
        loss = self.loss_fn(self.model(x), y)
        loss.backward()
        grads = [p.grad.numpy() for p in self.model.parameters()]
        return loss.item(), [g.T if g.ndim == 2 else g for g in grads]


def dtrain_nn_step(weights: list[np.ndarray], lr: float) -> NnStep:
    return NnStep(dtrain.nn, dtrain.optim, weights, lr, dt.tensor)


def torch_nn_step(weights: list[np.ndarray], lr: float, dtype: Any = None) -> NnStep:
    return NnStep(torch.nn, torch.optim, weights, lr, torch.from_numpy, dtype)


# ---- the check ------------------------------------------------------------------------------
def _torch_loss_and_grads(
    weights: list[np.ndarray], x: np.ndarray, y: np.ndarray, dtype: Any
) -> tuple[float, list[np.ndarray]]:
    params = [torch.tensor(w, dtype=dtype, requires_grad=True) for w in weights]
    loss = mlp_loss(params, torch.from_numpy(x).to(dtype), torch.from_numpy(y))
    loss.backward()
    return loss.item(), [p.grad.numpy() for p in params]


def _relu_flips(weights: list[np.ndarray], x: np.ndarray) -> int:
    """How many hidden pre-activations have a different sign under torch than under numpy.

    A gradient flows through a ReLU only where its input is positive, so one input within
    float32 rounding of 0 that two BLAS libraries round to opposite sides changes a whole
    row of the first layer's weight gradient: a kink, not a difference in the math.
    """
    h_np, h_t = x, torch.from_numpy(x)
    flips = 0
    for w, b in zip(weights[0:-2:2], weights[1:-2:2]):
        z_np = h_np @ w + b
        z_t = h_t @ torch.from_numpy(w) + torch.from_numpy(b)
        flips += int(((z_np > 0) != (z_t.numpy() > 0)).sum())
        h_np, h_t = np.maximum(z_np, 0), z_t.relu()
    return flips


def _errors(
    result: tuple[float, list[np.ndarray]], reference: tuple[float, list[np.ndarray]]
) -> tuple[float, float]:
    loss_error = relative_error(result[0], reference[0])
    grad_error = max(relative_error(g, r) for g, r in zip(result[1], reference[1]))
    return loss_error, grad_error


def check_same_math(
    weights: list[np.ndarray], x: np.ndarray, y: np.ndarray, tolerance: float = 1e-4
) -> bool:
    """Compare each variant's loss and gradients with numpy (a)'s on the same weights.

    Error = max |value - numpy (a)| / max |numpy (a)|, per gradient, the worst reported.
    """
    reference = numpy_loss_and_grads([w.copy() for w in weights], x, y)
    results = {}

    params = [dt.tensor(w, requires_grad=True) for w in weights]
    loss = mlp_loss(params, dt.tensor(x), dt.tensor(y))
    loss.backward()
    results["dtrain"] = (loss.item(), [p.grad.numpy() for p in params])
    pre = PreallocatedNumpyStep([w.copy() for w in weights], x.shape[0])
    results["numpy (b)"] = (pre.loss_and_grads(x, y), pre.grads)
    if torch is not None:
        results["torch"] = _torch_loss_and_grads(weights, x, y, torch.float32)
        results["torch nn"] = torch_nn_step(weights, LEARNING_RATE).loss_and_grads(
            torch.from_numpy(x), torch.from_numpy(y)
        )
    results["dtrain nn"] = dtrain_nn_step(weights, LEARNING_RATE).loss_and_grads(
        dt.tensor(x), dt.tensor(y)
    )

    ok = True
    print(f"check vs numpy (a), same weights and batch, float32 (tolerance {tolerance:g}):")
    for name, result in results.items():
        loss_error, grad_error = _errors(result, reference)
        passed = loss_error <= tolerance and grad_error <= tolerance
        verdict = "OK" if passed else "MISMATCH"
        if not passed and name.startswith("torch"):
            # torch has another BLAS: see _relu_flips. Check its math in float64 instead.
            flips = _relu_flips(weights, x)
            w64 = [w.astype(np.float64) for w in weights]
            x64 = x.astype(np.float64)
            if name == "torch":
                result64 = _torch_loss_and_grads(w64, x64, y, torch.float64)
            else:
                step64 = torch_nn_step(w64, LEARNING_RATE, torch.float64)
                result64 = step64.loss_and_grads(torch.from_numpy(x64), torch.from_numpy(y))
            errors64 = _errors(result64, numpy_loss_and_grads(w64, x64, y))
            passed = flips > 0 and max(errors64) <= tolerance
            verdict = (
                f"{flips} ReLU input(s) round to the other side of 0 under torch's BLAS; "
                f"in float64 rel err {max(errors64):.0e}: {'OK' if passed else 'MISMATCH'}"
            )
        ok &= passed
        print(
            f"  {name:10s} loss {result[0]:.6f} (numpy (a) {reference[0]:.6f}, rel err "
            f"{loss_error:.0e}); grads max rel err {grad_error:.0e}  {verdict}"
        )
    return ok


# ---- timing ---------------------------------------------------------------------------------
def per_op_overhead(
    make_leaf: Callable[[], Any],
    no_grad: Callable[[], Any],
    chain: int,
    repeats: int,
) -> dict[str, float]:
    """µs per op of ``y = y * 1.0001`` on a 1-element tensor: forward recording the graph,
    forward under no_grad, and forward + one backward through the chain (per op)."""

    def forward(leaf: Any) -> Any:
        y = leaf
        for _ in range(chain):
            y = y * 1.0001
        return y

    def median_us(run: Callable[[], Any]) -> float:
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            samples.append(time.perf_counter() - start)
        return statistics.median(samples) / chain * 1e6

    leaf = make_leaf()

    def forward_backward() -> None:
        forward(leaf).backward()
        leaf.grad = None

    def forward_no_grad() -> None:
        with no_grad():
            forward(leaf)

    for run in (lambda: forward(leaf), forward_no_grad, forward_backward):  # warm-up
        run()
    return {
        "forward": median_us(lambda: forward(leaf)),
        "forward (no_grad)": median_us(forward_no_grad),
        "forward+backward": median_us(forward_backward),
    }


def numpy_op_floor(chain: int, repeats: int) -> float:
    """µs per ``a * 1.0001`` on a 1-element numpy array: the floor under any wrapper."""
    a = np.ones(1, np.float32)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        y = a
        for _ in range(chain):
            y = y * 1.0001
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) / chain * 1e6


# ---- main -----------------------------------------------------------------------------------
def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--steps", type=int, default=30, help="timed steps (median of these)")
    parser.add_argument(
        "--warmup", type=int, default=3, help="untimed steps before each block of timed steps"
    )
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=1024, help="width of both hidden layers")
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count(),
        help="BLAS threads for numpy (OpenBLAS) and torch (set_num_threads); default: all CPUs",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--op-chain", type=int, default=100, help="ops per chain (per-op test)")
    parser.add_argument("--op-repeats", type=int, default=20, help="chains per measurement")
    parser.add_argument("--no-torch", action="store_true", help="skip the torch baseline")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="also cProfile N dtrain nn steps"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="split each variant's timed steps into this many blocks, the variants taking "
        "turns (1: one block each)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    return parser


def _describe_machine(numpy_blas: str, use_torch: bool) -> None:
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs ({cpu_name()}); "
        f"Python {platform.python_version()}; numpy {np.__version__} ({numpy_blas})"
    )
    if use_torch:
        print(f"torch {torch.__version__}: {torch.get_num_threads()} threads (set_num_threads)")
    elif torch is None:
        print("torch: not installed (pip install torch to add the baseline)")


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.batch < 1 or args.hidden < 1:
        raise ValueError(
            f"--steps {args.steps}, --warmup {args.warmup}, --batch {args.batch}, --hidden "
            f"{args.hidden}: steps, batch and hidden must be positive and warmup not negative"
        )
    if args.threads < 1 or args.rounds < 1 or args.rounds > args.steps:
        raise ValueError(
            f"--threads {args.threads}, --rounds {args.rounds}: give at least 1 thread and "
            f"between 1 and --steps ({args.steps}) rounds"
        )
    use_torch = torch is not None and not args.no_torch
    numpy_blas = set_numpy_threads(args.threads)
    if use_torch:
        torch.set_num_threads(args.threads)
    progress = not args.no_progress and sys.stderr.isatty()
    sizes = [IN_FEATURES, args.hidden, args.hidden, CLASSES]
    lr = LEARNING_RATE

    _describe_machine(numpy_blas, use_torch)
    print(
        f"MLP {'-'.join(map(str, sizes))}, batch {args.batch}, float32, ReLU, softmax "
        f"cross-entropy, SGD lr {lr}; {args.steps} timed steps each in {args.rounds} round(s), "
        f"{args.warmup} warm-up steps before each"
    )
    if args.steps < 30:
        print(f"note: --steps {args.steps} < 30; the issue asks for the median of ≥ 30")

    weights = make_params(sizes, args.seed)
    x, y = make_batch(args.batch, args.seed)
    if not check_same_math(weights, x, y):
        print("the variants do not compute the same math; timings would not be comparable")
        return 1
    print()

    variants: dict[str, Callable[[], Any]] = {}
    params_a = [w.copy() for w in weights]
    variants["numpy (a)"] = lambda: numpy_step(params_a, x, y, lr)
    pre = PreallocatedNumpyStep([w.copy() for w in weights], args.batch)
    variants["numpy (b)"] = lambda: pre(x, y, lr)
    if use_torch:
        tparams = [torch.tensor(w, requires_grad=True) for w in weights]
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)
        variants["torch"] = lambda: sgd_step(tparams, tx, ty, lr, torch.no_grad)
    dparams = [dt.tensor(w, requires_grad=True) for w in weights]
    dx, dy = dt.tensor(x), dt.tensor(y)
    variants["dtrain"] = lambda: sgd_step(dparams, dx, dy, lr, dt.no_grad)
    if use_torch:
        torch_nn = torch_nn_step(weights, lr)
        variants["torch nn"] = lambda: torch_nn(tx, ty)
    dtrain_nn = dtrain_nn_step(weights, lr)
    variants["dtrain nn"] = lambda: dtrain_nn(dx, dy)

    meter = LoadMeter()
    meter.start()
    times, faults = time_variants(variants, args.warmup, args.steps, args.rounds, progress)
    load = meter.stop()
    medians = print_timings(times, faults)
    print(load)

    print("\nratios (< 1: the first is faster):")
    pairs = [("dtrain", name) for name in ("numpy (a)", "numpy (b)", "torch") if name in variants]
    pairs += [("dtrain nn", name) for name in ("torch nn", "dtrain", "numpy (a)")]
    pairs += [("torch", "numpy (a)"), ("torch nn", "torch"), ("numpy (b)", "numpy (a)")]
    for first, second in pairs:
        if first in variants and second in variants:
            ratio = medians[first] / medians[second]
            print(f"  {first + ' / ' + second:24s} {ratio:6.2f}")
    ratio_a = medians["dtrain"] / medians["numpy (a)"]
    print(
        f"  target dtrain ≤ {TARGET_VS_NUMPY:.2f} x numpy (a): "
        f"{'met' if ratio_a <= TARGET_VS_NUMPY else 'NOT met'} ({ratio_a:.2f})"
    )
    if use_torch:
        ratio_nn = medians["dtrain nn"] / medians["torch nn"]
        print(
            f"  target dtrain nn ≤ torch nn: {'met' if ratio_nn <= 1 else 'NOT met'} "
            f"({ratio_nn:.2f})"
        )

    print(
        f"\nper-op overhead, µs per `y = y * 1.0001` on a 1-element tensor "
        f"(chain of {args.op_chain}, median of {args.op_repeats}):"
    )
    floor = numpy_op_floor(args.op_chain, args.op_repeats)
    overheads = {
        "dtrain": per_op_overhead(
            lambda: dt.tensor([1.0], requires_grad=True),
            dt.no_grad,
            args.op_chain,
            args.op_repeats,
        )
    }
    if use_torch:
        overheads["torch"] = per_op_overhead(
            lambda: torch.tensor([1.0], requires_grad=True),
            torch.no_grad,
            args.op_chain,
            args.op_repeats,
        )
    print(f"  {'':8s} {'forward':>9s} {'fwd no_grad':>12s} {'fwd+bwd':>9s}")
    for name, figures in overheads.items():
        print(
            f"  {name:8s} {figures['forward']:9.2f} {figures['forward (no_grad)']:12.2f} "
            f"{figures['forward+backward']:9.2f}"
        )
    print(f"  {'numpy':8s} {floor:9.2f}   (a bare numpy multiply, the floor)")
    fwd_bwd = overheads["dtrain"]["forward+backward"]
    print(
        f"  target dtrain fwd+bwd ≤ {TARGET_OP_US:.0f} µs: "
        f"{'met' if fwd_bwd <= TARGET_OP_US else 'NOT met'} ({fwd_bwd:.1f})"
    )

    if args.profile:
        print(f"\ncProfile of {args.profile} dtrain nn steps:")
        print(profile(lambda: dtrain_nn(dx, dy), args.profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
