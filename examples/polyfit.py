"""Fit y = sin(x) on [-π, π] with a cubic y ≈ a + b x + c x² + d x³ by gradient descent.

The first example of a PyTorch introduction, in stages:

1. ``numpy``    — plain numpy, gradients written by hand;
2. ``autograd`` — dtrain tensors, gradients from ``loss.backward()``;
3. ``nn``       — the polynomial as ``nn.Linear(3, 1)`` over (x, x², x³), ``nn.MSELoss`` and
   ``optim.SGD``.

    python examples/polyfit.py                 # every stage, then compares their losses
    python examples/polyfit.py --stage autograd
"""

from __future__ import annotations

import argparse
import math

import numpy as np

import dtrain as dt
import dtrain.nn as nn
import dtrain.optim as optim

POINTS = 2500
LEARNING_RATE = 1e-6
STEPS = 2000


def initial_coefficients(seed: int) -> np.ndarray:
    """The same starting a, b, c, d for every stage."""
    return np.random.default_rng(seed).standard_normal(4)


def fit_numpy(seed: int = 0, steps: int = STEPS, log: bool = True) -> tuple[np.ndarray, float]:
    """Stage 1: numpy with hand-written gradients. Returns (a, b, c, d) and the final loss."""
    x = np.linspace(-math.pi, math.pi, POINTS)
    y = np.sin(x)
    a, b, c, d = initial_coefficients(seed)
    for step in range(steps):
        y_pred = a + b * x + c * x**2 + d * x**3
        loss = np.square(y_pred - y).sum()
        if log and step % 100 == 99:
            print(f"[numpy]    step {step + 1:5d}  loss {loss:.6f}")
        grad_y_pred = 2.0 * (y_pred - y)
        a -= LEARNING_RATE * grad_y_pred.sum()
        b -= LEARNING_RATE * (grad_y_pred * x).sum()
        c -= LEARNING_RATE * (grad_y_pred * x**2).sum()
        d -= LEARNING_RATE * (grad_y_pred * x**3).sum()
    y_pred = a + b * x + c * x**2 + d * x**3
    return np.array([a, b, c, d]), float(np.square(y_pred - y).sum())


def fit_autograd(
    seed: int = 0, steps: int = STEPS, dtype: np.dtype = dt.float32, log: bool = True
) -> tuple[np.ndarray, float]:
    """Stage 2: dtrain tensors; ``loss.backward()`` computes the gradients."""
    x = dt.linspace(-math.pi, math.pi, POINTS, dtype=dtype)
    y = dt.sin(x)
    a, b, c, d = (dt.tensor(v, dtype=dtype, requires_grad=True) for v in initial_coefficients(seed))
    for step in range(steps):
        y_pred = a + b * x + c * x**2 + d * x**3
        loss = (y_pred - y).pow(2).sum()
        if log and step % 100 == 99:
            print(f"[autograd] step {step + 1:5d}  loss {loss.item():.6f}")
        loss.backward()
        with dt.no_grad():  # update the leaves outside the graph, then clear their gradients
            for coefficient in (a, b, c, d):
                coefficient -= LEARNING_RATE * coefficient.grad
                coefficient.grad = None
    with dt.no_grad():
        final = ((a + b * x + c * x**2 + d * x**3 - y) ** 2).sum().item()
    return np.array([a.item(), b.item(), c.item(), d.item()]), final


def fit_nn(
    seed: int = 0, steps: int = STEPS, dtype: np.dtype = dt.float32, log: bool = True
) -> tuple[np.ndarray, float]:
    """Stage 3: a ``Linear`` layer over the features (x, x², x³); ``optim.SGD`` updates it."""
    x = dt.linspace(-math.pi, math.pi, POINTS, dtype=dtype)
    y = dt.sin(x)
    features = dt.stack([x, x**2, x**3], dim=1)  # (2500, 3)
    model = nn.Sequential(nn.Linear(3, 1, dtype=dtype), nn.Flatten(0, 1))
    a, b, c, d = initial_coefficients(seed)
    with dt.no_grad():  # start where the other stages start
        model[0].bias.copy_(dt.tensor([a]))
        model[0].weight.copy_(dt.tensor([[b, c, d]]))
    loss_fn = nn.MSELoss(reduction="sum")
    optimizer = optim.SGD(model.parameters(), lr=LEARNING_RATE)
    for step in range(steps):
        loss = loss_fn(model(features), y)
        if log and step % 100 == 99:
            print(f"[nn]       step {step + 1:5d}  loss {loss.item():.6f}")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with dt.no_grad():
        final = loss_fn(model(features), y).item()
    weight = model[0].weight.detach().numpy()[0]
    return np.array([model[0].bias.item(), *weight]), final


def describe(coefficients: np.ndarray) -> str:
    a, b, c, d = coefficients
    return f"y = {a:.4f} + {b:.4f} x + {c:.4f} x^2 + {d:.4f} x^3"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", choices=["numpy", "autograd", "nn", "all"], default="all")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    results = {}
    if args.stage in ("numpy", "all"):
        results["numpy"] = fit_numpy(args.seed, args.steps)
        print(f"[numpy]    result: {describe(results['numpy'][0])}")
    if args.stage in ("autograd", "all"):
        results["autograd"] = fit_autograd(args.seed, args.steps)
        print(f"[autograd] result: {describe(results['autograd'][0])}")
    if args.stage in ("nn", "all"):
        results["nn"] = fit_nn(args.seed, args.steps)
        print(f"[nn]       result: {describe(results['nn'][0])}")
    if "numpy" in results:
        reference = results["numpy"][1]
        for stage in ("autograd", "nn"):
            if stage in results:
                ours = results[stage][1]
                print(
                    f"final loss: numpy {reference:.6f}, {stage} {ours:.6f}, "
                    f"relative difference {abs(ours - reference) / reference:.2e}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
