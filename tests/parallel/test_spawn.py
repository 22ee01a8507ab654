"""``dtrain.multiprocessing.spawn``: PyTorch's DDP tutorial form, failures, ``join=False``.

The functions the children run are at this module's top level, so spawned children can
import them (multiprocessing's requirement, as in torch).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import signal
import socket
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import pytest

import dtrain as dt
import dtrain.distributed as dist
import dtrain.multiprocessing as mp
import dtrain.nn as nn
import dtrain.optim as optim
import dtrain.parallel
from dtrain.nn.parallel import DistributedDataParallel as DDP  # noqa: N817 (the tutorial)


class ToyModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net1 = nn.Linear(10, 10)
        self.relu = nn.ReLU()
        self.net2 = nn.Linear(10, 5)

    def forward(self, x):
        return self.net2(self.relu(self.net1(x)))


def demo_basic(rank: int, world_size: int, port: int, out: str) -> None:
    # The tutorial's setup(): environment, then init_process_group("gloo", rank=, world_size=).
    os.environ["MASTER_ADDR"] = "localhost"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group(
        "gloo", rank=rank, world_size=world_size, timeout=timedelta(seconds=120)
    )
    dt.manual_seed(rank)  # different initial weights: DDP's broadcast must equalise them
    model = ToyModel()
    ddp_model = DDP(model)
    loss_fn = nn.MSELoss()
    optimizer = optim.SGD(ddp_model.parameters(), lr=0.001)
    optimizer.zero_grad()
    outputs = ddp_model(dt.randn(20, 10))
    labels = dt.randn(20, 5)
    loss_fn(outputs, labels).backward()
    optimizer.step()
    result = {
        "rank": dist.get_rank(),
        "world_size": dist.get_world_size(),
        "backend": dist.get_backend(),
        "weight": model.net1.weight.detach().numpy().tolist(),
    }
    dist.destroy_process_group()
    Path(out, f"rank{rank}.json").write_text(json.dumps(result))


def raise_on_one(i: int, out: str) -> None:
    if i == 1:
        raise ValueError(f"boom from process {i}")
    Path(out, f"started{i}").write_text("")
    time.sleep(300)  # the parent must terminate this one


def exit_with(i: int, code: int) -> None:
    if i == 0:
        sys.exit(code)


def kill_self(i: int) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def wait_for(i: int, event) -> None:
    event.wait()


def record(i: int, out: str, tag: str) -> None:
    Path(out, f"{tag}{i}").write_text(str(os.getpid()))


def raise_undecodable_name(i: int) -> None:
    # What os.fsdecode gives for a non-UTF-8 file name: a lone surrogate.
    raise FileNotFoundError("no such file: " + b"data-\xff.bin".decode("utf-8", "surrogateescape"))


def raise_now_and_later(i: int) -> None:
    if i == 1:
        time.sleep(0.5)  # after process 0 has failed, inside the parent's grace period
    raise ValueError(f"boom {i}")


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """A fresh directory that tempfile uses in this (parent) process."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_spawn_runs_the_ddp_tutorial(tmp_path, monkeypatch):
    monkeypatch.setenv("DTRAIN_SECRET", "spawn-test-secret")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    world_size = 2
    mp.spawn(
        demo_basic, args=(world_size, _free_port(), str(tmp_path)), nprocs=world_size, join=True
    )
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(world_size)]
    assert [r["rank"] for r in results] == [0, 1]
    assert all(r["world_size"] == 2 and r["backend"] == "gloo" for r in results)
    assert results[0]["weight"] == results[1]["weight"]  # DDP kept the ranks in step


def test_a_raising_child_ends_the_others_and_names_its_index(tmp_path, private_tmp):
    start = time.monotonic()
    with pytest.raises(mp.ProcessRaisedException) as info:
        mp.spawn(raise_on_one, args=(str(tmp_path),), nprocs=2)
    err = info.value
    assert err.error_index == 1
    assert "-- Process 1 terminated with the following error:" in str(err)
    assert "ValueError: boom from process 1" in str(err)
    assert "Traceback (most recent call last)" in str(err)
    assert isinstance(err.error_pid, int)
    # Process 0 sleeps 300 s unless terminated; it was (the parent returned long before).
    assert time.monotonic() - start < 250
    assert not list(private_tmp.iterdir())  # the error files and their directory are gone


def test_a_lone_surrogate_in_the_traceback_survives(private_tmp):
    with pytest.raises(mp.ProcessRaisedException) as info:
        mp.start_processes(raise_undecodable_name, nprocs=1, start_method="fork")
    message = str(info.value)
    assert "Traceback (most recent call last)" in message
    assert "FileNotFoundError: no such file: data-\udcff.bin" in message
    assert not list(private_tmp.iterdir())


