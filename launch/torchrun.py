"""torchrun's flags for ``dtrain launch``, so a torchrun command line ports by renaming the program.

``torchrun --standalone --nproc_per_node 4 train.py`` becomes
``dtrain launch --standalone --nproc_per_node 4 train.py``. What each flag does here:

- ``--nproc-per-node`` / ``--nproc_per_node``: ``--procs-per-node``; also ``gpu`` (this
  machine's GPUs, one rank each, as ``--gpus-per-node``), ``cpu`` (this machine's CPUs) and
  ``auto`` (``gpu`` when there are GPUs, else ``cpu``), counted on the launching machine.
- ``--nnodes N`` or ``N:N``: ``--nodes N``. A range ``M:N`` (elastic) is refused.
- ``--standalone``: everything on this machine: ``--address local`` (an embedded cluster).
- ``--master-addr A``: node rank 0 (rank 0, the rendezvous store) is the cluster node at A; a
  loopback address means the launching machine's node.
- ``--master-port P``: the rendezvous port (default: a free port, new on every attempt).
- ``--node-rank``: only 0; dtrain starts every node from one command.
- ``--no-python``: run the script as an executable instead of ``python script``.
- ``-m`` / ``--module``, ``--max_restarts``, ``--log_dir``: dtrain's own flags.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import shutil
import socket
from collections.abc import Callable
from typing import Any

NPROC_WORDS = ("auto", "cpu", "gpu")


def nproc_value(text: str) -> int | str:
    """argparse type of ``--nproc-per-node``: a count, or torchrun's ``auto``, ``cpu``, ``gpu``."""
    if text in NPROC_WORDS:
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}: give a number of ranks per node, or auto, cpu or gpu"
        ) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """torchrun's flags that dtrain's own flags do not already spell."""
    group = parser.add_argument_group(
        "torchrun's flags",
        "so that a torchrun command line runs by renaming the program\n"
        "(docs/launch.md, 'Coming from torchrun', says what each does here)",
    )
    group.add_argument(
        "--nnodes",
        metavar="N|N:N",
        help="torchrun's spelling of --nodes; a range must be N:N (dtrain is not elastic)",
    )
    group.add_argument(
        "--standalone",
        action="store_true",
        help="run on an embedded cluster on this machine (= --address local)",
    )
    group.add_argument(
        "--master-addr",
        "--master_addr",
        metavar="ADDR",
        help="rank 0 runs on the cluster node at ADDR (loopback: this machine's node)",
    )
    group.add_argument(
        "--master-port",
        "--master_port",
        type=int,
        metavar="PORT",
        help="rendezvous port on rank 0's node (default: a free one, new on each attempt)",
    )
    group.add_argument(
        "--node-rank",
        "--node_rank",
        type=int,
        metavar="0",
        help="only 0: dtrain launch starts every node from this one command",
    )
    group.add_argument(
        "--no-python",
        "--no_python",
        action="store_true",
        help="run the script as an executable (no `python` in front)",
    )


def nodes(given: int | None, nnodes: str | None) -> int:
    """The node count from ``--nodes`` and torchrun's ``--nnodes`` (N or N:N).

    Raises:
        ValueError: not a number, an elastic range, or two different counts.
    """
    if nnodes is None:
        return 1 if given is None else given
    low, sep, high = nnodes.partition(":")
    try:
        low_n, high_n = int(low), int(high if sep else low)
    except ValueError:
        raise ValueError(
            f"--nnodes {nnodes!r}: give a number of nodes (--nnodes 2) or an equal range (2:2)"
        ) from None
    if low_n != high_n:
        raise ValueError(
            f"--nnodes {nnodes}: dtrain is not elastic, a job runs on a fixed number of nodes; "
            f"give one count, e.g. --nnodes {high_n} (with --max-restarts K to restart the "
            "whole group after a failure)"
        )
    if given is not None and given != low_n:
        raise ValueError(f"--nodes {given} and --nnodes {nnodes} disagree; give one of them")
    return low_n


