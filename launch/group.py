"""One attempt of a job, seen from the launcher: start every rank, relay output, end on failure.

``RankGroup`` owns the node agents (one Ray actor per placement-group bundle, kept across
restarts) and runs attempts: it asks rank 0's agent for a free port (the rendezvous), starts
every node's ranks at once, prints their output with a ``[rank N]`` prefix as it arrives, and
waits. The first rank that exits non-zero (or whose node is lost) ends the attempt: the
others are stopped (SIGTERM, then SIGKILL after ``STOP_GRACE_S``) and the attempt's
``Outcome`` names the rank that failed first, by the time its process ended.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from dtrain.launch.worker import NodeAgent

STOP_GRACE_S = 3.0  # SIGTERM → SIGKILL
POLL_S = 1.0  # an agent's poll returns at once when there is output, else after this
SETTLE_S = 0.3  # after a first failure, wait this long for earlier exits still in flight
DRAIN_S = 15.0  # after stopping: how long to wait for the last lines and exit codes
TAIL_LINES = 200  # per rank: what the failure summary can quote


@dataclass
class Failure:
    """The rank that failed first: where, how, and the end of its output."""

    rank: int
    node_rank: int
    node: str
    pid: int | None
    code: int | None  # exit code; negative: killed by that signal; None: its node was lost
    ended: float
    tail: list[str] = field(default_factory=list)

    @property
    def exit_status(self) -> int:
        """What the launcher exits with: the code, 128 + signal, or 1 for a lost node."""
        if self.code is None:
            return 1
        return 128 - self.code if self.code < 0 else self.code

    def how(self) -> str:
        if self.code is None:
            return "its node (Ray actor) was lost"
        if self.code < 0:
            try:
                name = signal.Signals(-self.code).name
            except ValueError:
                name = f"signal {-self.code}"
            return f"killed by {name} (signal {-self.code})"
        return f"exit code {self.code}"


@dataclass
class Outcome:
    """How an attempt ended."""

    ok: bool
    failure: Failure | None = None
    interrupted: int | None = None  # the signal that stopped the launcher
    timed_out: bool = False
    stopped: list[int] = field(default_factory=list)  # ranks the launcher stopped
    failed: list[int] = field(default_factory=list)  # every rank that failed on its own


class Output:
    """Prints ranks' lines with a ``[rank N]`` prefix, copies them to ``log_dir/rank_N.log``,
    and keeps each rank's last lines for the failure summary."""

    def __init__(self, log_dir: str | None, stdout: TextIO, stderr: TextIO) -> None:
        self.log_dir = log_dir
        self.stdout, self.stderr = stdout, stderr
        self._files: dict[int, TextIO] = {}
        self.tails: dict[int, deque] = {}
        if log_dir:
            os.makedirs(log_dir, exist_ok=True)

    def begin(self, ranks: int, attempt: int) -> None:
        self.tails = {rank: deque(maxlen=TAIL_LINES) for rank in range(ranks)}
        if not self.log_dir:
            return
        for rank in range(ranks):
            if rank not in self._files:
                path = os.path.join(self.log_dir, f"rank_{rank}.log")
                self._files[rank] = open(path, "w", buffering=1, encoding="utf-8")  # noqa: SIM115
            if attempt:
                self._files[rank].write(f"--- dtrain launch: restart {attempt} ---\n")

    def line(self, rank: int, stream: str, text: str) -> None:
        target = self.stderr if stream == "stderr" else self.stdout
        target.write(f"[rank {rank}] {text}\n")
        self.tails.setdefault(rank, deque(maxlen=TAIL_LINES)).append((stream, text))
        if rank in self._files:
            self._files[rank].write(text + "\n")

    def flush(self) -> None:
        self.stdout.flush()
        self.stderr.flush()

    def tail(self, rank: int) -> list[str]:
        """The traceback at the end of the rank's stderr, else its last lines."""
        lines = list(self.tails.get(rank, ()))
        errors = [text for stream, text in lines if stream == "stderr"]
        starts = [i for i, text in enumerate(errors) if text.startswith("Traceback (most recent")]
        if starts:
            return errors[starts[-1] :][-40:]
        return (errors or [text for _, text in lines])[-15:]

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()


