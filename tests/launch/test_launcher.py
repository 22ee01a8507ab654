"""``dtrain launch``: real Ray, real processes, all on 127.0.0.1.

Most tests share one embedded 4-node cluster (module fixture) and join it with ``--address``;
everything after the join — placement group, node agents, rank processes, output, failures,
restarts — is the path a fresh embedded cluster takes. Two tests start the launcher as its
own process with its own embedded cluster, to check Ctrl-C, SIGTERM, the loopback binding
and that no process outlives it. Every call has a hard guard: a hang fails CI, never stalls it.
"""

from __future__ import annotations

import faulthandler
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dtrain.launch import cli
from dtrain.launch.launcher import main

pytest.importorskip("ray")

GUARD_S = 120  # hard limit of one in-process launch: dumps every stack and exits pytest
NODES = 4

# What every rank runs: record what it saw, then do what the test asks.
RANK_SCRIPT = r"""
import json, os, sys, time, signal
out = sys.argv[1]
mode = sys.argv[2] if len(sys.argv) > 2 else "env"
rank = int(os.environ["RANK"])
restart = int(os.environ["DTRAIN_RESTART_COUNT"])
seen = {k: os.environ.get(k) for k in (
    "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NODE_RANK", "MASTER_ADDR",
    "MASTER_PORT", "DTRAIN_SECRET", "DTRAIN_RESTART_COUNT", "OMP_NUM_THREADS", "EXTRA",
    "RAY_AUTH_TOKEN", "GROUP_RANK", "GROUP_WORLD_SIZE", "ROLE_NAME", "ROLE_RANK",
    "ROLE_WORLD_SIZE", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT",
    "TORCHELASTIC_MAX_RESTARTS")}
seen["argv0"] = sys.argv[0]
seen["pid"] = os.getpid()
seen["cwd"] = os.getcwd()
print(f"hello from rank {rank}", flush=True)
print(f"stderr of rank {rank}", file=sys.stderr, flush=True)
if mode == "allreduce":
    import numpy as np
    import dtrain as dt
    import dtrain.parallel as dist
    dist.init_process_group(backend="tcp")
    t = dt.tensor(np.array([rank + 1.0], dtype=np.float32))
    dist.all_reduce(t)
    seen["sum"] = float(t.numpy()[0])
    dist.destroy_process_group()
# Written whole, then renamed: the test polls for these files and must not read half of one.
record = os.path.join(out, f"rank{rank}.try{restart}.json")
with open(record + ".partial", "w") as f:
    json.dump(seen, f)
os.replace(record + ".partial", record)
if mode == "raise" and rank == 2:
    time.sleep(0.5)
    raise RuntimeError("boom on rank 2")
if mode == "signal" and rank == 1:
    time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGKILL)
if mode == "once" and rank == 1 and restart == 0:
    raise SystemExit(3)
if mode == "always" and rank == 0:
    raise SystemExit(5)
if mode in ("raise", "signal", "sleep", "always"):
    time.sleep(120)
"""


@pytest.fixture(scope="module")
def cluster():
    """One embedded 4-node cluster (2 CPUs a node) for the module; its address."""
    from dtrain.launch.ray_cluster import EmbeddedCluster

    faulthandler.dump_traceback_later(GUARD_S, exit=True)
    try:
        embedded = EmbeddedCluster(NODES, cpus_per_node=2)
        embedded.start()
    finally:
        faulthandler.cancel_dump_traceback_later()
    yield embedded.address
    embedded.stop()


