"""dtrain launch: run a training script as N nodes x P ranks on a Ray cluster.

usage:
  dtrain launch [--nodes N] [--procs-per-node P | --gpus-per-node G] [--cpus-per-proc C]
                [--address RAY_ADDRESS] [--backend auto|tcp|nccl] [--max-restarts K]
                [--log-dir DIR] [--timeout S] [--env KEY=VALUE ...]
                [-m | --no-python] script.py|module|program [script args ...]
  torchrun's flags work too: --nproc_per_node P|auto|cpu|gpu, --nnodes N|N:N, --standalone,
  --master-addr, --master-port, --node-rank 0, --max_restarts, --log_dir (options below;
  docs/launch.md, "Coming from torchrun", says what each does here)

examples:
  dtrain launch --nodes 4 examples/mlp_digits.py --epochs 5   # 4 simulated nodes, here
  dtrain launch --nodes 2 --procs-per-node 2 train.py         # 4 ranks, 2 per node
  dtrain launch --address 10.0.0.1:6379 --nodes 8 --gpus-per-node 4 train.py
  dtrain launch --nodes 4 --max-restarts 3 train.py --checkpoint ckpt.safetensors --resume
  dtrain launch --nodes 2 --log-dir logs --env DTRAIN_DEBUG=1 -m mypackage.train
  dtrain launch --standalone --nproc_per_node 4 train.py     # a torchrun command, renamed

where it runs:
  --address (or RAY_ADDRESS) joins that Ray cluster. Without one, a cluster that
  `ray start --head` left running on this machine is joined; otherwise an embedded Ray
  cluster is started for the job and stopped after it (--address local forces that). The
  embedded cluster listens on 127.0.0.1 only and simulates --nodes nodes on this machine
  with Ray's own several-nodes-on-one-host support, so a laptop takes the same scheduling
  path as a real cluster.

scheduling:
  A placement group holds one bundle per node, on distinct nodes (STRICT_SPREAD): P x C
  CPUs, and G GPUs, each. The launcher waits --placement-timeout seconds for the cluster
  to offer them, then fails saying what the cluster has. With --gpus-per-node G each node
  runs G ranks with one GPU each: every rank sees the node's G (CUDA_VISIBLE_DEVICES) and
  trains on cuda:LOCAL_RANK (DTRAIN_DEVICE), as under torchrun.

the ranks:
  Each rank is a fresh `python script.py args` (or `python -m module args`, or with
  --no-python `program args`) process in the launcher's working directory, its sys.argv[0]
  the script as typed, with torchrun's environment: RANK, LOCAL_RANK, WORLD_SIZE,
  LOCAL_WORLD_SIZE, NODE_RANK, MASTER_ADDR and MASTER_PORT (rank 0's node, and a port free
  there, or --master-port), GROUP_RANK, GROUP_WORLD_SIZE, ROLE_NAME, ROLE_RANK,
  ROLE_WORLD_SIZE, TORCHELASTIC_RUN_ID, TORCHELASTIC_RESTART_COUNT and
  TORCHELASTIC_MAX_RESTARTS, plus DTRAIN_SECRET (random for each attempt),
  DTRAIN_RESTART_COUNT (0, then 1, 2 ... after restarts), DTRAIN_BACKEND (when --backend is
  not auto), OMP_NUM_THREADS (C) and PYTHONUNBUFFERED=1; --env adds or overrides others.
  A script that calls dtrain.parallel.init_process_group() needs nothing else, and still
  runs unchanged as `python train.py` or `mpiexec -n 4 python train.py`, without Ray.

output:
  Every line a rank writes comes back as it is written, as `[rank N] line` on the
  launcher's stdout (stderr for the rank's stderr), and into --log-dir/rank_N.log.

failures:
  The launcher exits 0 only if every rank exits 0. When a rank fails (non-zero exit, a
  signal, or its node lost) the others are stopped (SIGTERM, SIGKILL 3 s later) and a
  summary names the rank that failed first, its node, its exit code or signal, and the end
  of its traceback; the launcher exits with that rank's code (128+N for signal N). With
  --max-restarts K the whole group starts again, up to K times, with a new rendezvous (new
  secret, and a new port unless --master-port); scripts resume from their checkpoint
  (DTRAIN_RESTART_COUNT > 0 tells them they are a restart). --timeout S stops the job
  after S seconds (exit code 124). Ctrl-C or SIGTERM stops every rank, then the embedded
  cluster (exit code 130 or 143).

Ray only starts the processes and carries their output; ranks exchange tensors directly
(tcp, nccl), so a training step never goes through Ray. See docs/launch.md.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from dtrain.launch import torchrun
from dtrain.launch.worker import RANK_VARIABLES

BACKENDS = ("auto", "tcp", "mpi", "nccl")
EXIT_USAGE = 2
EXIT_TIMEOUT = 124
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def get_parser() -> argparse.ArgumentParser:
    """The argument parser of ``dtrain launch``."""
    parser = argparse.ArgumentParser(
        prog="dtrain launch",
        description=__doc__.split("\n\n", 2)[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = parser.add_argument_group("where and how many")
    where.add_argument("--nodes", type=int, metavar="N", help="nodes (default 1)")
    per_node = where.add_mutually_exclusive_group()
    per_node.add_argument(
        "--procs-per-node",
        "--nproc-per-node",
        "--nproc_per_node",
        type=torchrun.nproc_value,
        metavar="P",
        help="ranks per node (default 1); torchrun's auto, cpu, gpu count this machine's",
    )
    per_node.add_argument(
        "--gpus-per-node",
        type=int,
        metavar="G",
        help="GPUs per node: G ranks per node, one GPU each",
    )
    where.add_argument(
        "--cpus-per-proc",
        type=float,
        default=1.0,
        metavar="C",
        help="CPUs Ray reserves for each rank; also its OMP_NUM_THREADS (default 1)",
    )
    where.add_argument(
        "--address",
        metavar="RAY_ADDRESS",
        help="Ray cluster to join (default: $RAY_ADDRESS, a local `ray start` cluster, or an "
        "embedded one); 'local' always starts an embedded cluster",
    )
    where.add_argument(
        "--placement-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="how long to wait for the cluster to offer the nodes (default 60)",
    )
    job = parser.add_argument_group("the job")
    job.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="collective backend the script's init_process_group() should use (DTRAIN_BACKEND)",
    )
    job.add_argument(
        "--max-restarts",
        "--max_restarts",
        type=int,
        default=0,
        metavar="K",
        help="restart the whole group up to K times after a failure (default 0)",
    )
    job.add_argument(
        "--log-dir",
        "--log_dir",
        metavar="DIR",
        help="also write each rank's output to DIR/rank_N.log",
    )
    job.add_argument(
        "--timeout", type=float, metavar="S", help="stop the job after S seconds (exit 124)"
    )
    job.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set an environment variable in every rank (repeat the flag for more)",
    )
    job.add_argument(
        "-m",
        "--module",
        action="store_true",
        help="run the script argument as a module, as `python -m module`",
    )
    torchrun.add_arguments(parser)
    parser.add_argument("script", metavar="script.py|module", help="what every rank runs")
    parser.add_argument(
        "script_args", nargs=argparse.REMAINDER, metavar="args", help="its arguments"
    )
    return parser


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


class StoppedBySignalError(Exception):
    """SIGINT or SIGTERM reached the launcher."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Signals:
    """SIGINT/SIGTERM handling: a flag the run loop checks; an exception anywhere else.

    While a group runs (``watching``), the first signal only sets ``received`` so the loop
    stops the ranks in order; a second one, or one outside the loop, raises
    ``StoppedBySignalError``.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.watching = False
        self._saved: dict[int, Any] = {}

    def _handle(self, signum: int, frame: object) -> None:
        first = self.received is None
        self.received = self.received or signum
        if not (self.watching and first):
            raise StoppedBySignalError(signum)

    def install(self) -> None:
        """(Re)install the handlers: starting a Ray node replaces the SIGTERM handler."""
        if threading.current_thread() is not threading.main_thread():
            return  # signals reach the main thread only; its owner handles them
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous = signal.signal(signum, self._handle)
            self._saved.setdefault(signum, previous)

    def restore(self) -> None:
        for signum, handler in self._saved.items():
            signal.signal(signum, handler)
        self._saved.clear()

    def poll(self) -> int | None:
        return self.received


def _say(message: str) -> None:
    print(f"dtrain launch: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _cluster(args: argparse.Namespace, plan: Plan) -> Iterator[Any]:
    from dtrain.launch import ray_cluster

    address = ray_cluster.resolve_address(plan.address)
    if address is None:
        if plan.gpus_per_proc:
            offered = ray_cluster.local_gpu_ids()
            if len(offered) < plan.nodes * plan.procs:
                raise ValueError(
                    f"--nodes {plan.nodes} --gpus-per-node {plan.procs} needs "
                    f"{plan.nodes * plan.procs} GPUs on this machine (embedded cluster), but "
                    f"it offers {len(offered)}; use fewer, or --address to join a cluster"
                )
        _say(f"starting an embedded Ray cluster: {plan.nodes} node(s) on 127.0.0.1")
        context = ray_cluster.embedded(
            plan.nodes, plan.bundle["CPU"], int(plan.bundle.get("GPU", 0))
        )
    else:
        _say(f"joining the Ray cluster at {address}")
        context = ray_cluster.joined(address)
    with context as session:
        yield session


def _check_offers(session: Any, plan: Plan) -> None:
    bundle = plan.bundle
    fits = [
        node
        for node in session.nodes
        if node.cpus >= bundle["CPU"] and node.gpus >= bundle.get("GPU", 0)
    ]
    if not fits:
        raise ValueError(
            f"--nodes {plan.nodes} needs {plan.needs()}, and no node of the cluster can hold "
            f"one: {session.offers()}"
        )


def _place(ray: Any, session: Any, plan: Plan, timeout: float) -> Any:
    from dtrain.launch import ray_cluster

    first = torchrun.master_node(ray, session, plan.master_addr)
    try:
        return ray_cluster.placement_group(ray, plan.bundle, plan.nodes, timeout, first)
    except TimeoutError:
        offers = ray_cluster.Session(
            session.address, session.embedded, ray_cluster.alive_nodes(ray)
        )
        raise RuntimeError(
            f"the cluster did not offer {plan.needs()} (on distinct nodes) within "
            f"{timeout:g} s; {offers.offers()}\nask for fewer nodes or smaller ones, add "
            "nodes, or wait longer with --placement-timeout"
        ) from None


def _run(args: argparse.Namespace, plan: Plan, signals: Signals) -> int:
    from dtrain.launch.group import Output, RankGroup, summary
    from dtrain.launch.ray_cluster import import_ray
    from dtrain.parallel.api import new_secret

    ray = import_ray()
    start = time.monotonic()
    deadline = start + args.timeout if args.timeout else None
    output = Output(args.log_dir, sys.stdout, sys.stderr)
    with _cluster(args, plan) as session:
        signals.install()
        if not session.embedded:
            _check_offers(session, plan)
        group = RankGroup(
            ray,
            _place(ray, session, plan, args.placement_timeout),
            plan.nodes,
            plan.procs,
            plan.bundle,
            plan.command,
            plan.cwd,
            {
                "backend": args.backend,
                "cpus": _threads(plan.cpus_per_proc),
                "env": plan.env,
                "run_id": uuid.uuid4().hex,  # the job's, the same on every attempt
                "max_restarts": args.max_restarts,
            },
            python=plan.python,
            master_port=plan.master_port,
        )
        try:
            for attempt in range(args.max_restarts + 1):
                began = time.monotonic()
                signals.watching = True
                try:
                    outcome = group.run(attempt, new_secret(), output, deadline, signals.poll)
                finally:
                    signals.watching = False
                if outcome.ok:
                    _say(f"all {group.world} ranks exited 0 ({time.monotonic() - start:.1f} s)")
                    return 0
                if outcome.interrupted:
                    _say(f"stopped by {signal.Signals(outcome.interrupted).name}")
                    return 128 + outcome.interrupted
                if outcome.timed_out:
                    _say(f"--timeout {args.timeout:g} s reached; stopped every rank")
                    return EXIT_TIMEOUT
                failure = outcome.failure
                if failure is None:
                    _say("the ranks could not be stopped in time; ended their node agents")
                    return 1
                print(
                    summary(failure, outcome, group.world, time.monotonic() - began),
                    file=sys.stderr,
                    flush=True,
                )
                if attempt == args.max_restarts:
                    if args.max_restarts:
                        _say(f"giving up after {args.max_restarts} restart(s)")
                    return failure.exit_status
                _say(
                    f"restarting every rank with a new rendezvous "
                    f"(restart {attempt + 1} of {args.max_restarts})"
                )
            return 1  # not reached: the loop returns
        finally:
            group.close()
            output.close()
            from ray.util.placement_group import remove_placement_group

            with contextlib.suppress(Exception):
                remove_placement_group(group.group)


def _threads(cpus: float) -> int:
    return max(1, int(cpus))


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``dtrain launch``; returns the exit code (0 only if every rank exited 0)."""
    parser = get_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        plan = validate(args)
    except ValueError as exc:
        parser.print_usage(sys.stderr)
        print(f"dtrain launch: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    signals = Signals()
    signals.install()
    try:
        return _run(args, plan, signals)
    except StoppedBySignalError as exc:
        _say(f"stopped by {signal.Signals(exc.signum).name}")
        return 128 + exc.signum
    except ValueError as exc:  # what only the cluster could tell (GPUs, node sizes)
        print(f"dtrain launch: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RuntimeError as exc:
        _say(f"error: {exc}")
        return 1
    finally:
        signals.restore()


if __name__ == "__main__":
    sys.exit(main())
