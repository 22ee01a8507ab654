"""torch.distributed's names and keywords in dtrain.parallel: gather/scatter, all_to_all,
the object versions, group handles, availability checks, torch's keywords (real processes
on tcp, plus mpiexec where it is installed; one-process checks in this process)."""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from launcher import NO_MPIEXEC, free_port, have_mpiexec, run_mpi, run_tcp

import dtrain.parallel as dist


@pytest.fixture
def torch():
    """The ``torch`` module, or a skip when it is not installed (CI has none)."""
    return pytest.importorskip("torch")


def _expected_rooted(n: int) -> list[dict]:
    """What ``api_workers.rooted`` must see on each of ``n`` ranks (numpy reference)."""
    mine = [(np.arange(3) + 10 * r).tolist() for r in range(n)]
    expected = []
    for rank in range(n):
        gather, scatter = {}, {}
        for root in range(n):
            for mode in ("sync", "async"):
                gather[f"{root}/{mode}"] = mine if rank == root else None
                scatter[f"{root}/{mode}"] = np.full((2, 2), 100 * rank + root).tolist()
        equal = np.repeat(np.arange(n) * 10.0 + rank, 2).tolist()
        uneven = np.concatenate([np.full((rank + 1, 3), 10 * i + rank) for i in range(n)]).tolist()
        listed = [np.full(rank + i + 1, 10.0 * i + rank).tolist() for i in range(n)]
        expected.append(
            {
                "gather": gather,
                "scatter": scatter,
                "a2a_equal": equal,
                "a2a_uneven": uneven,
                "a2a_list": listed,
            }
        )
    return expected


def _check_rooted(values: list, n: int) -> None:
    for value, expected in zip(values, _expected_rooted(n)):
        assert "expects blocks of [1" in value.pop("a2a_bad_sizes")  # every rank raised
        assert value == expected


@pytest.mark.parametrize("world", [2, 3])
def test_gather_scatter_and_all_to_all_match_numpy(world):
    _check_rooted(run_tcp(world, "api_workers:rooted").values(), world)


@pytest.mark.skipif(not have_mpiexec(), reason=NO_MPIEXEC)
def test_gather_scatter_and_all_to_all_under_mpiexec():
    _check_rooted(run_mpi(2, "api_workers:rooted", {"backend": "mpi"}).values(), 2)


def test_gather_object_and_scatter_object_list():
    values = run_tcp(2, "api_workers:objects").values()
    for rank, value in enumerate(values):
        for root in range(2):
            gathered = [{"rank": r, "items": list(range(r))} for r in range(2)]
            assert value[f"gather_object/{root}"] == (gathered if rank == root else None)
            assert value[f"scatter_object/{root}"] == {"to": rank, "from": root}
        # The root's argument errors reach every rank, as the same kind of error.
        assert value["scatter_wrong_length"].startswith("ValueError")
        assert value["scatter_tuple"].startswith("TypeError")
        assert "must be None on ranks other than the destination" in value["gather_list_off_root"]
        assert value["gather_root_wrong"].startswith("ValueError")  # every rank raises
        assert value["broadcast_device"] == [0, "x"]
        assert value["probe"] == [2.0]
    assert "one object per rank (2), got [1, 1, 1]" in values[0]["scatter_wrong_length"]
    assert "one slot per rank (2)" in values[0]["gather_root_wrong"]
    assert "another rank was given wrong arguments" in values[1]["gather_root_wrong"]
    # send_object_list / recv_object_list: the sender's errors reach the receiver
    assert values[1]["recv_object_list"] == [{"a": [1, 2]}, None, "z"]
    assert values[1]["recv_sender"] == 0
    assert "object_list[0] is a tuple" in values[0]["send_tuple"]
    assert "rank 0's objects cannot go through JSON" in values[1]["recv_tuple"]
    assert "sent 3 object(s) but object_list has 1 slot(s)" in values[1]["recv_wrong_length"]
    assert "scatter_object_input_list[1] is a tuple" in values[0]["scatter_tuple"]


def test_group_handles_futures_and_torch_keywords():
    values = run_tcp(2, "api_workers:handles").values()
    for rank, value in enumerate(values):
        assert value["world_before"] is True  # dist.group.WORLD is None before init
        assert value["backend"] == ["gloo", True]  # "cpu:gloo,..." on CPU ranks: gloo (tcp)
        assert value["world_is_default"] == [True, True, [0, 1]]
        assert value["all_reduce_world"] == [3.0]
        assert value["wait_timedelta"] is True
        assert value["result"] == [[2.0]]
        assert value["future"] == [[40.0], True, True]
        assert value["recv_self"] == value["irecv_self"]
        assert f"src {rank} is this rank" in value["recv_self"]
        assert value["second_init"].startswith("ProcessGroupStateError")
        assert value["probe"] == [2.0]
    assert values[1]["sub"] == [[1], 1, 0, "gloo"]
    assert "sub" not in values[0]
    assert values[1]["local_group_sum"] == [1.0]  # a one-member group made by it alone


