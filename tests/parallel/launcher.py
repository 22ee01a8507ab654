"""Start real worker processes for the parallel tests, and collect what each rank returned.

``run_tcp(n, "workers:fn", args)`` starts ``n`` Python processes with torchrun's environment
(RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE=n, MASTER_ADDR=127.0.0.1,
MASTER_PORT=<a free port>, DTRAIN_SECRET);
``run_mpi(n, ...)`` starts them with the ``mpiexec`` next to this Python (the mpich wheel's,
or a link to Open MPI's, with the options ``dtrain.launch.mpiexec`` adds for that one). Each
process runs this file as a script, calls ``fn(**args)`` from ``tests/parallel/<module>.py``
and writes its return value, or the exception it raised, as JSON to ``<out>/rank<r>.json``.
A per-launch wall-clock guard kills every process still alive, so a bug can fail a test but
never hang CI.
"""

from __future__ import annotations

import contextlib
import faulthandler
import importlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MPIEXEC = Path(sys.executable).parent / "mpiexec"
GUARD_S = 90.0  # the default wall-clock guard of one launch
# The skip reason where have_mpiexec() is False.
NO_MPIEXEC = "needs mpi4py and an mpiexec next to Python (pip install mpich, or link Open MPI's)"
# Variables a worker must not inherit from the pytest process (or an outer launcher).
_CLEARED = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "NODE_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "DTRAIN_SECRET",
    "DTRAIN_DEBUG",
    "DTRAIN_TIMEOUT",
    "PMI_RANK",
    "PMI_SIZE",
    "MPI_LOCALRANKID",
    "MPI_LOCALNRANKS",
    "OMPI_COMM_WORLD_RANK",
    "OMPI_COMM_WORLD_SIZE",
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "OMPI_COMM_WORLD_LOCAL_SIZE",
    "PMIX_RANK",
)
# Where each launcher puts a rank's number: ours and torchrun's, MPICH's Hydra, Open MPI's.
_RANK_VARIABLES = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK")


@dataclass
class RankResult:
    """What one rank left behind: exit code, its JSON result, its output."""

    rank: int
    returncode: int | None  # None: still running when the guard fired (then killed)
    result: dict | None  # {"ok": True, "value": ...} or {"ok": False, "type": ..., ...}
    output: str = ""  # stdout and stderr (under mpiexec: every rank's, interleaved)

    @property
    def ok(self) -> bool:
        return self.result is not None and self.result["ok"]

    @property
    def value(self) -> Any:
        assert self.ok, self.describe()
        return self.result["value"]

    @property
    def error(self) -> dict:
        """The exception this rank's function raised (type, message, op, seq, rank)."""
        assert self.result is not None and not self.result["ok"], self.describe()
        return self.result

    def describe(self) -> str:
        return (
            f"rank {self.rank}: exit code {self.returncode}, result {self.result}\n"
            f"--- output ---\n{self.output[-6000:]}"
        )


@dataclass
class Launch:
    """All ranks of one launch; ``timed_out`` when the guard had to kill them."""

    ranks: list[RankResult]
    timed_out: bool
    wall_s: float

    def __getitem__(self, rank: int) -> RankResult:
        return self.ranks[rank]

    def __iter__(self):
        return iter(self.ranks)

    def describe(self) -> str:
        head = f"timed out after {self.wall_s:.1f} s\n" if self.timed_out else ""
        return head + "\n".join(r.describe() for r in self.ranks)

    def values(self) -> list:
        """Every rank's return value, asserting that every rank finished cleanly."""
        assert not self.timed_out and all(r.ok and r.returncode == 0 for r in self), self.describe()
        return [r.value for r in self]


