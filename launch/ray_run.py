"""Running a ``Plan`` on Ray: joining or starting the cluster, placing one bundle per node,
running the rank group (restarting it after a failure, up to --max-restarts), and the
launcher's SIGINT/SIGTERM handling. ``launcher.main`` calls ``_run``."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from dtrain.launch import torchrun
from dtrain.launch.plan import Plan

EXIT_TIMEOUT = 124


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
