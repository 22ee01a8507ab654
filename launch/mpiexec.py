"""Starting N ranks on this machine with ``mpiexec``, whichever MPI provides it.

The tests and ``dtrain bench collectives`` run the ``mpiexec`` next to their Python: the
mpich wheel's (MPICH's Hydra) in a virtual environment, or Open MPI's (``/usr/bin/mpiexec``
of Debian's openmpi-bin, with mpi4py built against it). Hydra needs no options. Open MPI's
``mpiexec``, left to its defaults:

- refuses to start as root (containers, CI machines) unless OMPI_ALLOW_RUN_AS_ROOT=1 and
  OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 are set: set here, for root only;
- refuses more ranks than the machine has cores ("not enough slots"): ``--oversubscribe``,
  always, since its slots are physical cores, which ``os.cpu_count()`` does not tell;
- binds rank i to core i when it starts one or two ranks, so jobs started side by side (the
  tests under pytest-xdist) all run on cores 0 and 1: ``--bind-to none``, as Hydra does.

docs/parallel.md ("Under Open MPI") gives the same options for scripts that users start
with ``mpiexec`` themselves.
"""

from __future__ import annotations

import functools
import os
import subprocess

OPEN_MPI_OPTIONS = ("--oversubscribe", "--bind-to", "none")
_ROOT_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


@functools.lru_cache(maxsize=8)
def is_open_mpi(mpiexec: str) -> bool:
    """Whether ``mpiexec`` is Open MPI's: its ``--version`` names OpenRTE (4.x) or Open MPI.

    Raises:
        RuntimeError: ``mpiexec`` could not be run, or hung.
    """
    try:
        done = subprocess.run(
            [mpiexec, "--version"],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(
            f"`{mpiexec} --version` failed ({exc}); is it an MPI's mpiexec?"
        ) from None
    text = (done.stdout + done.stderr).decode(errors="replace")
    return "OpenRTE" in text or "Open MPI" in text


def local_command(mpiexec: str | os.PathLike, nprocs: int) -> tuple[list[str], dict[str, str]]:
    """The command that starts ``nprocs`` ranks on this machine, up to the program to run, and
    the variables to add to its environment.

    Args:
        mpiexec: the launcher to run (a path or a name on PATH).
        nprocs: how many ranks.

    Returns:
        ``([mpiexec, options..., "-n", nprocs], extra_environment)``.
    """
    command, env = [str(mpiexec)], {}
    if is_open_mpi(str(mpiexec)):
        command += OPEN_MPI_OPTIONS
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            env.update(_ROOT_ENV)
    return [*command, "-n", str(nprocs)], env