def free_port() -> int:
    """A port nobody listens on right now (the usual race applies; it is tiny on localhost)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _base_env(extra: dict | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    # One BLAS thread per rank: up to five ranks share two cores.
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    # These ranks hold CPU tensors: with a GPU on the machine, local_device() (and so
    # init_process_group() with no backend) would otherwise pick it and nccl. The GPU
    # workers name nccl and their devices themselves.
    env["DTRAIN_DEVICE"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    for name, value in (extra or {}).items():
        if value is None:  # None: leave the variable unset
            env.pop(name, None)
        else:
            env[name] = str(value)
    return env


def _command(target: str, args: dict | None, out: Path, guard: float) -> list[str]:
    spec = json.dumps({"target": target, "args": args or {}, "out": str(out), "guard": guard})
    return [sys.executable, str(Path(__file__).resolve()), spec]


def _kill(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the session: mpiexec's proxies and ranks too
    with contextlib.suppress(Exception):
        proc.wait(5)


def _wait_all(procs: list[subprocess.Popen], guard: float) -> bool:
    """Wait for every process; True when the guard fired first."""
    deadline = time.monotonic() + guard
    while any(p.poll() is None for p in procs):
        if time.monotonic() > deadline:
            return True
        time.sleep(0.02)
    return False


def _collect(out: Path, rank: int, returncode: int | None, output: str) -> RankResult:
    path = out / f"rank{rank}.json"
    result = json.loads(path.read_text()) if path.exists() else None
    return RankResult(rank, returncode, result, output)


def run_tcp(
    world_size: int,
    target: str,
    args: dict | None = None,
    env: dict | None = None,
    rank_env: dict[int, dict] | None = None,
    rank_args: dict[int, dict] | None = None,
    guard: float = GUARD_S,
) -> Launch:
    """Start ``world_size`` processes that rendezvous over tcp and run ``target``.

    ``env`` is added to every rank's environment, ``rank_env[r]`` to rank r's only (e.g. a
    different secret); ``rank_args[r]`` updates rank r's keyword arguments."""
    base = {
        "WORLD_SIZE": world_size,
        # All ranks on this host, as torchrun says: on a machine with fewer GPUs than ranks
        # (the one-GPU device machine), local_device() then keeps them on the CPU and tcp.
        "LOCAL_WORLD_SIZE": world_size,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": free_port(),
        "DTRAIN_SECRET": "test-secret",
        **(env or {}),
    }
    procs: list[subprocess.Popen] = []
    logs = []
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dtrain-test-") as tmp:
        out = Path(tmp)
        try:
            for rank in range(world_size):
                rank_environment = _base_env(
                    {"LOCAL_RANK": rank, **base, "RANK": rank, **(rank_env or {}).get(rank, {})}
                )
                log = open(out / f"rank{rank}.log", "w+b")  # noqa: SIM115 - closed below
                logs.append(log)
                merged = {**(args or {}), **(rank_args or {}).get(rank, {})}
                procs.append(
                    subprocess.Popen(
                        _command(target, merged, out, guard),
                        env=rank_environment,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            timed_out = _wait_all(procs, guard)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    _kill(proc)
        results = []
        for rank, (proc, log) in enumerate(zip(procs, logs)):
            log.seek(0)
            text = log.read().decode(errors="replace")
            log.close()
            results.append(_collect(out, rank, proc.returncode, text))
    return Launch(results, timed_out, time.monotonic() - start)


def have_mpiexec() -> bool:
    """True when an mpiexec sits next to this Python, and mpi4py imports."""
    return MPIEXEC.exists() and importlib.util.find_spec("mpi4py") is not None


def run_mpi(
    world_size: int,
    target: str,
    args: dict | None = None,
    env: dict | None = None,
    guard: float = GUARD_S,
) -> Launch:
    """Start ``world_size`` ranks with ``mpiexec -n world_size`` running ``target``."""
    from dtrain.launch.mpiexec import local_command

    start = time.monotonic()
    prefix, launcher_env = local_command(MPIEXEC, world_size)
    with tempfile.TemporaryDirectory(prefix="dtrain-test-") as tmp:
        out = Path(tmp)
        with open(out / "mpiexec.log", "w+b") as log:
            proc = subprocess.Popen(
                [*prefix, *_command(target, args, out, guard)],
                env=_base_env({**launcher_env, **(env or {})}),
                stdin=subprocess.DEVNULL,  # mpiexec forwards its stdin to rank 0
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                timed_out = _wait_all([proc], guard)
            finally:
                if proc.poll() is None:
                    _kill(proc)
            log.seek(0)
            text = log.read().decode(errors="replace")
        results = [_collect(out, r, proc.returncode, text) for r in range(world_size)]
    return Launch(results, timed_out, time.monotonic() - start)


# ---- the worker side: this file run as a script ------------------------------------------------
def _describe_exception(exc: BaseException) -> dict:
    return {
        "ok": False,
        "type": type(exc).__name__,
        "message": str(exc),
        "op": getattr(exc, "op", None),
        "seq": getattr(exc, "seq", None),
        "rank": getattr(exc, "rank", None),
        "traceback": traceback.format_exc(),
    }


def _worker_main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    rank = int(next((os.environ[v] for v in _RANK_VARIABLES if os.environ.get(v)), 0))
    # A hung worker prints every thread's stack and exits shortly before the launcher's guard.
    faulthandler.dump_traceback_later(max(1.0, spec["guard"] - 3), exit=True)
    module_name, _, function = spec["target"].partition(":")
    try:
        value = getattr(importlib.import_module(module_name), function)(**spec["args"])
        result: dict = {"ok": True, "value": value}
    except BaseException as exc:  # reported to the test, which decides what was expected
        result = _describe_exception(exc)
    out = Path(spec["out"])
    partial = out / f"rank{rank}.json.partial"
    partial.write_text(json.dumps(result))
    partial.replace(out / f"rank{rank}.json")
    sys.stdout.flush()
    sys.stderr.flush()
    if os.environ.get("DTRAIN_TEST_HARD_EXIT"):
        os._exit(0)  # skip interpreter (and MPI) shutdown: for tests that leave peers broken


if __name__ == "__main__":
    _worker_main(sys.argv[1])