def test_join_after_a_failure_raises_for_each_remaining_failure_as_torch_does(tmp_path):
    context = mp.start_processes(
        raise_on_one, args=(str(tmp_path),), nprocs=2, join=False, start_method="fork"
    )
    with pytest.raises(mp.ProcessRaisedException, match="boom from process 1"):
        context.join()
    # torch: the next join reports the sibling it terminated, and only then returns True.
    with pytest.raises(mp.ProcessExitedException) as info:
        context.join()
    # SIGTERM's default kills it (signal_name "SIGTERM"); a forked child that inherited a
    # Python-level SIGTERM handler from the test runner may exit with a code instead.
    assert info.value.error_index == 0
    assert info.value.signal_name == "SIGTERM" or info.value.exit_code != 0
    assert context.join() is True
    assert context.join() is True


def test_later_tracebacks_are_kept_for_later_joins(private_tmp):
    context = mp.start_processes(raise_now_and_later, nprocs=2, join=False, start_method="fork")
    with pytest.raises(mp.ProcessRaisedException, match="ValueError: boom 0") as first:
        context.join(grace_period=60)  # process 1 raises within the grace period
    assert first.value.error_index == 0
    assert not list(private_tmp.iterdir())  # read and removed once every process exited
    with pytest.raises(mp.ProcessRaisedException, match="ValueError: boom 1") as second:
        context.join()
    assert second.value.error_index == 1
    assert context.join() is True


def test_exit_codes_and_signals_raise_process_exited():
    with pytest.raises(mp.ProcessExitedException, match="process 0 terminated with exit code 3"):
        mp.start_processes(exit_with, args=(3,), nprocs=2, start_method="fork")
    with pytest.raises(mp.ProcessExitedException) as info:
        mp.start_processes(kill_self, nprocs=1, start_method="fork")
    assert info.value.exit_code == -signal.SIGKILL
    assert info.value.signal_name == "SIGKILL"
    assert "terminated with signal SIGKILL" in str(info.value)


def test_join_false_returns_a_context(private_tmp):
    ctx = multiprocessing.get_context("fork")
    event = ctx.Event()
    context = mp.start_processes(wait_for, args=(event,), nprocs=2, join=False, start_method="fork")
    try:
        assert isinstance(context, mp.ProcessContext)
        assert len(context.pids()) == 2
        # The error files go to a private directory (mode 0700) in the temp directory.
        [directory] = private_tmp.iterdir()
        assert {os.path.dirname(name) for name in context.error_files} == {str(directory)}
        assert directory.stat().st_mode & 0o777 == 0o700
        assert context.join(timeout=0.05) is False  # both still wait
    finally:
        event.set()  # a failed assertion must not leave the children waiting
    while not context.join(timeout=30):
        pass
    assert not list(private_tmp.iterdir())
    assert context.join() is True  # joining again is harmless


def test_spawn_passes_index_and_args(tmp_path, private_tmp):
    assert mp.spawn(record, args=(str(tmp_path), "r"), nprocs=3) is None
    pids = {int((tmp_path / f"r{i}").read_text()) for i in range(3)}
    assert len(pids) == 3 and os.getpid() not in pids
    assert not list(private_tmp.iterdir())


def test_argument_errors():
    with pytest.raises(TypeError, match="args=\\(value,\\)"):
        mp.spawn(record, args="abc", nprocs=1)
    with pytest.raises(ValueError, match="nprocs=0"):
        mp.spawn(record, nprocs=0)
    with pytest.warns(FutureWarning, match="start_processes"), pytest.raises(TypeError):
        mp.spawn(record, args="x", start_method="fork")


def test_exceptions_pickle():
    err = mp.ProcessExitedException("m", 1, 2, -9, "SIGKILL")
    back = pickle.loads(pickle.dumps(err))
    assert (back.msg, back.error_index, back.error_pid, back.exit_code, back.signal_name) == (
        "m",
        1,
        2,
        -9,
        "SIGKILL",
    )
    raised = pickle.loads(pickle.dumps(mp.ProcessRaisedException("t", 0, 5)))
    assert isinstance(raised, mp.ProcessException) and raised.error_index == 0


def test_python_multiprocessing_names_are_reexported():
    for name in ("Process", "Queue", "Pool", "get_context", "set_start_method", "cpu_count"):
        assert getattr(mp, name) is getattr(multiprocessing, name), name


def test_distributed_is_parallel_under_torchs_name():
    # plus torch's subpackage paths dist.algorithms.join, dist.optim and dist.fsdp
    subpackages = {"algorithms", "fsdp", "optim"}
    assert sorted(set(dist.__all__) - subpackages) == sorted(dtrain.parallel.__all__)
    assert dist.algorithms.join.Join is dtrain.parallel.Join
    for name in dtrain.parallel.__all__:
        assert getattr(dist, name) is getattr(dtrain.parallel, name), name