class RankGroup:
    """The job's node agents and how its ranks map onto them.

    Args:
        ray: the ``ray`` module (driver connected).
        group: the placement group, one bundle per node.
        nodes, procs: nodes and ranks per node.
        bundle: each bundle's resources (the agent holds all of it).
        command: what follows ``python`` for every rank (script or ``-m module``, args).
        cwd: the ranks' working directory (the launcher's, when it exists on the node).
        job: backend, cpus per rank, ``--env`` pairs, run id and max restarts, passed to every
            rank.
        python: run ``python command...``; False: ``command`` is the program (``--no-python``).
        master_port: the rendezvous port on every attempt; None: a free one, new each attempt.
    """

    def __init__(
        self,
        ray: Any,
        group: Any,
        nodes: int,
        procs: int,
        bundle: dict[str, float],
        command: list[str],
        cwd: str,
        job: dict,
        python: bool = True,
        master_port: int | None = None,
    ) -> None:
        self.ray = ray
        self.group = group
        self.nodes, self.procs = nodes, procs
        self.world = nodes * procs
        self.bundle = bundle
        self.command, self.cwd, self.job = command, cwd, job
        self.python, self.master_port = python, master_port
        self.agents: list[Any] = [None] * nodes
        self.where: list[dict] = [{}] * nodes
        self.pids: dict[int, int] = {}
        self._remote: Any = None

    def _agent(self, index: int) -> Any:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        if self._remote is None:
            self._remote = self.ray.remote(NodeAgent)
        return self._remote.options(
            num_cpus=self.bundle.get("CPU", 0),
            num_gpus=self.bundle.get("GPU", 0),
            max_concurrency=4,  # poll blocks while stop runs
            scheduling_strategy=PlacementGroupSchedulingStrategy(
                self.group, placement_group_bundle_index=index
            ),
        ).remote()

    def ensure_agents(self, timeout: float = 120.0) -> None:
        """Create the missing agents (all on the first attempt) and learn where they run."""
        missing = [index for index, agent in enumerate(self.agents) if agent is None]
        for index in missing:
            self.agents[index] = self._agent(index)
        try:
            found = self.ray.get(
                [self.agents[i].describe.remote() for i in missing], timeout=timeout
            )
        except self.ray.exceptions.GetTimeoutError:
            raise RuntimeError(
                f"the node agents did not start within {timeout:g} s; is the cluster overloaded?"
            ) from None
        for index, where in zip(missing, found):
            self.where[index] = where

    def node_of(self, rank: int) -> int:
        return rank // self.procs

    def describe_node(self, node_rank: int) -> str:
        where = self.where[node_rank]
        return f"node {node_rank} ({where.get('hostname', '?')}, {where.get('ip', '?')})"

    def _specs(self, attempt: int, addr: str, port: int, secret: str) -> list[list[dict]]:
        return [
            [
                {
                    "rank": node * self.procs + local,
                    "local_rank": local,
                    "world_size": self.world,
                    "local_world_size": self.procs,
                    "node_rank": node,
                    "nodes": self.nodes,
                    "master_addr": addr,
                    "master_port": port,
                    "secret": secret,
                    "restart": attempt,
                    **self.job,
                }
                for local in range(self.procs)
            ]
            for node in range(self.nodes)
        ]

    def run(
        self,
        attempt: int,
        secret: str,
        output: Output,
        deadline: float | None,
        interrupted: Callable[[], int | None],
    ) -> Outcome:
        """Run every rank once; returns when all exited or the attempt was ended."""
        ray = self.ray
        self.ensure_agents()
        addr = self.where[0]["ip"]
        port = self.master_port or ray.get(self.agents[0].free_port.remote(), timeout=60)
        output.begin(self.world, attempt)
        specs = self._specs(attempt, addr, port, secret)
        started = ray.get(
            [
                agent.start.remote(attempt, self.command, self.cwd, node_specs, self.python)
                for agent, node_specs in zip(self.agents, specs)
            ],
            timeout=120,
        )
        for node_specs, pids in zip(specs, started):
            for spec, pid in zip(node_specs, pids):
                self.pids[spec["rank"]] = pid
        return self._watch(attempt, output, deadline, interrupted)

    def _watch(
        self,
        attempt: int,
        output: Output,
        deadline: float | None,
        interrupted: Callable[[], int | None],
    ) -> Outcome:
        ray = self.ray
        outcome = Outcome(ok=False)
        polls = {agent.poll.remote(attempt, POLL_S): node for node, agent in enumerate(self.agents)}
        exited: dict[int, int | None] = {}
        failures: list[Failure] = []
        stop_at: float | None = None  # when the launcher asked every agent to stop
        first_failure: float | None = None
        while len(exited) < self.world and polls:
            now = time.monotonic()
            if stop_at is None:
                signum = interrupted()
                late = deadline is not None and now > deadline
                settled = first_failure is not None and now - first_failure > SETTLE_S
                if signum or late or settled:
                    outcome.interrupted, outcome.timed_out = signum, late and not signum
                    stop_at = now
                    outcome.stopped = [r for r in range(self.world) if r not in exited]
                    for agent in self.agents:
                        if agent is not None:
                            agent.stop.remote(STOP_GRACE_S)
            elif now - stop_at > STOP_GRACE_S + DRAIN_S:
                break  # agents that never answered: their ranks die with them (close())
            ready, _ = ray.wait(list(polls), num_returns=1, timeout=0.2)
            for ref in ready:
                node = polls.pop(ref)
                try:
                    events = ray.get(ref)
                except ray.exceptions.RayError:
                    self._lost(node, exited, failures, stop_at is None, output)
                    first_failure = first_failure or time.monotonic()
                    continue
                for event in events:
                    if event[0] == "line":
                        _, rank, stream, text = event
                        output.line(rank, stream, text)
                        continue
                    _, rank, code, ended = event
                    exited[rank] = code
                    if code != 0 and stop_at is None:
                        failures.append(self._failure(rank, code, ended, output))
                        first_failure = first_failure or time.monotonic()
                output.flush()
                if len(exited) < self.world:
                    polls[self.agents[node].poll.remote(attempt, POLL_S)] = node
        outcome.stopped = [r for r in outcome.stopped if exited.get(r, -1) != 0]
        outcome.failed = sorted(failure.rank for failure in failures)
        if failures:
            outcome.failure = min(failures, key=lambda failure: failure.ended)
        outcome.ok = not failures and not outcome.stopped and len(exited) == self.world
        return outcome

    def _failure(self, rank: int, code: int | None, ended: float, output: Output) -> Failure:
        node = self.node_of(rank)
        return Failure(
            rank=rank,
            node_rank=node,
            node=self.describe_node(node),
            pid=self.pids.get(rank),
            code=code,
            ended=ended,
            tail=output.tail(rank),
        )

    def _lost(self, node: int, exited: dict, failures: list, count: bool, output: Output) -> None:
        """A node's agent died (its node failed, or Ray killed it): so did its ranks."""
        ranks = [node * self.procs + local for local in range(self.procs)]
        for rank in ranks:
            if rank not in exited:
                exited[rank] = None
                if count:
                    failures.append(self._failure(rank, None, time.time(), output))
        self.agents[node] = None  # recreated in the same bundle on a restart

    def close(self) -> None:
        """Stop every rank still running and end the agents."""
        live = [agent for agent in self.agents if agent is not None]
        # On any error, killing the agents below still kills their ranks (parent-death signal).
        with contextlib.suppress(Exception):
            stops = [agent.stop.remote(STOP_GRACE_S) for agent in live]
            self.ray.get(stops, timeout=STOP_GRACE_S + 10)
        for agent in live:
            with contextlib.suppress(Exception):
                self.ray.kill(agent)
        self.agents = [None] * self.nodes


def summary(failure: Failure, outcome: Outcome, world: int, elapsed: float) -> str:
    """The root-cause report printed when an attempt fails."""
    others = [rank for rank in outcome.failed if rank != failure.rank]
    lines = [
        f"dtrain launch: rank {failure.rank} failed first, after {elapsed:.1f} s: {failure.how()}",
        f"  where: {failure.node}, pid {failure.pid}",
    ]
    if others:
        lines.append(f"  also failed on their own: rank(s) {', '.join(map(str, others))}")
    if outcome.stopped:
        stopped = ", ".join(map(str, outcome.stopped))
        lines.append(f"  stopped by the launcher: rank(s) {stopped} (of {world})")
    if failure.tail:
        lines.append(f"  last lines of rank {failure.rank}'s output:")
        lines += [f"    {text}" for text in failure.tail]
    return "\n".join(lines)