@pytest.fixture
def script(tmp_path, monkeypatch):
    """The rank script, a folder for what the ranks record, and a clean environment."""
    for name in ("RAY_ADDRESS", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "rank_script.py"
    path.write_text(RANK_SCRIPT)
    out = tmp_path / "out"
    out.mkdir()
    return path, out


def launch(*argv: str) -> int:
    """``main(argv)`` under the hard guard."""
    faulthandler.dump_traceback_later(GUARD_S, exit=True)
    try:
        return main([str(arg) for arg in argv])
    finally:
        faulthandler.cancel_dump_traceback_later()


def records(out: Path, attempt: int = 0) -> dict[int, dict]:
    found = {}
    for path in out.glob(f"rank*.try{attempt}.json"):
        seen = json.loads(path.read_text())
        found[int(seen["RANK"])] = seen
    return found


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, exited but not yet reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def assert_gone(pids, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.1)
    assert not [pid for pid in pids if alive(pid)], "processes outlived the launcher"


# --- jobs on the shared cluster -------------------------------------------------------------


def test_four_nodes_get_torchrun_env_output_logs_and_a_tcp_all_reduce(
    cluster, script, tmp_path, capfd
):
    path, out = script
    logs = tmp_path / "logs"
    code = launch(
        "--address", cluster, "--nodes", 4, "--log-dir", logs, "--env", "EXTRA=42",
        path, out, "allreduce",
    )  # fmt: skip
    captured = capfd.readouterr()
    assert code == 0, captured.err
    seen = records(out)
    assert sorted(seen) == [0, 1, 2, 3]
    for rank, env in seen.items():
        assert env["NODE_RANK"] == str(rank) and env["LOCAL_RANK"] == "0"
        assert env["WORLD_SIZE"] == "4" and env["LOCAL_WORLD_SIZE"] == "1"
        assert env["MASTER_ADDR"] == "127.0.0.1"
        assert env["MASTER_PORT"] == seen[0]["MASTER_PORT"] != "0"
        assert env["DTRAIN_SECRET"] == seen[0]["DTRAIN_SECRET"]
        assert len(env["DTRAIN_SECRET"]) == 32
        assert env["DTRAIN_RESTART_COUNT"] == "0" and env["OMP_NUM_THREADS"] == "1"
        assert env["EXTRA"] == "42" and env["RAY_AUTH_TOKEN"] is None
        assert env["cwd"] == os.getcwd()
        assert env["sum"] == 10.0  # 1 + 2 + 3 + 4, rank to rank over tcp
        assert f"[rank {rank}] hello from rank {rank}" in captured.out
        assert f"[rank {rank}] stderr of rank {rank}" in captured.err
        log = (logs / f"rank_{rank}.log").read_text()
        assert f"hello from rank {rank}\n" in log and f"stderr of rank {rank}\n" in log
    assert_gone([env["pid"] for env in seen.values()])


def test_two_nodes_of_two_ranks_run_a_module(cluster, script, tmp_path, monkeypatch, capfd):
    _, out = script
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "train.py").write_text(RANK_SCRIPT)
    monkeypatch.chdir(tmp_path)  # `python -m mypkg.train` finds it from the working directory
    code = launch(
        "--address", cluster, "--nodes", 2, "--procs-per-node", 2, "-m", "mypkg.train", out
    )
    assert code == 0, capfd.readouterr().err
    seen = records(out)
    assert sorted(seen) == [0, 1, 2, 3]
    for rank, env in seen.items():
        assert (env["NODE_RANK"], env["LOCAL_RANK"]) == (str(rank // 2), str(rank % 2))
        assert env["LOCAL_WORLD_SIZE"] == "2" and env["WORLD_SIZE"] == "4"
        assert env["cwd"] == str(tmp_path)


def test_a_rank_that_raises_is_named_and_the_others_are_stopped(cluster, script, capfd):
    path, out = script
    began = time.monotonic()
    code = launch("--address", cluster, "--nodes", 4, path, out, "raise")
    elapsed = time.monotonic() - began
    err = capfd.readouterr().err
    assert code == 1
    assert "rank 2 failed first" in err and "exit code 1" in err
    assert "RuntimeError: boom on rank 2" in err.split("failed first")[1]  # in the summary
    assert "node 2 (" in err and "stopped by the launcher: rank(s) 0, 1, 3" in err
    assert elapsed < 60  # the others sleep 120 s: they were stopped
    assert_gone([env["pid"] for env in records(out).values()])


def test_a_rank_killed_by_a_signal(cluster, script, capfd):
    path, out = script
    code = launch("--address", cluster, "--nodes", 4, path, out, "signal")
    err = capfd.readouterr().err
    assert code == 128 + signal.SIGKILL
    assert "rank 1 failed first" in err and "killed by SIGKILL (signal 9)" in err
    assert_gone([env["pid"] for env in records(out).values()])


def test_a_restart_that_succeeds_on_the_second_attempt(cluster, script, capfd):
    path, out = script
    code = launch("--address", cluster, "--nodes", 2, "--max-restarts", 2, path, out, "once")
    err = capfd.readouterr().err
    assert code == 0, err
    assert "rank 1 failed first" in err and "exit code 3" in err
    assert "restart 1 of 2" in err and "restart 2 of 2" not in err
    first, second = records(out, 0), records(out, 1)
    assert sorted(second) == [0, 1] and second[0]["DTRAIN_RESTART_COUNT"] == "1"
    # a new rendezvous: another port (usually) and always another secret
    assert second[0]["DTRAIN_SECRET"] != first[0]["DTRAIN_SECRET"]
    assert second[0]["MASTER_PORT"] == second[1]["MASTER_PORT"]
    # torchrun's names for the same: the restart count, and one run id for the whole job
    assert first[0]["TORCHELASTIC_RESTART_COUNT"] == "0"
    assert second[1]["TORCHELASTIC_RESTART_COUNT"] == "1"
    assert first[0]["TORCHELASTIC_RUN_ID"] == second[1]["TORCHELASTIC_RUN_ID"]
    assert second[0]["TORCHELASTIC_MAX_RESTARTS"] == "2"


def test_a_torchrun_command_line_renamed(cluster, script, tmp_path, monkeypatch, capfd):
    """torchrun's spellings; the script as typed (sys.argv[0]); torchrun's other variables;
    the rendezvous on --master-port (the all-reduce goes through it)."""
    path, out = script
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.chdir(tmp_path)
    code = launch(
        "--address", cluster, "--nnodes", "2:2", "--nproc_per_node", 2, "--master_addr",
        "localhost", "--master_port", port, "--node_rank", 0, "--max_restarts", 1,
        path.name, out, "allreduce",
    )  # fmt: skip
    assert code == 0, capfd.readouterr().err
    seen = records(out)
    assert sorted(seen) == [0, 1, 2, 3]
    run_id = seen[0]["TORCHELASTIC_RUN_ID"]
    assert len(run_id) == 32 and int(run_id, 16) >= 0
    for rank, env in seen.items():
        assert env["argv0"] == "rank_script.py"
        assert env["MASTER_PORT"] == str(port) and env["MASTER_ADDR"] == "127.0.0.1"
        assert (env["GROUP_RANK"], env["GROUP_WORLD_SIZE"]) == (str(rank // 2), "2")
        assert (env["ROLE_RANK"], env["ROLE_WORLD_SIZE"]) == (str(rank), "4")
        assert env["ROLE_NAME"] == "default"
        assert env["TORCHELASTIC_RUN_ID"] == run_id
        assert env["TORCHELASTIC_RESTART_COUNT"] == "0"
        assert env["TORCHELASTIC_MAX_RESTARTS"] == "1"
        assert env["sum"] == 10.0


def test_no_python_runs_the_program_itself(cluster, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    program = tmp_path / "record.sh"  # a shell script: python could not run it
    program.write_text('#!/bin/sh\necho "$0 $RANK $GROUP_RANK" > "$1/rank$RANK.txt"\n')
    program.chmod(0o755)
    code = launch("--address", cluster, "--nodes", 2, "--no-python", "./record.sh", tmp_path)
    assert code == 0, capfd.readouterr().err
    assert (tmp_path / "rank0.txt").read_text() == "./record.sh 0 0\n"
    assert (tmp_path / "rank1.txt").read_text() == "./record.sh 1 1\n"


def test_master_addr_of_no_node_fails_saying_which_there_are(cluster, script, capfd):
    path, out = script
    code = launch("--address", cluster, "--master-addr", "10.255.255.254", path, out)
    err = capfd.readouterr().err
    assert code == 2
    assert "--master-addr 10.255.255.254 (10.255.255.254): no node" in err
    assert "offers 4 node(s)" in err and "127.0.0.1" in err
    assert not list(out.iterdir())


def test_restarts_run_out(cluster, script, capfd):
    path, out = script
    code = launch("--address", cluster, "--nodes", 2, "--max-restarts", 1, path, out, "always")
    err = capfd.readouterr().err
    assert code == 5
    assert err.count("rank 0 failed first") == 2 and "giving up after 1 restart(s)" in err
    assert sorted(records(out, 1)) == [0, 1]


def test_timeout_stops_the_job(cluster, script, capfd):
    path, out = script
    began = time.monotonic()
    code = launch("--address", cluster, "--nodes", 2, "--timeout", 4, path, out, "sleep")
    assert code == 124
    assert time.monotonic() - began < 60
    assert "--timeout 4 s reached" in capfd.readouterr().err
    assert_gone([env["pid"] for env in records(out).values()])


def test_more_nodes_than_the_cluster_has_fails_saying_what_it_offers(cluster, script, capfd):
    path, out = script
    code = launch("--address", cluster, "--nodes", 5, "--placement-timeout", 2, path, out)
    err = capfd.readouterr().err
    assert code == 1
    assert "did not offer 5 node(s) with 1 CPU each" in err
    assert "offers 4 node(s)" in err and err.count(": 2 CPU, 0 GPU") == 4


def test_gpus_the_cluster_lacks_fail_before_anything_starts(cluster, script, capfd):
    path, out = script
    code = launch("--address", cluster, "--gpus-per-node", 1, path, out)
    err = capfd.readouterr().err
    assert code == 2
    assert "no node of the cluster can hold one" in err and "0 GPU" in err
    assert not list(out.iterdir())


# --- bad arguments: nothing starts ------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--nodes", "0", "{script}"], "--nodes 0: a job needs at least one node"),
        (["missing.py"], "script 'missing.py' does not exist"),
        (["-m", "no_such_module_xyz"], "-m no_such_module_xyz: no such module"),
        (["--env", "NOVALUE", "{script}"], "write it as KEY=VALUE"),
        (["--env", "RANK=3", "{script}"], "the launcher sets RANK"),
        (["--backend", "mpi", "{script}"], "mpiexec -n N python script.py"),
        (["--backend", "nccl", "{script}"], "--backend nccl needs GPUs"),
        (["--procs-per-node", "0", "{script}"], "--procs-per-node 0"),
        (["--timeout", "0", "{script}"], "--timeout 0"),
        (["--max-restarts", "-1", "{script}"], "--max-restarts -1"),
        (["--procs-per-node", "2", "--gpus-per-node", "1", "{script}"], "not allowed with"),
        (["--nodes", "two", "{script}"], "invalid int value"),
    ],
)
def test_bad_arguments_fail_before_anything_starts(argv, message, script, capsys):
    path, _ = script
    code = main([arg.format(script=path) for arg in argv])
    assert code == 2
    assert message in capsys.readouterr().err


def test_more_gpus_than_this_machine_has_fail_before_the_embedded_cluster(
    script, monkeypatch, capsys
):
    path, _ = script
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    code = main(["--address", "local", "--nodes", "2", "--gpus-per-node", "1", str(path)])
    assert code == 2
    assert "needs 2 GPUs on this machine (embedded cluster), but it offers 0" in (
        capsys.readouterr().err
    )


def test_standalone_never_joins_a_cluster(script, monkeypatch, capsys):
    """--standalone is --address local: RAY_ADDRESS (even a live one) is not joined."""
    path, _ = script
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    code = main(["--standalone", "--nodes", "2", "--gpus-per-node", "1", str(path)])
    assert code == 2
    assert "on this machine (embedded cluster), but it offers 0" in capsys.readouterr().err


def test_dtrain_launch_subcommand(script, capsys):
    assert cli.main(["launch", "--help"]) == 0
    assert "torchrun's environment" in capsys.readouterr().out
    path, _ = script
    assert cli.main(["launch", "--nodes", "0", str(path)]) == 2
    assert "--nodes 0" in capsys.readouterr().err


# --- the launcher as its own process, with its own embedded cluster ------------------------


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _listening(pids: set[int]) -> set[str]:
    """host:port of every TCP socket these processes listen on (from /proc/net/tcp{,6})."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as handle:
            for line in handle.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                    host, port = fields[1].split(":")
                    # the kernel prints each 32-bit word of the address little-endian
                    raw = b"".join(
                        bytes.fromhex(host[i : i + 8])[::-1] for i in range(0, len(host), 8)
                    )
                    address = ipaddress.ip_address(raw)
                    address = getattr(address, "ipv4_mapped", None) or address
                    addresses.add(f"{address}:{int(port, 16)}")
    return addresses


@pytest.mark.parametrize(
    ("signum", "whole_group"),
    [(signal.SIGINT, True), (signal.SIGTERM, False), (signal.SIGTERM, True)],
    ids=["ctrl-c", "sigterm", "sigterm-to-group"],
)
def test_embedded_cluster_on_loopback_and_no_process_outlives_a_stopped_launcher(
    signum, whole_group, script, tmp_path
):
    """Ctrl-C (SIGINT to the terminal's process group), SIGTERM to the launcher alone, or
    SIGTERM to its process group (``timeout``, Slurm's ``scancel``): the embedded cluster is
    in a session of its own, so its GCS outlives the signal and the launcher's cleanup does
    not wait for a dead GCS until Ray gives up (60 s, exit code 1)."""
    path, out = script
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = str(tmp_path)  # no `ray start` cluster to find: the embedded one
    launcher = subprocess.Popen(
        [sys.executable, "-m", "dtrain.launch.cli", "launch", "--nodes", "2", path, out, "sleep"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while len(records(out)) < 2 and launcher.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(records(out)) == 2, launcher.communicate(timeout=30)[0].decode()
        family = _descendants(launcher.pid)
        ranks = {env["pid"] for env in records(out).values()}
        assert ranks <= family
        listening = _listening(family | {launcher.pid})
        assert listening and all(addr.startswith("127.0.0.1:") for addr in listening), listening
        os.killpg(launcher.pid, signum) if whole_group else launcher.send_signal(signum)
        output = launcher.communicate(timeout=60)[0].decode()
        assert launcher.returncode == 128 + signum, output
        assert f"stopped by {signal.Signals(signum).name}" in output
        assert "[rank 1] hello from rank 1" in output
        assert_gone(family | ranks)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
