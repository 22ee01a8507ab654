"""Failures in real processes: a rank killed mid-collective, a stalled rank, ranks that
disagree on the call, a wrong secret, a rank that leaves without destroy_process_group.

Every surviving rank must raise a CollectiveError naming the op, its sequence number and
the rank at fault, within the timeout: the launcher's guard turns a hang into a failure.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest
from launcher import NO_MPIEXEC, have_mpiexec, run_mpi, run_tcp

requires_mpi = pytest.mark.skipif(not have_mpiexec(), reason=NO_MPIEXEC)
SOCKETS = {"DTRAIN_SHM": "0"}  # same-host groups otherwise use shared memory
TRANSPORTS = pytest.mark.parametrize("env", [{}, SOCKETS], ids=["default", "sockets"])


def names_rank(message: str, rank: int) -> bool:
    return re.search(rf"\brank {rank}\b", message) is not None


# ---- a dead peer ----------------------------------------------------------------------------
@TRANSPORTS
@pytest.mark.parametrize(
    ("world_size", "victim", "size", "joins"),
    [
        (3, 1, 1000, False),
        (3, 0, 1000, False),
        (3, 2, 1000, True),
        (4, 2, 1 << 20, True),
        (2, 1, 1 << 20, True),
    ],
    ids=["waited-for", "store-host", "direct-in-flight", "ring-in-flight", "two-ranks-in-flight"],
)
def test_killed_rank_fails_every_survivor(env, world_size, victim, size, joins):
    args = {"victim": victim, "size": size, "joins": joins, "timeout": 30}
    _check_dead_peer(run_tcp(world_size, "failure_workers:dead_peer", args, env=env), victim, joins)


def test_survivors_that_exit_at_once_still_name_the_dead_rank():
    """A survivor usually exits right after its error: its ABORT must reach the others
    before its connections close, or they would name it instead of the dead rank."""
    args = {"victim": 2, "size": 1 << 20, "joins": True, "timeout": 30, "linger": 0}
    launch = run_tcp(4, "failure_workers:dead_peer", args, env=SOCKETS)
    _check_dead_peer(launch, 2, True)


def _check_dead_peer(launch, victim: int, joins: bool) -> None:
    world_size = len(launch.ranks)
    assert not launch.timed_out, launch.describe()
    assert launch[victim].returncode == -9 and launch[victim].result is None, launch.describe()
    for rank in range(world_size):
        if rank == victim:
            continue
        outcome = launch[rank].value
        failed = outcome["failed"]
        assert failed is not None, f"rank {rank}'s collective succeeded without rank {victim}"
        assert failed["type"] == "CollectiveError", failed
        assert failed["op"] == "all_reduce", failed
        assert failed["seq"] >= 3 if joins else failed["seq"] == 3, failed
        assert f"all_reduce #{failed['seq']}" in failed["message"], failed
        assert names_rank(failed["message"], victim), failed
        assert failed["elapsed"] < 30, "the dead rank was only noticed by the timeout"
        again = outcome["again"]
        assert again["type"] == "CollectiveError" and "broken" in again["message"], again


# ---- a stalled peer -------------------------------------------------------------------------
@TRANSPORTS
@pytest.mark.parametrize("size", [10, 1 << 20], ids=["direct", "ring"])
def test_stalled_rank_is_named_after_the_per_call_timeout(env, size):
    """In a ring every rank times out at once; the stalled rank must still be the one named
    (not a waiting neighbour)."""
    args = {"laggard": 1, "size": size, "per_call": 0.5, "sleep": 2.5}
    launch = run_tcp(3, "failure_workers:stalled_peer", args, env=env)
    assert not launch.timed_out, launch.describe()
    for rank in (0, 2):
        failed = launch[rank].value["failed"]
        assert failed is not None and failed["type"] == "CollectiveError", launch.describe()
        assert failed["op"] == "all_reduce" and failed["seq"] == 2, failed
        assert names_rank(failed["message"], 1), failed
        assert failed["elapsed"] < 2.5, "the call waited for the laggard instead of timing out"
    # The laggard's late call may still complete (the others' data was already there), but
    # the group is broken now: its next call says so.
    again = launch[1].value["again"]
    assert again is not None and again["type"] == "CollectiveError", launch[1].value


def test_every_op_honours_per_call_and_group_timeouts():
    launch = run_tcp(2, "failure_workers:timeouts_per_op", {"per_call": 0.5})
    results = launch.values()[0]
    still = results.pop("wait(timeout) while running")
    assert still["type"] == "CollectiveError" and "still running" in still["message"], still
    assert results.pop("after wait(timeout)") == [2.0] * 10
    expected_op = {
        "all_gather_into_tensor": "all_gather",
        "reduce_scatter_tensor": "reduce_scatter",
        "recv any": "recv",
        "async all_reduce": "all_reduce",
        "group timeout": "all_reduce",
    }
    for name, failed in results.items():
        assert failed is not None, f"{name}: returned although rank 1 never joined"
        assert failed["type"] == "CollectiveError", (name, failed)
        assert failed["op"] == expected_op.get(name, name), (name, failed)
        assert failed["elapsed"] < 30, f"{name}: the 60 s group timeout ended it, not 0.5 s"
        if failed["op"] not in ("recv",):
            assert failed["seq"] == 1 and f"#{failed['seq']}" in failed["message"], (name, failed)
        if name != "recv any":
            assert names_rank(failed["message"], 1), (name, failed)


# ---- ranks that disagree --------------------------------------------------------------------
MISMATCHES = {  # scenario: what must appear in every rank's message (both signatures)
    "shape": ("10 elements", "12 elements"),
    "dtype": ("float32", "float64"),
    "reduce_op": ("SUM", "MAX"),
    "op": ("all_reduce(", "broadcast("),
    "gather_shape": ("4 elements", "5 elements"),
    "root": ("root 0", "root 1"),
    "big_shape": ("300000 elements", "300001 elements"),
}


def _check_mismatches(launch, world_size: int) -> None:
    values = launch.values()
    for rank, results in enumerate(values):
        for scenario, signatures in MISMATCHES.items():
            failed = results[scenario]
            assert failed is not None, f"rank {rank}: {scenario} mismatch went through"
            message = failed["message"]
            assert failed["type"] == "CollectiveError", (rank, scenario, failed)
            assert failed["seq"] == 1 and "#1" in message, (rank, scenario, failed)
            assert all(s in message for s in signatures), (rank, scenario, message)
            odd = world_size - 1
            others = [r for r in range(world_size) if r != odd and names_rank(message, r)]
            assert names_rank(message, odd) and others, (rank, scenario, message)
            assert failed["elapsed"] < 20, (rank, scenario, "found by the 20 s timeout")
        assert results["world_after"] == [world_size] * 2


@TRANSPORTS
def test_mismatched_calls_name_both_ranks_and_signatures(env):
    _check_mismatches(run_tcp(3, "failure_workers:mismatches", env=env), 3)


@requires_mpi
def test_mismatched_calls_under_mpi_debug():
    launch = run_mpi(3, "failure_workers:mismatches", {"backend": "mpi"}, env={"DTRAIN_DEBUG": "1"})
    _check_mismatches(launch, 3)


@requires_mpi
def test_stalled_rank_under_mpi_times_out_naming_op_and_seq():
    args = {"laggard": 1, "size": 10, "per_call": 0.5, "sleep": 2.5, "backend": "mpi"}
    launch = run_mpi(3, "failure_workers:stalled_peer", args)
    assert not launch.timed_out, launch.describe()
    for rank in (0, 2):
        failed = launch[rank].value["failed"]
        assert failed is not None and failed["type"] == "CollectiveError", launch.describe()
        assert failed["op"] == "all_reduce" and failed["seq"] == 2, failed
        assert "all_reduce #2" in failed["message"] and "timed out" in failed["message"]
        assert failed["elapsed"] < 2.5, failed


@requires_mpi
def test_every_op_honours_timeouts_under_mpi():
    launch = run_mpi(2, "failure_workers:timeouts_per_op", {"per_call": 0.5, "backend": "mpi"})
    results = launch.values()[0]
    assert "still running" in results.pop("wait(timeout) while running")["message"]
    assert results.pop("after wait(timeout)") == [2.0] * 10
    for name, failed in results.items():
        assert failed is not None and failed["type"] == "CollectiveError", (name, failed)
        assert failed["elapsed"] < 30, name


# ---- a local error in the middle of a call ------------------------------------------------
@TRANSPORTS
def test_a_local_error_mid_call_breaks_the_group_and_names_the_rank(env):
    """A read-only output is refused before the call joins the group; any other error once
    the transfer may have started breaks the group and the peers hear which rank failed
    (not a timeout, not stale data from pairing with the next call)."""
    args = {"culprit": 0, "size": 1 << 18}
    launch = run_tcp(2, "failure_workers:local_failure", args, env=env)
    values = launch.values()
    for rank, outcome in enumerate(values):
        refused = outcome["refused"]
        assert refused["type"] == "ValueError", (rank, refused)
        assert "read-only" in refused["message"] and "copy" in refused["message"], refused
        again = outcome["again"]
        assert again["type"] == "CollectiveError" and "broken" in again["message"], again
    culprit = values[0]["failed"]
    assert culprit["type"] == "MemoryError", culprit
    assert "failed locally" in values[0]["again"]["message"], values[0]["again"]
    peer = values[1]["failed"]
    assert peer["type"] == "CollectiveError" and "aborted" in peer["message"], peer
    assert names_rank(peer["message"], 0) and "failed locally" in peer["message"], peer


UNCAUGHT = """
import numpy as np
import dtrain.parallel as dist
dist.init_process_group("mpi")
if dist.get_rank() == 1:
    raise RuntimeError("boom on rank 1")
