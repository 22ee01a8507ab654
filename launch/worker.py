"""The node agent: one Ray actor per node that runs that node's ranks as fresh Python processes.

The launcher creates one ``NodeAgent`` in each placement-group bundle. The agent never runs
user code itself: each rank is a new ``python script.py`` (or ``python -m module``) process,
so CUDA, MPI and module state never leak between jobs or restarts. The agent

- reads each rank's stdout and stderr as it is written and queues it, line by line, for the
  launcher's ``poll``;
- reports each rank's exit (code, or negative signal number) with the wall-clock time;
- stops its ranks on ``stop``: SIGTERM to each rank's process group, SIGKILL after a grace;
- ties each rank to itself with the kernel's parent-death signal, so a rank dies with its
  agent even when Ray kills the agent abruptly.

Ray carries only these lines and exit codes; the ranks' collectives go rank to rank.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

from dtrain.runtime.config import MPI_VARIABLES

#: Variables the launcher sets for every rank (``--env`` may not override them).
RANK_VARIABLES = (
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "NODE_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "DTRAIN_SECRET",
    "DTRAIN_RESTART_COUNT",
    # torchrun's other names (one role, "default"; a node is torchrun's agent group)
    "GROUP_RANK",
    "GROUP_WORLD_SIZE",
    "ROLE_NAME",
    "ROLE_RANK",
    "ROLE_WORLD_SIZE",
    "TORCHELASTIC_RUN_ID",
    "TORCHELASTIC_RESTART_COUNT",
    "TORCHELASTIC_MAX_RESTARTS",
)
# Taken out of what a rank inherits from its agent: the embedded cluster's credentials and
# switches, and an outer MPI launcher's markers (a rank here is never an MPI process).
_NOT_INHERITED = (
    "RAY_AUTH_TOKEN",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER",
    *MPI_VARIABLES,
    # a torchrun agent's, should the launcher itself run under one: no agent store here
    "TORCHELASTIC_USE_AGENT_STORE",
    "TORCHELASTIC_ERROR_FILE",
)
_MAX_EVENTS = 2000  # per poll: keeps one reply small when a rank floods its output
_PR_SET_PDEATHSIG = 1


def rank_environment(
    base: Mapping[str, str], spec: Mapping[str, Any], gpu_ids: list[str] | None
) -> dict[str, str]:
    """The environment of one rank: ``base`` (the agent's), torchrun's names, the job's extras.

    ``spec`` holds rank, local_rank, world_size, local_world_size, node_rank, master_addr,
    master_port, secret, restart, and optionally nodes, run_id, max_restarts, cpus
    (OMP_NUM_THREADS unless given), backend and env (the ``--env`` pairs, applied last).
    ``gpu_ids`` are the node's GPUs: the rank sees them all and trains on its share's first.
    """
    env = {name: value for name, value in base.items() if name not in _NOT_INHERITED}
    env.update(
        RANK=str(spec["rank"]),
        LOCAL_RANK=str(spec["local_rank"]),
        WORLD_SIZE=str(spec["world_size"]),
        LOCAL_WORLD_SIZE=str(spec["local_world_size"]),
        NODE_RANK=str(spec["node_rank"]),
        MASTER_ADDR=str(spec["master_addr"]),
        MASTER_PORT=str(spec["master_port"]),
        DTRAIN_SECRET=spec["secret"],
        DTRAIN_RESTART_COUNT=str(spec["restart"]),
        GROUP_RANK=str(spec["node_rank"]),
        GROUP_WORLD_SIZE=str(spec.get("nodes", spec["world_size"] // spec["local_world_size"])),
        ROLE_NAME="default",
        ROLE_RANK=str(spec["rank"]),
        ROLE_WORLD_SIZE=str(spec["world_size"]),
        TORCHELASTIC_RUN_ID=str(spec.get("run_id", "none")),
        TORCHELASTIC_RESTART_COUNT=str(spec["restart"]),
        TORCHELASTIC_MAX_RESTARTS=str(spec.get("max_restarts", 0)),
        PYTHONUNBUFFERED="1",  # lines come back as they are printed
        OMP_NUM_THREADS=str(spec.get("cpus", 1)),
    )
    if spec.get("backend") and spec["backend"] != "auto":
        env["DTRAIN_BACKEND"] = spec["backend"]
    if gpu_ids:
        # Every rank sees all the node's GPUs, as under torchrun (and Ray Train's shared
        # CUDA_VISIBLE_DEVICES), so a script's cuda:LOCAL_RANK names its own GPU and NCCL
        # sees its peers for peer-to-peer transfers; DTRAIN_DEVICE says which is its own.
        share = len(gpu_ids) // spec["local_world_size"]
        if share == 0:
            raise ValueError(
                f"{spec['local_world_size']} ranks on a node with {len(gpu_ids)} GPU(s): "
                "each rank needs its own GPU; run fewer ranks per node or give it more GPUs"
            )
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_ids)
        env["DTRAIN_DEVICE"] = f"cuda:{spec['local_rank'] * share}"
    env.update(spec.get("env", {}))
    return env


def _absolute_program(argv: list[str], cwd: str, python: bool) -> list[str]:
    """``argv`` with its script (or ``--no-python`` program) path made absolute from ``cwd``."""
    program = argv[0]
    if (python and program == "-m") or (not python and os.sep not in program):
        return argv  # a module, or a program found on PATH
    return [os.path.join(cwd, program), *argv[1:]]


def _parent_death_signal(parent: int) -> Any:
    """A preexec_fn: SIGKILL this child when ``parent`` (the agent) dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork, not in the child

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the agent died between fork and prctl
            os._exit(1)

    return arm


class _Rank:
    """One running rank: its process and the threads that relay its output."""

    def __init__(self, rank: int, attempt: int, proc: subprocess.Popen) -> None:
        self.rank = rank
        self.attempt = attempt
        self.proc = proc
        self.exited = threading.Event()


class NodeAgent:
    """Runs one node's ranks (the launcher wraps it in ``ray.remote``; see the module docstring).

    Every method returns plain values; ``poll`` may block while ``stop`` runs (the actor is
    created with several concurrent calls).
    """

    def __init__(self) -> None:
        self._events: list[tuple] = []
        self._ready = threading.Condition()
        self._ranks: dict[int, _Rank] = {}
        self._attempt = -1
        # One long-lived thread forks every rank: the parent-death signal fires when the
        # *thread* that forked the child ends, so it must not be a short-lived pool thread.
        self._spawns: queue.Queue = queue.Queue()
        threading.Thread(target=self._spawner, name="dtrain-spawner", daemon=True).start()

    def describe(self) -> dict:
        """Where this agent runs: node id, ip, hostname, pid, and the GPUs Ray gave it."""
        import ray

        gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "ip": ray.util.get_node_ip_address(),
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "gpus": [gpu for gpu in gpus.split(",") if gpu] if ray.get_gpu_ids() else [],
        }

    def free_port(self) -> int:
        """A port free on this node's address right now (rank 0's store will bind it)."""
        import ray

        with socket.socket() as sock:
            sock.bind((ray.util.get_node_ip_address(), 0))
            return sock.getsockname()[1]

    def start(
        self, attempt: int, argv: list[str], cwd: str, specs: list[dict], python: bool = True
    ) -> list[int]:
        """Start one process per spec running ``python argv...`` (``argv...`` when not
        ``python``); returns their pids.

        A new ``attempt`` forgets the previous one's ranks (all exited by now) and output.
        """
        gpu_ids = self.describe()["gpus"]
        if not os.path.isdir(cwd):  # not on this node: start here, the script by its full path
            argv = _absolute_program(argv, cwd, python)
            cwd = os.getcwd()
        command = [sys.executable, *argv] if python else list(argv)
        with self._ready:
            self._attempt = attempt
            self._events.clear()
            self._ranks.clear()
            self._ready.notify_all()  # a poll still waiting for the previous attempt returns
        pids = []
        for spec in specs:
            env = rank_environment(os.environ, spec, gpu_ids)
            done: queue.Queue = queue.Queue()
            self._spawns.put((command, cwd, env, done))
            proc = done.get()
            if isinstance(proc, BaseException):
                raise proc
            entry = _Rank(spec["rank"], attempt, proc)
            self._ranks[spec["rank"]] = entry
            readers = [
                threading.Thread(target=self._relay, args=(entry, stream, name), daemon=True)
                for stream, name in ((proc.stdout, "stdout"), (proc.stderr, "stderr"))
            ]
            for reader in readers:
                reader.start()
            threading.Thread(target=self._reap, args=(entry, readers), daemon=True).start()
            pids.append(proc.pid)
        return pids

    def _spawner(self) -> None:
        arm = _parent_death_signal(os.getpid())
        while True:
            command, cwd, env, done = self._spawns.get()
            try:
                proc = subprocess.Popen(
                    command,
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,  # its own process group: stop() signals them all
                    preexec_fn=arm,
                )
            except BaseException as exc:
                done.put(exc)
            else:
                done.put(proc)

    def _push(self, entry: _Rank, event: tuple) -> None:
        with self._ready:
            if entry.attempt == self._attempt:
                self._events.append(event)
                self._ready.notify_all()

    def _relay(self, entry: _Rank, stream: Any, name: str) -> None:
        pending = b""
        fd = stream.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            if len(pending) > 65536:  # a very long line without a newline: pass it on anyway
                lines.append(pending)
                pending = b""
            for line in lines:
                self._push(entry, ("line", entry.rank, name, line.decode("utf-8", "replace")))
        if pending:
            self._push(entry, ("line", entry.rank, name, pending.decode("utf-8", "replace")))
        stream.close()

    def _reap(self, entry: _Rank, readers: list[threading.Thread]) -> None:
        code = entry.proc.wait()
        ended = time.time()
        with contextlib.suppress(OSError):  # whatever the rank left running in its group
            os.killpg(entry.proc.pid, signal.SIGKILL)
        for reader in readers:
            reader.join(timeout=5)  # its last lines before its exit event
        entry.exited.set()
        self._push(entry, ("exit", entry.rank, code, ended))

    def poll(self, attempt: int, timeout: float) -> list[tuple]:
        """The attempt's output lines and exits since the last call; waits up to ``timeout``.

        Returns:
            ``("line", rank, "stdout" | "stderr", text)`` and ``("exit", rank, code, time)``
            tuples, in the order they happened on this node (a negative code is a signal);
            nothing when ``attempt`` is not the current one.
        """
        with self._ready:
            if attempt == self._attempt and not self._events:
                self._ready.wait(timeout)
            if attempt != self._attempt:
                return []
            events, self._events = self._events[:_MAX_EVENTS], self._events[_MAX_EVENTS:]
        return events

    def stop(self, grace: float) -> list[int]:
        """SIGTERM every running rank's process group, SIGKILL what is left after ``grace``.

        Returns:
            The ranks that were still running when asked to stop.
        """
        running = [entry for entry in self._ranks.values() if entry.proc.poll() is None]
        for entry in running:
            with contextlib.suppress(OSError):
                os.killpg(entry.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for entry in running:
            if not entry.exited.wait(max(0.0, deadline - time.monotonic())):
                with contextlib.suppress(OSError):
                    os.killpg(entry.proc.pid, signal.SIGKILL)
        for entry in running:
            entry.exited.wait(5)
        return [entry.rank for entry in running]
