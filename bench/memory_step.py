"""Peak memory of one MLP training step: dtrain against hand-written numpy.

The step is bench/step_mlp.py's (MLP 784-1024-1024-10, batch 256, float32, softmax
cross-entropy, SGD), as

- ``numpy (a)``   numpy written the straightforward way (step_mlp.numpy_step);
- ``dtrain``      dtrain tensors, ``loss.backward()`` and an update under ``no_grad``;
- ``dtrain nn``   ``nn.Sequential`` + ``nn.CrossEntropyLoss`` + ``optim.SGD`` with
                  ``zero_grad`` / ``backward`` / ``step``, as a user writes it.

Each variant runs in a child process of its own (so that one's memory cannot hide in the
other's figures), after ``--warmup`` steps, and reports for ``--steps`` steps:

- **tracemalloc**: the peak of the bytes allocated and not yet freed (numpy reports its array
  memory to tracemalloc) during a step, counting everything alive (weights, data, gradients,
  activations, temporaries), and the step's own part of it (peak minus the bytes alive when
  the step began);
- **RSS**: the high-water mark of the resident set during the step (``VmHWM``, reset before
  the step through ``/proc/self/clear_refs``) and its rise over the resident set at the step's
  start. The child runs with ``MALLOC_MMAP_THRESHOLD_=65536`` so that glibc maps every large
  array on its own and unmaps it when freed: the resident set then follows the live arrays
  instead of what the heap keeps cached (which would hide a step's peak);
- what stays alive after each step (tracemalloc's current bytes, the resident set, and the
  number of autograd graph nodes still reachable): flat across the steps when backward frees
  the graph.

    python bench/memory_step.py               # defaults: 3 warm-up steps, then 20 steps
    python bench/memory_step.py --steps 50 --batch 64
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from typing import Any

from harness import set_numpy_threads
from step_mlp import CLASSES, IN_FEATURES, dtrain_nn_step, make_batch, make_params, numpy_step

import dtrain as dt
from dtrain._tensor.autograd.op import Op

VARIANTS = ("numpy (a)", "dtrain", "dtrain nn")
LEARNING_RATE = 0.01
TARGET = 1.5  # dtrain peak ≤ 1.5 x numpy (a)'s, from the issue
CHILD_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}
MB = 1e6


# ---- the child: one variant ------------------------------------------------------------------
def _status_kb(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM); None where there is none."""
    with contextlib.suppress(OSError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def _live_graph_nodes() -> int:
    """Autograd nodes still reachable (after a step's backward this should be 0)."""
    return sum(1 for obj in gc.get_objects() if isinstance(obj, Op))


def make_step(name: str, sizes: list[int], batch: int, seed: int) -> Callable[[], Any]:
    weights = make_params(sizes, seed)
    x, y = make_batch(batch, seed)
    if name == "numpy (a)":
        return lambda: numpy_step(weights, x, y, LEARNING_RATE)
    dx, dy = dt.tensor(x), dt.tensor(y)
    if name == "dtrain nn":
        step = dtrain_nn_step(weights, LEARNING_RATE)
        return lambda: step(dx, dy)
    from step_mlp import sgd_step

    params = [dt.tensor(w, requires_grad=True) for w in weights]
    return lambda: sgd_step(params, dx, dy, LEARNING_RATE, dt.no_grad)


def measure(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one variant in this process; its figures per step, in bytes."""
    set_numpy_threads(args.threads)
    tracemalloc.start()  # before the weights exist, so that they count
    step = make_step(name, [IN_FEATURES, args.hidden, args.hidden, CLASSES], args.batch, args.seed)
    for _ in range(args.warmup):
        step()
    gc.collect()
    records = []
    for _ in range(args.steps):
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        rss_before = _status_kb("VmRSS")
        hwm_reset = _reset_peak_rss()
        step()
        after, peak = tracemalloc.get_traced_memory()
        hwm = _status_kb("VmHWM") if hwm_reset else None
        records.append(
            {
                "before": before,
                "peak": peak,
                "after": after,
                "rss_before": None if rss_before is None else rss_before * 1024,
                "rss_peak": None if hwm is None else hwm * 1024,
                "rss_after": (_status_kb("VmRSS") or 0) * 1024,
                "graph_nodes": _live_graph_nodes(),
            }
        )
    return {"name": name, "steps": records}


# ---- the parent: run the children, print the table -------------------------------------------
def run_child(name: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, os.path.abspath(__file__), "--child", name]
    command += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    command += ["--batch", str(args.batch), "--hidden", str(args.hidden)]
    command += ["--threads", str(args.threads), "--seed", str(args.seed)]
    result = subprocess.run(
        command, env={**os.environ, **CHILD_ENV}, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"memory_step child {name!r} failed:\n{result.stderr}")
    return json.loads(result.stdout.splitlines()[-1])


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value / MB:.1f}"


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """Peaks (the largest over the steps) and what stays alive (first and last step)."""
    steps = result["steps"]
    has_rss = all(s["rss_peak"] is not None for s in steps)
    return {
        "peak": max(s["peak"] for s in steps),
        "step_peak": max(s["peak"] - s["before"] for s in steps),
        "rss_peak": max(s["rss_peak"] for s in steps) if has_rss else None,
        "rss_rise": max(s["rss_peak"] - s["rss_before"] for s in steps) if has_rss else None,
        "alive_first": steps[0]["after"],
        "alive_last": steps[-1]["after"],
        "rss_first": steps[0]["rss_after"],
        "rss_last": steps[-1]["rss_after"],
        "graph_nodes": max(s["graph_nodes"] for s in steps),
    }


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--steps", type=int, default=20, help="measured steps per variant")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured steps before them")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=1024, help="width of both hidden layers")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="OpenBLAS threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    if args.steps < 1 or args.warmup < 1 or args.batch < 1 or args.hidden < 1:
        raise ValueError(
            f"--steps {args.steps}, --warmup {args.warmup}, --batch {args.batch}, --hidden "
            f"{args.hidden}: all must be positive (one warm-up step at least: the first step "
            "allocates what later steps reuse)"
        )
    if args.child:
        print(json.dumps(measure(args.child, args)))
        return 0

    sizes = [IN_FEATURES, args.hidden, args.hidden, CLASSES]
    weights = sum(w.nbytes for w in make_params(sizes, args.seed))
    print(
        f"MLP {'-'.join(map(str, sizes))}, batch {args.batch}, float32, SGD; {args.warmup} "
        f"warm-up step(s), then {args.steps} measured; each variant in its own process with "
        f"{' '.join(f'{k}={v}' for k, v in CHILD_ENV.items())}"
    )
    print(
        f"weights: {weights / MB:.1f} MB; input batch: {args.batch * IN_FEATURES * 4 / MB:.1f} MB"
    )
    summaries = {name: summarize(run_child(name, args)) for name in VARIANTS}

    print("\nMB; tracemalloc (numpy's arrays and Python objects) and the resident set:")
    print(
        f"{'variant':10s} {'peak':>7s} {'step':>7s} {'RSS peak':>9s} {'RSS rise':>9s}  "
        f"{'alive after step 1 → last':>26s}  {'RSS after 1 → last':>19s} {'graph':>6s}"
    )
    for name, s in summaries.items():
        alive = f"{_mb(s['alive_first'])} → {_mb(s['alive_last'])}"
        rss = f"{_mb(s['rss_first'])} → {_mb(s['rss_last'])}"
        print(
            f"{name:10s} {_mb(s['peak']):>7s} {_mb(s['step_peak']):>7s} "
            f"{_mb(s['rss_peak']):>9s} {_mb(s['rss_rise']):>9s}  {alive:>26s}  {rss:>19s} "
            f"{s['graph_nodes']:6d}"
        )
    print(
        "peak: all bytes alive at the step's high point; step: the part the step allocated; "
        "RSS rise: VmHWM minus the resident set at the step's start; graph: autograd nodes "
        "alive after a step"
    )

    base = summaries["numpy (a)"]
    print(f"\nratios to numpy (a) (target ≤ {TARGET} for the peak):")
    ok = True
    for name in VARIANTS[1:]:
        s = summaries[name]
        ratio = s["peak"] / base["peak"]
        ok &= ratio <= TARGET
        figures = f"peak {ratio:.2f}, step {s['step_peak'] / base['step_peak']:.2f}"
        if s["rss_rise"] is not None and base["rss_rise"]:
            figures += f", RSS rise {s['rss_rise'] / base['rss_rise']:.2f}"
        print(f"  {name:10s} {figures}  {'met' if ratio <= TARGET else 'NOT met'}")
    for name, s in summaries.items():
        growth = s["alive_last"] - s["alive_first"]
        flat = growth <= 0.01 * s["alive_first"] and not s["graph_nodes"]
        ok &= flat
        print(
            f"  {name:10s} alive after the last step - after the first: {growth / MB:+.2f} MB, "
            f"graph nodes alive: {s['graph_nodes']}  {'flat' if flat else 'GROWS'}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
