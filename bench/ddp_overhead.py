"""Overhead of DistributedDataParallel at world size 1 against the plain training loop.

At world size 1 DDP is a pass-through (no hooks, no buckets), so the default costs only a
forward indirection. To also price the machinery a multi-rank step pays on this side of the
wire, a third variant forces the reducer on at world size 1 (the measurement-only switch
``_reduce_at_world_size_1``): a one-rank tcp group, gradient hooks, bucket views and one
asynchronous all-reduce per bucket on the group's executor thread (AVG over one rank: a
division, no transfer). All three variants start from the same weights and take turns in
rounds in one process (bench/harness.time_variants, each round led by the next variant);
the ratios are against the plain loop measured in the same run. Models: the char-GPT of
bench/step_gpt.py and the MLP of bench/step_mlp.py (bench/ddp_common.py).

    OPENBLAS_NUM_THREADS=1 python bench/ddp_overhead.py                 # both models
    OPENBLAS_NUM_THREADS=1 python bench/ddp_overhead.py --model gpt --steps 90 --rounds 30
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
from ddp_common import TrainStep, make_batch, make_model
from harness import (
    LoadMeter,
    cpu_name,
    print_timings,
    set_numpy_threads,
    time_variants,
    tqdm,
)

import dtrain.parallel as dist
from dtrain.parallel.ddp_stats import DDPStats

TARGET = 1.03  # the bound: DDP at world size 1 within 3 % of the plain loop


def _one_rank_tcp_group() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dist.init_process_group("tcp", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)


def measure(kind: str, args: argparse.Namespace, progress: bool) -> dict[str, float]:
    """Time the three variants on ``kind`` and print the table and ratios; returns medians."""
    x, y = make_batch(kind, args.seed)
    plain = make_model(kind, args.seed)
    passthrough = dist.DistributedDataParallel(make_model(kind, args.seed))
    forced = dist.DistributedDataParallel(make_model(kind, args.seed), _reduce_at_world_size_1=True)
    steps = {
        "plain": TrainStep(kind, plain),
        "ddp pass-through": TrainStep(kind, passthrough),
        "ddp reducer (1-rank tcp)": TrainStep(kind, forced),
    }
    losses = {name: step(x, y) for name, step in steps.items()}
    if len(set(losses.values())) != 1:  # same weights, same batch: the same first loss
        raise RuntimeError(f"{kind}: the variants disagree on the first loss: {losses}")
    forced.stats = DDPStats()  # one instrumented step: how many buckets the reducer runs
    steps["ddp reducer (1-rank tcp)"](x, y)
    buckets = forced.stats.steps[-1].buckets
    forced.stats = None  # timed with the instrumentation off, as users run it
    grad_mb = sum(b.nbytes for b in buckets) / 2**20
    print(
        f"\n{kind}: {sum(p.numel() for p in plain.parameters()):,} parameters "
        f"({grad_mb:.2f} MB of gradients, {len(buckets)} bucket(s) in the forced reducer); "
        f"{args.steps} timed steps per variant in {args.rounds} rounds"
    )
    variants: dict[str, Callable[[], Any]] = {
        name: (lambda step=step: step(x, y)) for name, step in steps.items()
    }
    meter = LoadMeter()
    meter.start()
    times, faults = _time_rotated(variants, args.warmup, args.steps, args.rounds, progress)
    load = meter.stop()
    medians = print_timings(times, faults)
    print(load)
    print("ratios to the plain loop (median ms; paired: median over rounds of the same round's")
    print("ratio, which a slow spell of the shared machine disturbs less; fastest 10 %: ratio of")
    print("the 10th percentiles, the quietest steps):")
    for name in list(steps)[1:]:
        ratio = medians[name] / medians["plain"]
        paired = statistics.median(_round_ratios(times[name], times["plain"], args.rounds))
        quiet = _quantile(times[name], 0.1) / _quantile(times["plain"], 0.1)
        verdict = "met" if paired <= TARGET else "NOT met"
        print(
            f"  {name} / plain: medians {ratio:.3f}, paired {paired:.3f}, fastest 10 % "
            f"{quiet:.3f}  (target ≤ {TARGET:.2f} on the paired ratio: {verdict})"
        )
    return medians


def _time_rotated(
    variants: dict[str, Callable[[], Any]], warmup: int, steps: int, rounds: int, progress: bool
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """``time_variants`` one round at a time, each round starting with the next variant, so
    no variant always runs first after the pause (which was worth a few per cent here)."""
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    faults = dict.fromkeys(names, 0.0)
    bar = tqdm(total=rounds, leave=False) if progress and tqdm is not None else None
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        got, got_faults = time_variants(
            {name: variants[name] for name in order}, warmup, steps // rounds, 1, False
        )
        for name in names:
            times[name] += got[name]
            faults[name] += got_faults[name] / rounds
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    return times, faults


def _round_ratios(times: list[float], baseline: list[float], rounds: int) -> list[float]:
    """Per round, the ratio of the variant's median step to the baseline's in that round
    (time_variants appends each round's steps in turn)."""
    share = len(times) // rounds
    return [
        statistics.median(times[r * share : (r + 1) * share])
        / statistics.median(baseline[r * share : (r + 1) * share])
        for r in range(rounds)
    ]


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", choices=("gpt", "mlp", "both"), default="both")
    parser.add_argument("--steps", type=int, default=60, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before each block")
    parser.add_argument(
        "--rounds", type=int, default=20, help="blocks the variants take turns at (divides steps)"
    )
    parser.add_argument("--threads", type=int, default=1, help="numpy BLAS threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.rounds < 1 or args.steps % args.rounds:
        raise ValueError(
            f"--steps {args.steps}, --warmup {args.warmup}, --rounds {args.rounds}: give "
            "positive steps, warmup ≥ 0 and a number of rounds that divides the steps"
        )
    blas = set_numpy_threads(args.threads)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs ({cpu_name()}); Python "
        f"{platform.python_version()}; numpy {np.__version__} ({blas})"
    )
    _one_rank_tcp_group()
    try:
        for kind in ("gpt", "mlp") if args.model == "both" else (args.model,):
            measure(kind, args, not args.no_progress and sys.stderr.isatty())
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
