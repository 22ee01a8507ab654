"""The ``dtrain`` command.

dtrain --version      print the version
dtrain info           versions of Python, numpy and the optional backends, and devices
dtrain bench collectives [-n N] [--backend tcp,shm,mpi|all] [--ops ...] [--min-bytes 4]
                         [--max-bytes 256M] [--iters K] [--dtype float32]
                      nccl-tests-style tables of each collective on each backend, with raw
                      mpi4py as the baseline (see dtrain.launch.bench_collectives)
dtrain launch [--nodes N] [--procs-per-node P | --gpus-per-node G] ... script.py [args]
                      run a script as N nodes x P ranks on a Ray cluster (an embedded one
                      by default); `dtrain launch --help` is its manual
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def get_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``dtrain`` command."""
    import dtrain

    parser = argparse.ArgumentParser(
        prog="dtrain",
        description="dtrain: distributed data-parallel training with a PyTorch-shaped API.",
    )
    parser.add_argument("--version", action="version", version=f"dtrain {dtrain.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser(
        "info",
        help="print versions, optional backends and devices (paste it into bug reports)",
    )
    bench = commands.add_parser("bench", help="benchmarks (bench collectives: bandwidth tables)")
    benchmarks = bench.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    collectives = benchmarks.add_parser(
        "collectives",
        help="time each collective on each backend, 4 B to 256 MiB, against raw MPI",
        description="nccl-tests-style tables (size, count, type, op, time, algbw, busbw) for "
        "each collective and backend; local ranks, started by this command",
    )
    from dtrain.launch.bench_collectives import add_arguments

    add_arguments(collectives)
    launch = commands.add_parser(
        "launch",
        add_help=False,  # `dtrain launch --help` is the launcher's own manual
        help="run a script as N nodes x P ranks on a Ray cluster (see dtrain launch --help)",
    )
    launch.add_argument("launch_args", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``dtrain`` command; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["launch"]:
        # Everything after `launch` belongs to the launcher and the script, options included
        # (argparse's REMAINDER alone does not take a leading `--nodes 4`).
        from dtrain.launch.launcher import main as launch

        return launch(argv[1:])
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.command == "info":
        from dtrain.launch.info import render

        print(render())
        return 0
    if args.command == "bench" and args.benchmark == "collectives":
        from dtrain.launch.bench_collectives import run

        return run(args)
    if args.command == "bench":  # no benchmark named: say which there are
        print(
            "usage: dtrain bench collectives [options]  (dtrain bench collectives --help)",
            file=sys.stderr,
        )
        return 2
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