def cpu_count() -> int:
    """CPUs this process may use (torchrun's count for ``--nproc-per-node cpu``)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def per_node(
    nproc: int | str | None, gpus: int | None, gpu_ids: Callable[[], list[str]]
) -> tuple[int | None, int | None]:
    """``(procs_per_node, gpus_per_node)`` with torchrun's ``auto``/``cpu``/``gpu`` counted here.

    Raises:
        ValueError: ``gpu`` on a machine without GPUs.
    """
    if not isinstance(nproc, str):
        return nproc, gpus
    if nproc == "cpu":
        return cpu_count(), None
    found = len(gpu_ids())
    if found:
        return None, found
    if nproc == "gpu":
        raise ValueError(
            "--nproc-per-node gpu: this machine shows no GPU (CUDA_VISIBLE_DEVICES / Ray's "
            "detection); give a number of ranks, or cpu"
        )
    return cpu_count(), None  # auto without GPUs: one rank per CPU, as torchrun


def check(args: argparse.Namespace) -> None:
    """Refuse the torchrun flags (and combinations) that have no dtrain meaning.

    Raises:
        ValueError: with what to do instead.
    """
    if args.node_rank not in (None, 0):
        raise ValueError(
            f"--node-rank {args.node_rank}: dtrain launch starts every node from one command "
            "(Ray places them and sets NODE_RANK); run it once, on one machine, with "
            "--nnodes N --address RAY_ADDRESS, instead of once per node"
        )
    if args.master_port is not None and not 0 < args.master_port < 65536:
        raise ValueError(f"--master-port {args.master_port}: give a port from 1 to 65535")
    if args.standalone and args.address not in (None, "local"):
        raise ValueError(
            f"--standalone runs on an embedded cluster on this machine, but --address "
            f"{args.address} joins a cluster; give one of them"
        )
    if args.no_python and args.module:
        raise ValueError("--no-python and -m/--module: give one of them (as torchrun)")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) means this machine's loopback."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def resolve_host(host: str) -> str:
    """``host``'s address (``--master-addr`` may be a name, as for torchrun).

    Raises:
        ValueError: the name does not resolve.
    """
    try:
        return socket.getaddrinfo(host, None)[0][4][0]
    except (OSError, UnicodeError):
        raise ValueError(
            f"--master-addr {host}: the name does not resolve; give the address of a node"
        ) from None


def check_program(program: str, cwd: str) -> None:
    """``--no-python``: the script must be an executable file, or a program on PATH.

    Raises:
        ValueError: it is neither.
    """
    if os.sep in program:
        path = os.path.join(cwd, program)
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise ValueError(
                f"--no-python {program}: not an executable file (looked in {cwd}); "
                f"chmod +x it, or drop --no-python to run it with python"
            )
    elif shutil.which(program) is None:
        raise ValueError(
            f"--no-python {program}: no such program on PATH; give its path (./{program})"
        )


def master_node(ray: Any, session: Any, master_addr: str | None) -> str | None:
    """``--master-addr``: the address of the node that must be node rank 0 (None: any).

    Args:
        ray: the connected ``ray`` module.
        session: the cluster (``ray_cluster.Session``): its nodes and what they offer.
        master_addr: the flag's value, a name or an address.

    Raises:
        ValueError: no node of the cluster has that address.
    """
    if master_addr is None:
        return None
    address = resolve_host(master_addr)
    if is_loopback(address):  # this machine, as Ray knows it
        address = ray.util.get_node_ip_address()
    if not any(node.ip == address for node in session.nodes):
        raise ValueError(
            f"--master-addr {master_addr} ({address}): no node of the cluster has that "
            f"address, so rank 0 cannot run there; {session.offers()}\ngive one of these "
            "addresses, or leave --master-addr out (rank 0 then runs on the first node placed)"
        )
    return address