dist.all_reduce(np.ones(4))  # rank 0 waits here for rank 1
print("rank 0 finished without rank 1")
"""


@requires_mpi
def test_an_uncaught_exception_under_mpi_ends_every_rank(tmp_path):
    """Hydra leaves the other ranks running when one raises: without the abort rank 0 would
    wait out its 600 s DTRAIN_TIMEOUT, far past this test's guard."""
    from launcher import MPIEXEC, _base_env

    from dtrain.launch.mpiexec import local_command

    script = tmp_path / "uncaught.py"
    script.write_text(UNCAUGHT)
    prefix, launcher_env = local_command(MPIEXEC, 2)
    env = _base_env({**launcher_env, "DTRAIN_TIMEOUT": 600})
    job = subprocess.Popen(
        [*prefix, sys.executable, str(script)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output = job.communicate(timeout=120)[0]
    finally:
        if job.poll() is None:  # the guard: mpiexec, its proxy and the ranks share a session
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
    assert job.returncode != 0, output
    assert "boom on rank 1" in output and "aborting the MPI job" in output, output
    assert "finished without rank 1" not in output, output


# ---- wrong secret, leaving without destroy ----------------------------------------------------
def test_wrong_secret_is_refused_clearly():
    launch = run_tcp(
        2,
        "failure_workers:init_only",
        {"timeout": 1.5},
        rank_env={1: {"DTRAIN_SECRET": "not-the-secret"}},
    )
    assert not launch.timed_out, launch.describe()
    intruder = launch[1].error
    assert intruder["type"] == "RendezvousError" and "DTRAIN_SECRET" in intruder["message"]
    host = launch[0].error  # rank 0 waits for rank 1 until its timeout, then says so
    assert host["type"] in ("CollectiveError", "RendezvousError"), host
    assert "1" in host["message"], host
    assert "refused" in launch[0].output, "the store did not log the refused connection"


@TRANSPORTS
@pytest.mark.parametrize("leaver", [2, 0], ids=["rank2", "store-host"])
def test_rank_leaving_without_destroy_does_not_hang_the_others(env, leaver):
    launch = run_tcp(3, "failure_workers:leave_early", {"leaver": leaver}, env=env)
    assert not launch.timed_out, launch.describe()
    assert launch[leaver].returncode == 0 and launch[leaver].ok, launch.describe()
    for rank in range(3):
        if rank == leaver:
            continue
        outcome = launch[rank].value
        failed = outcome["failed"]
        assert failed is not None and failed["type"] == "CollectiveError", outcome
        assert failed["op"] == "all_reduce" and failed["seq"] == 2, failed
        assert names_rank(failed["message"], leaver), failed
        assert failed["elapsed"] < 30, failed
        assert outcome["destroy_s"] < 10, outcome


def test_ranks_exiting_without_destroy_all_exit():
    values = run_tcp(3, "failure_workers:all_leave_without_destroy").values()
    assert values == [27.0] * 3
