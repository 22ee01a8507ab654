"""Seconds from the command to every rank's first line, and to the launcher's exit.

A trivial script (print one line, optionally time a small compute loop, exit) runs as 4 ranks
under each launcher, in turns, in the same run:

- ``mpiexec``          ``mpiexec -n 4 python trivial.py`` — the baseline (no Ray);
- ``launch cold``      ``dtrain launch --nodes 4 trivial.py`` — starts and stops an embedded
                       4-node Ray cluster every time (what a user's first command costs);
- ``launch warm``      ``dtrain launch --address <running cluster> --nodes 4 trivial.py`` —
                       the launcher's own cost on a cluster that is already up;
- ``python``           ``python trivial.py`` — one process, for scale.

``--steps N`` makes every rank time N steps of a 256x256 matmul and print the mean: the
per-step cost of running under each launcher once training runs (the launcher only relays
output, so it should be the same; every variant runs with OMP_NUM_THREADS=1, as dtrain
launch sets it, so BLAS threads do not oversubscribe the CPUs). Each row shows the median
over ``--rounds`` runs and its ratio to mpiexec.

    python bench/launch_overhead.py                 # 3 rounds
    python bench/launch_overhead.py --rounds 5 --steps 300
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

TRIVIAL = r"""
import os, sys, time
rank = int(os.environ.get("RANK") or os.environ.get("PMI_RANK")
           or os.environ.get("OMPI_COMM_WORLD_RANK") or 0)
print(f"ready {rank}", flush=True)
steps = int(sys.argv[1])
if steps:
    import numpy as np
    a = np.random.default_rng(rank).random((256, 256), dtype=np.float32)
    begin = time.perf_counter()
    for _ in range(steps):
        a = (a @ a) / 256.0
    print(f"step_ms {1000 * (time.perf_counter() - begin) / steps:.4f}", flush=True)
"""


READY = re.compile(r"ready (\d+)")
STEP = re.compile(r"step_ms (\d+\.\d+)")


def _mpiexec() -> str | None:
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


def run_once(command: list[str], ranks: int, env: dict, limit: float) -> dict:
    """Start ``command``; time every rank's first line and the exit; collect step times."""
    began = time.perf_counter()
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    first: dict[int, float] = {}
    steps: list[float] = []
    lines: list[str] = []

    def read() -> None:
        for line in proc.stdout:  # mpiexec may join two ranks' lines: search, don't split
            lines.append(line)
            for rank in READY.findall(line):
                first.setdefault(int(rank), time.perf_counter() - began)
            steps.extend(float(ms) for ms in STEP.findall(line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        code = None
    exited = time.perf_counter() - began
    reader.join(timeout=5)
    if code != 0 or len(first) < ranks:
        raise RuntimeError(f"{command} failed (exit {code}):\n{''.join(lines)[-3000:]}")
    return {
        "first": max(first.values()),
        "exit": exited,
        "step_ms": statistics.median(steps) if steps else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=int, default=4, help="ranks (nodes for dtrain launch)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=0, help="timed matmul steps per rank")
    parser.add_argument("--limit", type=float, default=180.0, help="seconds per run at most")
    args = parser.parse_args(argv)

    from dtrain.launch.ray_cluster import EmbeddedCluster

    folder = Path(tempfile.mkdtemp(prefix="dtrain-bench-"))
    script = folder / "trivial.py"
    script.write_text(TRIVIAL)
    python, n, steps = sys.executable, args.ranks, str(args.steps)
    launch = [python, "-m", "dtrain.launch.cli", "launch", "--nodes", str(n)]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RANK", "WORLD_SIZE")}
    env["OMP_NUM_THREADS"] = "1"  # what dtrain launch gives each rank: one BLAS thread
    cold_env = {**env, "RAY_TMPDIR": str(folder)}  # no `ray start` cluster: always embedded
    variants: dict[str, tuple[list[str], dict, int]] = {}
    mpiexec = _mpiexec()
    if mpiexec:
        variants["mpiexec"] = ([mpiexec, "-n", str(n), python, str(script), steps], env, n)
    variants["launch cold"] = ([*launch, str(script), steps], cold_env, n)
    print(f"starting a warm {n}-node embedded cluster for 'launch warm' ...", flush=True)
    warm = EmbeddedCluster(n, cpus_per_node=1)
    began = time.perf_counter()
    warm.start()
    warm_start = time.perf_counter() - began
    warm_env = {**env, **warm.env}
    variants["launch warm"] = (
        [*launch, "--address", warm.address, str(script), steps],
        warm_env,
        n,
    )
    variants["python"] = ([python, str(script), steps], env, 1)
    results: dict[str, list[dict]] = {name: [] for name in variants}
    try:
        for turn in range(args.rounds):
            for name, (command, run_env, ranks) in variants.items():
                results[name].append(run_once(command, ranks, run_env, args.limit))
                print(f"round {turn + 1}/{args.rounds} {name:<12} done", flush=True)
    finally:
        warm.stop()
        shutil.rmtree(folder, ignore_errors=True)

    def median(name: str, key: str) -> float | None:
        values = [run[key] for run in results[name] if run[key] is not None]
        return statistics.median(values) if values else None

    base = "mpiexec" if "mpiexec" in results else None
    print(f"\n{n} ranks, {args.rounds} rounds, medians; {os.cpu_count()} CPUs on this machine")
    print(f"(the warm cluster took {warm_start:.1f} s to start, outside the timings)")
    header = (
        f"{'launcher':<13}{'all ranks up s':>15}{'x mpiexec':>11}{'exit s':>9}{'x mpiexec':>11}"
    )
    print(header + (f"{'step ms':>9}" if args.steps else ""))
    for name in results:
        first, exited = median(name, "first"), median(name, "exit")
        row = f"{name:<13}{first:>15.2f}"
        row += f"{first / median(base, 'first'):>11.1f}" if base else f"{'-':>11}"
        row += f"{exited:>9.2f}"
        row += f"{exited / median(base, 'exit'):>11.1f}" if base else f"{'-':>11}"
        if args.steps:
            row += f"{median(name, 'step_ms'):>9.3f}"
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
