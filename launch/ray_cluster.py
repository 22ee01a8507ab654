"""The Ray cluster a ``dtrain launch`` job runs on: joined, or embedded and stopped after the job.

Which cluster (``resolve_address``):

- ``--address ADDR`` or ``RAY_ADDRESS`` → join that cluster (``auto`` as in ``ray.init``).
- ``--address local`` → always start an embedded cluster.
- nothing → join the cluster that ``ray start --head`` left running on this machine (Ray's
  ``ray_current_cluster`` file, when its GCS answers), else start an embedded cluster.

The embedded cluster is Ray's own several-nodes-on-one-host support (``ray.cluster_utils.
Cluster``: one GCS, one raylet per simulated node, each with its own node id and resources),
so the placement group below takes the same STRICT_SPREAD path it takes on a real cluster.
It is private to the job:

- bound to 127.0.0.1: every node is started with ``node_ip_address="127.0.0.1"``, and
  ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is set because Ray otherwise replaces a loopback
  address by the machine's external one when the driver connects (``services.
  resolve_ip_for_localhost``) and the driver then waits forever for a GCS that only listens on
  loopback. That variable is the switch Ray itself uses on macOS and Windows to keep
  everything on loopback; it also stops ``ray start`` from adding worker nodes, which the
  embedded cluster never uses (it adds nodes in-process).
- its own temp dir (``RAY_TMPDIR``): sessions, logs, sockets and the ``ray_current_cluster``
  file stay out of ``/tmp/ray``, so a plain ``ray.init()`` elsewhere never finds it, and the
  folder is removed afterwards (or by the next embedded cluster, when a SIGKILL left it).
- token authentication with a random token held in this process's environment only
  (``RAY_AUTH_TOKEN``); nothing is written under ``~/.ray`` (a plain ``ray.init()`` in Ray
  2.60 writes ``~/.ray/auth_token``).
- fate-shared with the launcher: Ray starts each of its processes with the kernel's
  parent-death signal, so they die with the launcher even when it is killed with SIGKILL.
- in a session of its own (``start_new_session``, as Ray itself puts them in a process group
  of their own on Windows): a SIGTERM to the launcher's process group (``timeout``, Slurm's
  ``scancel``, ``kill -TERM -PGID``) reaches the launcher only, which then stops the ranks
  and the cluster in order. Otherwise the GCS died with the signal and the launcher's
  cleanup waited on it until Ray gave up (60 s) and ended the launcher with exit code 1.

Joining a cluster whose address is on loopback sets ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
for the same reason.
"""

from __future__ import annotations

import contextlib
import glob
import importlib
import logging
import math
import os
import secrets
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
#: Object store per simulated node: the launcher moves only output lines through Ray.
OBJECT_STORE_BYTES = 80 * 1024**2
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
_TEMP_PREFIX = "dtrain-ray-"  # then the launcher's pid: /tmp/dtrain-ray-<pid>-<random>
# One token per launcher process: Ray's token loader caches the token it first reads.
_TOKEN = secrets.token_hex(24)


def import_ray() -> Any:
    """The ``ray`` module, or a RuntimeError that names the extra to install."""
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise RuntimeError(
            "dtrain launch needs Ray: pip install 'dtrain[ray]' (or run the ranks yourself: "
            "mpiexec -n 4 python train.py)"
        ) from None


@dataclass(frozen=True)
class NodeInfo:
    """One alive node as Ray reports it."""

    node_id: str
    ip: str
    cpus: float
    gpus: float
    head: bool = False

    def describe(self) -> str:
        role = ", head" if self.head else ""
        size = f"{_num(self.cpus)} CPU, {_num(self.gpus)} GPU"
        return f"node {self.node_id[:8]} ({self.ip}{role}): {size}"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


@dataclass
class Session:
    """A connected driver: which cluster, how it was reached, and its nodes at connect time."""

    address: str
    embedded: bool
    nodes: list[NodeInfo] = field(default_factory=list)

    def offers(self) -> str:
        """What the cluster offers, one node a line (for error messages)."""
        kind = "embedded cluster" if self.embedded else f"cluster at {self.address}"
        lines = [f"the {kind} offers {len(self.nodes)} node(s):"]
        lines += [f"  {node.describe()}" for node in self.nodes]
        return "\n".join(lines)


