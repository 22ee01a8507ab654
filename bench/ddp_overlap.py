"""How much of DDP's gradient all-reduce backward hides, for the char-GPT on tcp.

Each rank trains the char-GPT of bench/step_gpt.py in DDP with ``model.stats = DDPStats()``
(parallel/ddp_stats.py) and records, every step: backward compute (output gradient to last
parameter gradient), each bucket's all-reduce from launch to completion, the all-reduce time
(union of the buckets' spans), and the part of it after the last gradient was produced
(exposed: backward could not hide it). Reported per world size: the means over steps and
ranks, and the hidden fraction ``1 - exposed / all-reduce`` (target ≥ 50 % at 2 and 4 ranks).
The instrumented steps are timed against the same run without stats, so the cost of the
instrumentation is visible too. Ranks are started as tests/parallel/launcher.py does (one
process each, torchrun's variables, same-host shared memory unless ``--no-shm``).

    python bench/ddp_overlap.py                          # 2 and 4 ranks, default buckets
    python bench/ddp_overlap.py --world 2 4 --bucket-cap-mb 25 0.25 --steps 30
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys

from ddp_common import GPT_BATCH, GPT_SIZES, launch, load_note, step_time
from harness import cpu_name

TARGET = 0.5  # the target for the hidden fraction


def overlap(world: int, cap: float, args: argparse.Namespace) -> dict:
    """Run ``world`` tcp ranks with stats on; print per-rank and per-bucket figures."""
    options = {"bucket_cap_mb": cap, "shm": not args.no_shm}
    results = launch("tcp", world, "gpt", args.steps, args.warmup, stats=True, **options)
    plain = launch("tcp", world, "gpt", args.steps, args.warmup, **options) if args.compare else []
    stats = [r["stats"] for r in results]
    mean = {key: statistics.fmean(s[key] for s in stats) for key in stats[0]}
    hidden = 1.0 - mean["exposed_s"] / mean["allreduce_s"]
    print(
        f"\n{world} ranks, bucket_cap_mb {cap:g}: {int(mean['buckets'])} buckets; step "
        f"{step_time(results) * 1e3:.1f} ms with stats"
        + (f", {step_time(plain) * 1e3:.1f} ms without" if plain else "")
    )
    print(
        f"  {'rank':>4s} {'backward ms':>11s} {'all-reduce ms':>13s} {'exposed ms':>10s} "
        f"{'hidden ms':>9s} {'wait ms':>8s} {'hidden':>7s}"
    )
    for rank, s in enumerate(stats):
        print(
            f"  {rank:4d} {s['backward_compute_s'] * 1e3:11.2f} {s['allreduce_s'] * 1e3:13.2f} "
            f"{s['exposed_s'] * 1e3:10.2f} {s['hidden_s'] * 1e3:9.2f} {s['wait_s'] * 1e3:8.2f} "
            f"{s['hidden_fraction']:7.1%}"
        )
    print(
        f"  {'mean':>4s} {mean['backward_compute_s'] * 1e3:11.2f} "
        f"{mean['allreduce_s'] * 1e3:13.2f} {mean['exposed_s'] * 1e3:10.2f} "
        f"{mean['hidden_s'] * 1e3:9.2f} {mean['wait_s'] * 1e3:8.2f} {hidden:7.1%}   "
        f"(target ≥ {TARGET:.0%}: {'met' if hidden >= TARGET else 'NOT met'})"
    )
    print("  per bucket (rank 0, median over steps; launch to completion, queueing included):")
    for index, (nbytes, spans) in enumerate(_bucket_spans(results[0]["buckets"])):
        span = statistics.median(spans)
        print(f"    bucket {index}: {nbytes / 2**20:6.3f} MB  {span * 1e3:7.2f} ms")
    return {"world": world, "cap": cap, "hidden": hidden, **mean}


def _bucket_spans(steps: list[list[list]]) -> list[tuple[int, list[float]]]:
    """Per bucket index: its size and its launch-to-completion time in every step."""
    count = len(steps[0])
    return [(steps[0][i][1], [step[i][2] for step in steps]) for i in range(count)]


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--world", type=int, nargs="+", default=[2, 4], help="world sizes")
    parser.add_argument("--bucket-cap-mb", type=float, nargs="+", default=[25.0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per rank")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--no-shm", action="store_true", help="tcp sockets, no shared memory")
    parser.add_argument(
        "--no-compare", dest="compare", action="store_false", help="skip the run without stats"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or min(args.world) < 2:
        raise ValueError(
            f"--steps {args.steps}, --warmup {args.warmup}, --world {args.world}: give positive "
            "steps, warmup ≥ 0 and world sizes ≥ 2 (one rank has no all-reduce to hide)"
        )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs ({cpu_name()}); Python "
        f"{platform.python_version()}; one BLAS thread per rank"
    )
    print(
        f"char GPT {GPT_SIZES}, batch {GPT_BATCH} per rank, tcp "
        f"({'sockets' if args.no_shm else 'same-host shared memory'}); {args.steps} steps"
    )
    print(f"before: {load_note()}")
    rows = [overlap(w, cap, args) for w in args.world for cap in args.bucket_cap_mb]
    print(f"after: {load_note()}")
    print("\nsummary: hidden fraction of the all-reduce time (mean over ranks)")
    for row in rows:
        print(f"  {row['world']} ranks, bucket_cap_mb {row['cap']:g}: {row['hidden']:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