def test_availability_and_backend_names(monkeypatch):
    assert dist.is_available() and dist.is_gloo_available()
    assert isinstance(dist.is_nccl_available(), bool)
    assert dist.is_mpi_available() == (importlib.util.find_spec("mpi4py") is not None)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    assert not dist.is_torchelastic_launched()
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    assert dist.is_torchelastic_launched()
    assert dist.Backend("GLOO") == dist.Backend.GLOO == "gloo"
    assert (dist.Backend.NCCL, dist.Backend.MPI, dist.Backend.TCP) == ("nccl", "mpi", "tcp")
    with pytest.raises(ValueError, match="unknown backend"):
        dist.Backend("carrier-pigeon")


def _single_process(monkeypatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "DTRAIN_SECRET"):
        monkeypatch.delenv(name, raising=False)


def test_before_init_and_twice_raise_value_errors(monkeypatch):
    _single_process(monkeypatch)
    for call in (dist.get_rank, dist.get_world_size):
        with pytest.raises(ValueError, match="has not been initialized"):
            call()
        with pytest.raises(RuntimeError):  # also a RuntimeError, as dtrain raised before
            call()
    dist.init_process_group("gloo")
    try:
        with pytest.raises(ValueError, match="already called"):
            dist.init_process_group("gloo")
        assert dist.get_backend() == "gloo" and dist.group.WORLD is dist.GroupMember.WORLD
    finally:
        dist.destroy_process_group()
    dist.init_process_group("tcp", world_size=-1, rank=-1)  # torch's "unset"
    try:
        assert dist.get_backend() == "tcp"
    finally:
        dist.destroy_process_group()


def test_store_and_bad_per_device_backends_are_refused(monkeypatch):
    _single_process(monkeypatch)
    with pytest.raises(ValueError, match="store=object is not supported"):
        dist.init_process_group("gloo", store=object())
    with pytest.raises(ValueError, match="cpu:gloo,cuda:nccl"):
        dist.init_process_group("gpu:gloo")
    assert not dist.is_initialized()


def test_work_wait_takes_a_timedelta_and_futures_chain(monkeypatch):
    import datetime

    import dtrain as dt

    _single_process(monkeypatch)
    dist.init_process_group("gloo")
    try:
        x = dt.tensor([4.0])
        work = dist.all_reduce(x, async_op=True)
        assert work.wait(timeout=datetime.timedelta(seconds=30)) is True
        fut = dist.all_reduce(x, async_op=True).get_future()
        halves = fut.then(lambda f: f.value()[0].div_(2)).then(lambda f: f.value() + 1)
        assert halves.wait().tolist() == [3.0] and x.tolist() == [2.0]
        assert fut.value()[0] is x
    finally:
        dist.destroy_process_group()


def test_keywords_exist_as_in_torch(torch):
    """Every keyword of torch's signature that dtrain accepts is spelt the same."""
    import torch.distributed as tdist

    names = [
        "init_process_group",
        "new_group",
        "barrier",
        "broadcast_object_list",
        "gather",
        "scatter",
        "gather_object",
        "scatter_object_list",
        "all_to_all_single",
        "all_to_all",
        "monitored_barrier",
        "get_global_rank",
        "get_group_rank",
        "get_process_group_ranks",
    ]
    skip = {"group_src", "group_dst"}  # not supported: pass global ranks
    for name in names:
        ours = inspect.signature(getattr(dist, name)).parameters
        theirs = [
            p
            for p in inspect.signature(getattr(tdist, name)).parameters
            if not p.startswith("_") and p not in skip
        ]
        missing = [p for p in theirs if p not in ours]
        assert missing == [], f"{name}: dtrain lacks {missing}"
        assert list(ours)[: len(theirs)] == theirs, f"{name}: positional order differs"


_TORCHRUN_SCRIPT = """
import json, pathlib, sys
import dtrain as dt, dtrain.parallel as dist
dist.init_process_group()
x = dt.tensor([dist.get_rank() + 1.0])
dist.all_reduce(x)
seen = [dist.get_rank(), dist.get_world_size(), x.tolist(), dist.is_torchelastic_launched()]
pathlib.Path(sys.argv[1], f"rank{dist.get_rank()}.json").write_text(json.dumps(seen))
dist.destroy_process_group()
"""


def test_torchrun_starts_dtrain_scripts(tmp_path):
    """torchrun's agent serves its own store on MASTER_PORT: dtrain's goes on the next."""
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if torchrun is None:
        pytest.skip("torchrun is not installed")
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(_TORCHRUN_SCRIPT))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_PORT")}
    env.update(DTRAIN_DEVICE="cpu", DTRAIN_SECRET="torchrun-test", OMP_NUM_THREADS="1")
    done = subprocess.run(
        [
            torchrun,
            "--nproc-per-node",
            "2",
            "--master-port",
            str(free_port()),
            str(script),
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert seen == [[0, 2, [3.0], True], [1, 2, [3.0], True]]
