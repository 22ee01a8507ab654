"""``dtrain launch``'s validated command line: ``Plan`` (what to run, where, how often) and
``validate``, which checks everything that can be checked before anything starts.
Re-exported by ``launcher.py``."""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import sys
from dataclasses import dataclass

from dtrain.launch import torchrun
from dtrain.launch.worker import RANK_VARIABLES

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Plan:
    """A validated command line: what to run, where, and how often."""

    nodes: int
    procs: int
    gpus_per_proc: int
    cpus_per_proc: float
    command: list[str]  # after `python` (or the program itself, with python=False)
    cwd: str
    env: dict[str, str]
    python: bool = True
    address: str | None = None  # --address, or "local" for --standalone
    master_addr: str | None = None
    master_port: int | None = None

    @property
    def bundle(self) -> dict[str, float]:
        bundle = {"CPU": self.procs * self.cpus_per_proc}
        if self.gpus_per_proc:
            bundle["GPU"] = float(self.procs * self.gpus_per_proc)
        return bundle

    def needs(self) -> str:
        gpus = f", {self.procs * self.gpus_per_proc} GPU" if self.gpus_per_proc else ""
        return f"{self.nodes} node(s) with {self.procs * self.cpus_per_proc:g} CPU{gpus} each"


def validate(args: argparse.Namespace, cwd: str | None = None) -> Plan:
    """Check what can be checked before anything starts.

    Raises:
        ValueError: a bad value or combination, with the fix.
    """
    cwd = cwd or os.getcwd()
    torchrun.check(args)
    nodes = torchrun.nodes(args.nodes, args.nnodes)
    if nodes < 1:
        raise ValueError(f"--nodes {nodes}: a job needs at least one node")
    if isinstance(args.procs_per_node, int) and args.procs_per_node < 1:
        raise ValueError(f"--procs-per-node {args.procs_per_node}: use 1 or more")
    if args.gpus_per_node is not None and args.gpus_per_node < 1:
        raise ValueError(f"--gpus-per-node {args.gpus_per_node}: use 1 or more (or leave it out)")
    procs, gpus = torchrun.per_node(args.procs_per_node, args.gpus_per_node, _local_gpu_ids)
    if not args.cpus_per_proc > 0:
        raise ValueError(f"--cpus-per-proc {args.cpus_per_proc:g}: must be more than 0")
    if args.max_restarts < 0:
        raise ValueError(f"--max-restarts {args.max_restarts}: use 0 (no restart) or more")
    for flag in ("timeout", "placement_timeout"):
        value = getattr(args, flag)
        if value is not None and not value > 0:
            raise ValueError(f"--{flag.replace('_', '-')} {value:g}: must be more than 0 seconds")
    if args.backend == "mpi":
        raise ValueError(
            "--backend mpi: ranks started by dtrain launch are not MPI processes; run the "
            "script with `mpiexec -n N python script.py` instead, or use --backend tcp"
        )
    if args.backend == "nccl" and not gpus:
        raise ValueError("--backend nccl needs GPUs: add --gpus-per-node G")
    env = {}
    for pair in args.env:
        name, sep, value = pair.partition("=")
        if not sep or not _NAME.match(name):
            raise ValueError(f"--env {pair!r}: write it as KEY=VALUE, e.g. --env DTRAIN_DEBUG=1")
        if name in RANK_VARIABLES:
            raise ValueError(f"--env {name}: the launcher sets {name} for every rank itself")
        env[name] = value
    if args.module:
        command = ["-m", args.script, *args.script_args]
        if not _module_exists(args.script, cwd):
            raise ValueError(
                f"-m {args.script}: no such module from {cwd} (python -m would fail); check "
                "the name, the working directory, or install the package"
            )
    elif args.no_python:
        torchrun.check_program(args.script, cwd)
        command = [args.script, *args.script_args]
    else:
        if not os.path.isfile(os.path.join(cwd, args.script)):
            raise ValueError(f"script {args.script!r} does not exist (looked in {cwd})")
        # As typed, as torchrun passes it: the script's sys.argv[0] is what the user wrote.
        command = [args.script, *args.script_args]
    return Plan(
        nodes=nodes,
        procs=gpus or procs or 1,
        gpus_per_proc=1 if gpus else 0,
        cpus_per_proc=args.cpus_per_proc,
        command=command,
        cwd=cwd,
        env=env,
        python=not args.no_python,
        address="local" if args.standalone else args.address,
        master_addr=args.master_addr,
        master_port=args.master_port,
    )


def _local_gpu_ids() -> list[str]:
    from dtrain.launch.ray_cluster import local_gpu_ids

    return local_gpu_ids()


def _module_exists(name: str, cwd: str) -> bool:
    sys.path.insert(0, cwd)  # what `python -m` puts first
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
    finally:
        sys.path.remove(cwd)
