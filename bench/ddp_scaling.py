"""Weak scaling of the char-GPT training step under DDP: 1, 2 and 4 ranks on tcp and on mpi.

Every rank trains the char-GPT of bench/step_gpt.py on its own batch of 32 (weak scaling: the
global batch grows with the ranks), one BLAS thread per rank. Reported per backend and world
size N: the step time (per rank, median over steps, mean over ranks) and the efficiency
``t1 / tN``, where t1 is the plain single-process loop. To separate the two costs a rank pays,
the same run also starts N *independent* single-process copies of the step at once (no DDP,
no communication): their step time over t1 is the cost of sharing the cores alone, and what
DDP adds on top of it, ``tN - t_independent(N)``, is charged to communication (the all-reduce,
waiting for the slowest rank, and the communication thread's share of the CPU).

All configurations take turns in ``--rounds`` rounds (each a fresh launch), and each figure is
the median over rounds, so a slow spell of the shared machine spreads over all of them.
On a machine with fewer cores than ranks the figures are CPU-bound: 4 ranks on 2 cores cannot
beat ``t4 = 2 t1`` (efficiency 0.5) even with free communication.

    python bench/ddp_scaling.py                         # 1/2/4 ranks, tcp + mpi + independent
    python bench/ddp_scaling.py --world 1 2 4 --steps 20 --rounds 3 --no-shm
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys

from ddp_common import GPT_BATCH, GPT_SIZES, MPIEXEC, launch, load_note, step_time
from harness import cpu_name

try:
    from tqdm import tqdm
except ImportError:  # tqdm is optional: no progress bar then
    tqdm = None


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--world", type=int, nargs="+", default=[1, 2, 4], help="world sizes")
    parser.add_argument(
        "--backends", nargs="+", default=["tcp", "mpi"], choices=("tcp", "mpi"), help="DDP over"
    )
    parser.add_argument("--steps", type=int, default=20, help="timed steps per rank and launch")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=3, help="launches of each configuration")
    parser.add_argument("--no-shm", action="store_true", help="tcp over sockets only")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.rounds < 1 or min(args.world) < 1:
        raise ValueError(
            f"--steps {args.steps}, --warmup {args.warmup}, --rounds {args.rounds}, --world "
            f"{args.world}: give positive steps, rounds and world sizes, warmup ≥ 0"
        )
    backends = [b for b in args.backends if b != "mpi" or MPIEXEC.exists()]
    if len(backends) < len(args.backends):
        print(f"no {MPIEXEC}: mpi skipped (pip install mpich mpi4py)")
    worlds = sorted(set(args.world) | {1})
    configs = [("independent", n) for n in worlds] + [(b, n) for b in backends for n in worlds]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs ({cpu_name()}); Python "
        f"{platform.python_version()}; one BLAS thread per rank"
    )
    print(
        f"char GPT {GPT_SIZES}, batch {GPT_BATCH} per rank; {args.steps} timed steps per "
        f"launch, {args.rounds} round(s); tcp over "
        f"{'sockets' if args.no_shm else 'same-host shared memory'}"
    )
    print(f"before: {load_note()}")
    samples: dict[tuple[str, int], list[float]] = {c: [] for c in configs}
    bar = None
    if tqdm is not None and sys.stderr.isatty():
        bar = tqdm(total=len(configs) * args.rounds, leave=False)
    for _ in range(args.rounds):
        for mode, world in configs:
            results = launch(mode, world, "gpt", args.steps, args.warmup, shm=not args.no_shm)
            samples[(mode, world)].append(step_time(results))
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    print(f"after: {load_note()}")
    t = {c: statistics.median(v) for c, v in samples.items()}
    t1 = t[("independent", 1)]
    print(
        f"\n{'':12s} {'N':>2s} {'step ms':>8s} {'rounds ms':>22s} {'t1/tN':>6s} "
        f"{'contention':>10s} {'comm ms':>8s} {'comm share':>10s}"
    )
    for mode, world in configs:
        value = t[(mode, world)]
        alone = t[("independent", world)]
        spread = "/".join(f"{s * 1e3:.0f}" for s in samples[(mode, world)])
        label = "ddp " + mode if mode != "independent" else "independent"
        comm = "" if mode == "independent" else f"{(value - alone) * 1e3:8.1f}"
        share = "" if mode == "independent" else f"{(value - alone) / value:10.1%}"
        print(
            f"{label:12s} {world:2d} {value * 1e3:8.1f} {spread:>22s} {t1 / value:6.2f} "
            f"{alone / t1:10.2f} {comm:>8s} {share:>10s}"
        )
    print(
        "\nt1: the plain single-process step (independent, N = 1). contention: t_independent(N)"
        " / t1, the slowdown of N concurrent copies that never communicate. comm: tN - "
        "t_independent(N), what DDP adds on top (its share of tN). At N = 1 DDP is a "
        "pass-through."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