def resolve_address(address: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """The address to join, or None to start an embedded cluster (see the module docstring)."""
    env = os.environ if env is None else env
    if address == "local":
        return None
    if address:
        return address
    if env.get("RAY_ADDRESS"):
        return env["RAY_ADDRESS"]
    return running_local_cluster(env)


def running_local_cluster(env: Mapping[str, str] | None = None) -> str | None:
    """The GCS address ``ray start --head`` recorded on this machine, if that GCS answers."""
    env = os.environ if env is None else env
    base = env.get("RAY_TMPDIR") or env.get("TMPDIR") or "/tmp"
    try:
        with open(os.path.join(base, "ray", "ray_current_cluster")) as handle:
            recorded = handle.read().strip()
    except OSError:
        return None
    host, _, port = recorded.rpartition(":")
    if not host or not port.isdigit():
        return None
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return recorded
    except OSError:
        return None  # a file left behind by a cluster that is gone


def local_gpu_ids() -> list[str]:
    """The GPUs this machine lets us use: CUDA_VISIBLE_DEVICES, else what Ray detects."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [gpu for gpu in visible.split(",") if gpu.strip() and gpu.strip() != "-1"]
    try:
        from ray._private.accelerators import get_accelerator_manager_for_resource

        count = get_accelerator_manager_for_resource("GPU").get_current_node_num_accelerators()
    except Exception:  # Ray moved its private helper, or no driver library: no GPUs known
        count = 0
    return [str(index) for index in range(count)]


def _remove_orphaned_temp_dirs() -> None:
    """Remove the temp dirs of embedded clusters whose launcher is gone (killed by SIGKILL)."""
    for path in glob.glob(f"/tmp/{_TEMP_PREFIX}*-*"):
        owner = os.path.basename(path)[len(_TEMP_PREFIX) :].split("-", 1)[0]
        if not owner.isdigit():
            continue
        try:
            os.kill(int(owner), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass  # alive, under another user


@contextlib.contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _keep_loopback(ray: Any) -> None:
    """Make an already imported Ray honour RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (read at import)."""
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def _refresh_auth() -> None:
    """Let Ray re-read RAY_AUTH_MODE / RAY_AUTH_TOKEN (it caches both; older Rays have neither)."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except (ImportError, AttributeError):
        pass


_session_patch = threading.RLock()  # one patch at a time (clusters started from threads)


@contextlib.contextmanager
def _own_session() -> Iterator[None]:
    """Start the Ray processes launched meanwhile (GCS, raylets; their workers inherit it) in
    a session of their own. Only where the kernel's parent-death signal ties them to this
    process: without it Ray's reaper finds them by our process group."""
    with _session_patch:
        try:
            from ray._private import services, utils

            popen = services.ConsolePopen
            tied = utils.detect_fate_sharing_support()
        except (ImportError, AttributeError):  # a Ray that moved its private helpers
            tied = False
        if not tied:
            yield
            return

        class SessionPopen(popen):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                kwargs.setdefault("start_new_session", True)
                super().__init__(*args, **kwargs)

        services.ConsolePopen = SessionPopen
        try:
            yield
        finally:
            services.ConsolePopen = popen


def _is_loopback(address: str) -> bool:
    host = address.rpartition(":")[0].strip("[]") if ":" in address else address
    return host in _LOCAL_HOSTS or host.startswith("127.")


def alive_nodes(ray: Any) -> list[NodeInfo]:
    """Alive nodes, head first, then by node id."""
    nodes = []
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        resources = node.get("Resources", {})
        nodes.append(
            NodeInfo(
                node_id=node["NodeID"],
                ip=node.get("NodeManagerAddress", "?"),
                cpus=resources.get("CPU", 0.0),
                gpus=resources.get("GPU", 0.0),
                head=bool(resources.get("node:__internal_head__")),
            )
        )
    return sorted(nodes, key=lambda node: (not node.head, node.node_id))


def _driver_options() -> dict:
    # Ray's own log forwarding stays off: ranks' output comes back through the node agents.
    return {"log_to_driver": False, "logging_level": logging.WARNING, "namespace": "dtrain"}


@contextlib.contextmanager
def joined(address: str) -> Iterator[Session]:
    """Connect the driver to a running cluster; disconnect afterwards (the cluster stays)."""
    ray = import_ray()
    overrides = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"} if _is_loopback(address) else {}
    with _environ(overrides):
        if overrides:
            _keep_loopback(ray)
        try:
            ray.init(address=address, **_driver_options())
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RuntimeError(
                f"could not join the Ray cluster at {address!r} ({exc}); check --address / "
                "RAY_ADDRESS, or use --address local for an embedded cluster"
            ) from None
        try:
            yield Session(address=address, embedded=False, nodes=alive_nodes(ray))
        finally:
            ray.shutdown()


class EmbeddedCluster:
    """A private Ray cluster of ``nodes`` simulated nodes on 127.0.0.1 (see the module docstring).

    Use it as a context manager, or ``start()`` / ``stop()``. ``env`` holds the variables a
    driver in this process needs to join it (they stay set while it runs).

    Args:
        nodes: simulated nodes (one raylet each).
        cpus_per_node: logical CPUs each node offers.
        gpus_per_node: GPUs each node offers; node i gets the i-th slice of ``local_gpu_ids()``.
    """

    def __init__(self, nodes: int, cpus_per_node: float = 1, gpus_per_node: int = 0) -> None:
        self.nodes = nodes
        self.cpus_per_node = cpus_per_node
        self.gpus_per_node = gpus_per_node
        self.address: str | None = None
        self.temp_dir: str | None = None
        self._cluster: Any = None
        self._env: contextlib.ExitStack | None = None

    def _node_args(self, index: int, gpu_ids: list[str]) -> dict:
        args: dict = {
            "node_ip_address": LOOPBACK,
            "num_cpus": math.ceil(self.cpus_per_node),  # a node offers whole CPUs
            "num_gpus": self.gpus_per_node,
            "object_store_memory": OBJECT_STORE_BYTES,
        }
        if self.gpus_per_node:
            mine = gpu_ids[index * self.gpus_per_node : (index + 1) * self.gpus_per_node]
            args["env_vars"] = {"CUDA_VISIBLE_DEVICES": ",".join(mine)}
        return args

    def start(self) -> str:
        """Start the head and the other nodes; returns the GCS address."""
        ray = import_ray()
        gpu_ids = local_gpu_ids() if self.gpus_per_node else []
        if len(gpu_ids) < self.nodes * self.gpus_per_node:
            raise ValueError(
                f"{self.nodes} node(s) x {self.gpus_per_node} GPU(s) need "
                f"{self.nodes * self.gpus_per_node} GPUs, but this machine offers {len(gpu_ids)}"
            )
        _remove_orphaned_temp_dirs()
        # Short path: Ray's unix sockets live under it (108-byte limit on Linux).
        self.temp_dir = tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}{os.getpid()}-", dir="/tmp")
        self._env = contextlib.ExitStack()
        self._env.enter_context(_environ(self.env))
        _keep_loopback(ray)
        _refresh_auth()
        try:
            from ray.cluster_utils import Cluster

            head = self._node_args(0, gpu_ids)
            head.update(
                include_dashboard=False,
                dashboard_host=LOOPBACK,
                no_monitor=True,
                include_log_monitor=False,
            )
            with _own_session():
                self._cluster = Cluster(initialize_head=True, head_node_args=head)
                for index in range(1, self.nodes):
                    self._cluster.add_node(wait=False, **self._node_args(index, gpu_ids))
            self._cluster.wait_for_nodes(timeout=120)
        except BaseException:
            self.stop()
            raise
        self.address = self._cluster.address
        return self.address

    @property
    def env(self) -> dict[str, str]:
        """The environment under which this process starts and joins the cluster."""
        return {
            "RAY_TMPDIR": self.temp_dir or "",
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": _TOKEN,
            "RAY_USAGE_STATS_ENABLED": "0",
        }

    def stop(self) -> None:
        """Stop every process of the cluster and remove its temp dir (idempotent)."""
        cluster, self._cluster = self._cluster, None
        if cluster is not None:
            try:
                cluster.shutdown()
            except Exception as exc:  # keep going: the temp dir and env must still be undone
                log.warning("stopping the embedded Ray cluster: %s", exc)
        if self._env is not None:
            self._env.close()
            self._env = None
        if self.temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = None

    def __enter__(self) -> EmbeddedCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def embedded(nodes: int, cpus_per_node: float, gpus_per_node: int) -> Iterator[Session]:
    """Start an embedded cluster, connect the driver, and stop both afterwards."""
    ray = import_ray()
    with EmbeddedCluster(nodes, cpus_per_node, gpus_per_node) as cluster:
        ray.init(address=cluster.address, **_driver_options())
        try:
            yield Session(address=cluster.address, embedded=True, nodes=alive_nodes(ray))
        finally:
            ray.shutdown()


def placement_group(
    ray: Any, bundle: dict[str, float], nodes: int, timeout: float, first: str | None = None
) -> Any:
    """One bundle per node on distinct nodes (STRICT_SPREAD); waits ``timeout`` seconds.

    ``first``: the address of the node that must hold bundle 0 (node rank 0), through the
    ``node:<address>`` resource Ray gives every node.

    Raises:
        RuntimeError: the cluster did not offer ``nodes`` such nodes in time.
    """
    from ray.util.placement_group import placement_group as make
    from ray.util.placement_group import remove_placement_group

    bundles = [dict(bundle) for _ in range(nodes)]
    if first is not None:
        bundles[0][f"node:{first}"] = 0.001
    group = make(bundles, strategy="STRICT_SPREAD")
    ready, _ = ray.wait([group.ready()], timeout=timeout)
    if not ready:
        remove_placement_group(group)
        raise TimeoutError(f"no placement for {nodes} x {bundle} within {timeout:g} s")
    return group
