"""``dcp.async_save``: the staged copy, the Future, saves back to back, and across real
processes (tcp and mpi) a save running while the main thread keeps calling all_reduce on the
default group, a failure on one rank raised on every rank, and a save still running at exit.

The functions without a ``test_`` prefix are the workers ``launcher.py`` runs in each rank."""

from __future__ import annotations

import copy
import os
import threading
import time
import warnings
from concurrent.futures import Future
from typing import Any

import numpy as np
import pytest
from launcher import NO_MPIEXEC, free_port, have_mpiexec, run_mpi, run_tcp

import dtrain as dt
import dtrain.distributed.checkpoint as dcp
import dtrain.parallel as dist
from dtrain.distributed.checkpoint import ShardedTensor
from dtrain.parallel.checkpoint_async import stage

N = 50_000  # elements of the replicated tensor in the multi-rank saves


@pytest.fixture
def torch() -> Any:
    """The ``torch`` module, or a skip when it is not installed."""
    return pytest.importorskip("torch")


def state() -> dict:
    w = dt.arange(6.0).reshape(2, 3)
    return {
        "w": w,
        "s": ShardedTensor(dt.arange(10.0, 14.0), (2, 2), 0),
        "n": np.arange(3, dtype=np.int64),
        "meta": {"epoch": 2, "inf": float("inf"), 7: [1, (2, 3)]},
        "opt": {"state": {"w": {"step": 4, "m": dt.ones(2, 3)}}, "tied": [w]},
    }


def fresh() -> dict:
    return {
        "w": dt.zeros(2, 3),
        "s": ShardedTensor(dt.zeros(4), (2, 2), 0),
        "n": np.zeros(3, np.int64),
        "meta": None,
        "opt": {"state": {"w": {"step": 0, "m": dt.zeros(2, 3)}}, "tied": [dt.zeros(2, 3)]},
    }


def values(sd: dict) -> dict:
    """The state dict as lists, to compare."""
    return {
        "w": sd["w"].tolist(),
        "s": sd["s"].local_tensor().tolist(),
        "n": sd["n"].tolist(),
        "meta": sd["meta"],
        "m": sd["opt"]["state"]["w"]["m"].tolist(),
        "step": sd["opt"]["state"]["w"]["step"],
        "tied": sd["opt"]["tied"][0].tolist(),
    }


def test_result_equals_what_save_gives_and_loads_back(tmp_path):
    for no_dist in (False, True):
        ours = dcp.async_save(state(), checkpoint_id=str(tmp_path / f"a{no_dist}"), no_dist=no_dist)
        assert isinstance(ours, Future)
        metadata = ours.result()
        expected = dcp.save(state(), checkpoint_id=str(tmp_path / f"s{no_dist}"))
        assert metadata.pop("save_id") != expected.pop("save_id")
        assert metadata == expected
        loaded = fresh()
        dcp.load(loaded, checkpoint_id=str(tmp_path / f"a{no_dist}"))
        assert values(loaded) == values(state())
        assert sorted(os.listdir(tmp_path / f"a{no_dist}")) == [".metadata", "__0_0.distcp"]


def test_parameters_changed_in_place_after_the_call_are_not_in_the_checkpoint(tmp_path):
    sd = state()
    before = copy.deepcopy(values(sd))
    future = dcp.async_save(sd, checkpoint_id=str(tmp_path / "ckpt"))
    sd["w"].add_(100.0)  # also the tied entry: the same tensor
    sd["s"].local_tensor().mul_(-1.0)
    sd["n"][:] = 9
    sd["opt"]["state"]["w"]["m"].copy_(dt.zeros(2, 3))
    sd["opt"]["state"]["w"]["step"] = 5
    sd["meta"]["epoch"] = 3
    sd["meta"][7][0] = 99
    future.result()
    loaded = fresh()
    dcp.load(loaded, checkpoint_id=str(tmp_path / "ckpt"))
    assert values(loaded) == before
    assert values(loaded) != values(sd)


def test_the_staged_copy_shares_no_memory_and_keeps_the_structure():
    sd = state()
    staged = stage(sd)
    assert list(staged) == list(sd) and list(staged["opt"]) == ["state", "tied"]
    pairs = [
        (staged["w"], sd["w"]),
        (staged["s"].local_tensor(), sd["s"].local_tensor()),
        (staged["opt"]["state"]["w"]["m"], sd["opt"]["state"]["w"]["m"]),
    ]
    for ours, original in pairs:
        assert type(ours) is dt.Tensor and not np.shares_memory(ours.numpy(), original.numpy())
        np.testing.assert_array_equal(ours.numpy(), original.numpy())
    assert not np.shares_memory(staged["n"], sd["n"])
    assert staged["opt"]["tied"][0] is staged["w"]  # one tensor at two paths: copied once
    assert (staged["s"].shape, staged["s"].offset) == ((2, 2), 0)
    assert staged["meta"] == sd["meta"] and staged["meta"] is not sd["meta"]
    assert staged["meta"][7] is not sd["meta"][7] and staged["meta"][7][1] == (2, 3)


def test_gpu_tensors_are_staged_to_host_memory(tmp_path, monkeypatch):
    # Under the CUDA emulator (cupy stood in for by numpy), the GPU path of staging.
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "runtime"))
    from cuda_emulator import install

    from dtrain.runtime.backend import is_cuda_array

    install(monkeypatch, kernels="references")
    w = dt.arange(6.0, device="cuda")
    sd = {"w": w, "s": ShardedTensor(dt.ones(4, device="cuda"), (2, 2), 0)}
    staged = stage(sd)
    for tensor in (staged["w"], staged["s"].local_tensor()):
        assert isinstance(tensor._array, np.ndarray) and not is_cuda_array(tensor._array)
    future = dcp.async_save(sd, checkpoint_id=str(tmp_path / "ckpt"))
    w.add_(1.0)
    future.result()
    loaded = {"w": dt.zeros(6), "s": dt.zeros(2, 2)}
    dcp.load(loaded, checkpoint_id=str(tmp_path / "ckpt"))
    assert loaded["w"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert loaded["s"].tolist() == [[1.0, 1.0], [1.0, 1.0]]


def test_back_to_back_saves_both_land(tmp_path):
    w = dt.zeros(1000)
    futures = []
    for i in range(3):
        w.fill_(float(i))
        futures.append(dcp.async_save({"w": w, "i": i}, checkpoint_id=str(tmp_path / f"c{i}")))
    same = [dcp.async_save({"w": w * k}, checkpoint_id=str(tmp_path / "same")) for k in (1, 2)]
    for future in futures + same:
        assert future.result()["world_size"] == 1
    for i in range(3):
        loaded = {"w": dt.ones(1000), "i": None}
        dcp.load(loaded, checkpoint_id=str(tmp_path / f"c{i}"))
        assert loaded["i"] == i and loaded["w"].tolist() == [float(i)] * 1000
    loaded = {"w": dt.ones(1000)}
    dcp.load(loaded, checkpoint_id=str(tmp_path / "same"))
    assert loaded["w"].tolist() == [4.0] * 1000  # the later save replaced the earlier
    assert sorted(os.listdir(tmp_path)) == ["c0", "c1", "c2", "same"]  # no .tmp left


def test_what_save_refuses_is_raised_by_the_future(tmp_path):
    path = str(tmp_path / "ckpt")
    future = dcp.async_save({"w": (dt.ones(1),)}, checkpoint_id=path)  # staging fails
    with pytest.raises(TypeError, match="holding tensors; use a list or a dict"):
        future.result()
    cycle: dict = {"w": dt.ones(1)}
    cycle["me"] = cycle
    with pytest.raises(ValueError, match="contains itself"):
        dcp.async_save(cycle, checkpoint_id=path).result()
    with pytest.raises(TypeError, match="a set"):
        dcp.async_save({"w": dt.ones(1), "s": {1, 2}}, checkpoint_id=path).result()
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError):
        dcp.async_save({"w": dt.ones(1)}, checkpoint_id=str(tmp_path / "file")).result()
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_argument_errors_are_raised_at_once(tmp_path):
    with pytest.raises(ValueError, match="async_save: pass checkpoint_id"):
        dcp.async_save({"w": dt.ones(1)})
    with pytest.raises(NotImplementedError, match="async_save: planner is not supported"):
        dcp.async_save({"w": dt.ones(1)}, checkpoint_id=str(tmp_path / "c"), planner=object())
    assert os.listdir(tmp_path) == []


def test_like_torch_a_future_of_the_values_at_the_call(tmp_path, torch):
    import torch.distributed.checkpoint as tdcp

    data = np.arange(6.0, dtype=np.float32).reshape(2, 3)
    theirs, ours = torch.from_numpy(data.copy()), dt.tensor(data.copy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that no process group is initialized
        t_future = tdcp.async_save({"w": theirs}, checkpoint_id=str(tmp_path / "t"), no_dist=True)
        theirs.add_(100)
        t_future.result()
        t_loaded = {"w": torch.zeros(2, 3)}
        tdcp.load(t_loaded, checkpoint_id=str(tmp_path / "t"), no_dist=True)
    o_future = dcp.async_save({"w": ours}, checkpoint_id=str(tmp_path / "o"), no_dist=True)
    ours.add_(100)
    o_future.result()
    o_loaded = {"w": dt.zeros(2, 3)}
    dcp.load(o_loaded, checkpoint_id=str(tmp_path / "o"))
    assert type(o_future) is type(t_future)
    np.testing.assert_array_equal(o_loaded["w"].numpy(), t_loaded["w"].numpy())
    np.testing.assert_array_equal(o_loaded["w"].numpy(), data)


# ---- across processes --------------------------------------------------------------------------
def rank_state(rank: int, world: int) -> dict:
    return {
        "model": {"w": dt.tensor(np.arange(N, dtype=np.float32))},  # the same on every rank
        "shard": ShardedTensor(dt.full((4,), float(rank)), (4 * world,), 4 * rank),
        "step": 0,
    }


def full_values(sd: dict) -> dict:
    return {"w": sd["model"]["w"].numpy().copy(), "step": sd["step"]}


def saving_while_training(path: str, backend: str | None = None, level: str | None = None) -> dict:
    """Two async saves of a state that the main thread changes in place at once, while it
    keeps calling all_reduce on the default group; then load both. ``level``: the MPI thread
    level to initialize MPI with."""
    if level is not None:
        import mpi4py

        mpi4py.rc.thread_level = level
    dist.init_process_group(backend=backend, timeout=60)
    rank, world = dist.get_rank(), dist.get_world_size()
    sd = rank_state(rank, world)
    expected, futures, sums, done = [], [], [], []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(40):
            if i in (0, 1):  # the second waits for the first: back to back
                expected.append(full_values(sd))
                futures.append(dcp.async_save(sd, checkpoint_id=f"{path}/c{i}"))
                done.append(futures[-1].done())
            sd["model"]["w"].add_(1.0)
            sd["step"] += 1
            x = dt.tensor([float(rank + i)])
            dist.all_reduce(x)
            sums.append(x.item())
    results = [f.result() for f in futures]
    ok = []
    for i, result in enumerate(results):
        loaded = rank_state(rank, world)
        loaded["model"]["w"].fill_(-1.0)
        loaded["shard"].local_tensor().fill_(-1.0)
        dcp.load(loaded, checkpoint_id=f"{path}/c{i}")
        ok.append(
            bool(np.array_equal(loaded["model"]["w"].numpy(), expected[i]["w"]))
            and loaded["step"] == expected[i]["step"]
            and loaded["shard"].local_tensor().tolist() == [float(rank)] * 4
            and result["world_size"] == world
        )
    dist.destroy_process_group()
    return {
        "ok": ok,
        "sums": sums,
        "done_at_return": done,
        "warnings": [str(w.message) for w in caught],
    }


def check_saving_while_training(launch_values: list, world: int) -> None:
    for value in launch_values:
        assert value["ok"] == [True, True]
        assert value["sums"] == [world * i + world * (world - 1) / 2 for i in range(40)]


@pytest.mark.parametrize("world", [2, 3])
def test_saving_while_all_reduce_runs_on_the_default_group(tmp_path, world):
    launch = run_tcp(world, "test_dcp_async:saving_while_training", {"path": str(tmp_path)})
    got = launch.values()
    check_saving_while_training(got, world)
    assert all(v["warnings"] == [] for v in got)
    assert sorted(os.listdir(tmp_path)) == ["c0", "c1"]


def failing_rank(path: str) -> dict:
    """Rank 1 fails while writing, then in staging; then a save that works. Every rank
    reports each Future's error."""
    import dtrain.parallel.checkpoint_save as checkpoint_save

    dist.init_process_group(timeout=30)
    rank = dist.get_rank()
    good = {"w": dt.ones(8), "v": dt.ones(8) * 2}
    real = checkpoint_save._write_rank_file

    def broken(*args: Any, **kwargs: Any) -> Any:
        real(*args, **kwargs)
        raise PermissionError(13, "Permission denied (injected)")

    if rank == 1:
        checkpoint_save._write_rank_file = broken
    errors = []
    bad = {**good, "t": (dt.ones(1),)} if rank == 1 else good
    for sd in (good, bad):
        future = dcp.async_save(sd, checkpoint_id=path)
        x = dt.ones(1)
        dist.all_reduce(x)  # the default group goes on meanwhile
        try:
            future.result()
            errors.append(None)
        except Exception as exc:
            errors.append([type(exc).__name__, str(exc)])
        checkpoint_save._write_rank_file = real
    dcp.async_save({"w": dt.ones(8) * 3, "v": dt.ones(8)}, checkpoint_id=path).result()
    loaded = {"w": dt.zeros(8), "v": dt.zeros(8)}
    dcp.load(loaded, checkpoint_id=path)
    listing = sorted(os.listdir(os.path.dirname(path)))
    dist.destroy_process_group()
    return {"errors": errors, "w": loaded["w"].tolist(), "listing": listing}


def test_a_failure_on_one_rank_raises_on_every_rank(tmp_path):
    path = str(tmp_path / "ckpt")
    got = run_tcp(2, "test_dcp_async:failing_rank", {"path": path}).values()
    (kind0, text0), (kind1, text1) = got[0]["errors"][0], got[1]["errors"][0]
    assert kind1 == "PermissionError" and "injected" in text1
    assert kind0 == "RuntimeError" and "async_save: rank 1 failed: PermissionError" in text0
    (kind0, text0), (kind1, text1) = got[0]["errors"][1], got[1]["errors"][1]
    assert kind1 == "TypeError" and "use a list or a dict" in text1
    assert kind0 == "TypeError" and "async_save: rank 1 failed: TypeError" in text0
    for value in got:  # the checkpoint group still works; no temporary directory is left
        assert value["w"] == [3.0] * 8 and value["listing"] == ["ckpt"]


def saving_in_two_worlds(path: str, port: int) -> dict:
    """An async save, destroy_process_group, init_process_group again (at ``port``: the
    first world's store may still be closing) and another one: the second world gets a
    checkpoint group of its own."""
    from dtrain.parallel import checkpoint_async

    groups = []
    for i in range(2):
        if i == 1:
            os.environ["MASTER_PORT"] = str(port)
        dist.init_process_group(timeout=30)
        future = dcp.async_save({"w": dt.full((4,), float(i))}, checkpoint_id=f"{path}/c{i}")
        future.result()
        groups.append(checkpoint_async._state.group)
        dist.destroy_process_group()
    loaded = [{"w": dt.zeros(4)} for _ in range(2)]
    for i, sd in enumerate(loaded):
        dcp.load(sd, checkpoint_id=f"{path}/c{i}")
    return {
        "w": [sd["w"].tolist() for sd in loaded],
        "new_group": groups[0] is not groups[1],
        "old_destroyed": groups[0].broken == "destroyed",
    }


def test_a_new_default_group_gets_a_new_checkpoint_group(tmp_path):
    args = {"path": str(tmp_path), "port": free_port()}
    got = run_tcp(2, "test_dcp_async:saving_in_two_worlds", args).values()
    for value in got:
        assert value == {"w": [[0.0] * 4, [1.0] * 4], "new_group": True, "old_destroyed": True}


def ordering_and_world(path: str) -> dict:
    """async_save with the default group named (training goes on meanwhile), a synchronous
    save to the same path right after (it lands last), and destroy_process_group while a
    save is still running (it finishes, and the checkpoint group goes with the world)."""
    from dtrain.parallel import checkpoint_async

    dist.init_process_group(timeout=60)
    rank = dist.get_rank()
    write = checkpoint_async.write

    def slow_write(*args, **kwargs):  # the async save still writing when save is called
        time.sleep(0.5)
        return write(*args, **kwargs)

    checkpoint_async.write = slow_write
    w = dt.full((64,), 1.0)
    future = dcp.async_save({"w": w}, checkpoint_id=f"{path}/a", process_group=dist.group.WORLD)
    sums = []
    for i in range(20):
        x = dt.tensor([float(rank + i)])
        dist.all_reduce(x)
        sums.append(x.item())
    w.fill_(2.0)
    dcp.save({"w": w}, checkpoint_id=f"{path}/a")  # waits for the async one: lands last
    first = future.done()
    late = dcp.async_save({"w": dt.full((64,), 3.0)}, checkpoint_id=f"{path}/b")
    group = checkpoint_async._state.group
    dist.destroy_process_group()  # waits for the save, then destroys the checkpoint group
    loaded = [{"w": dt.zeros(64)} for _ in range(2)]
    for sd, name in zip(loaded, "ab"):
        dcp.load(sd, checkpoint_id=f"{path}/{name}", no_dist=True)
    return {
        "sums": sums,
        "async_done_before_save_returned": first,
        "late_done": late.done() and late.exception() is None,
        "a": loaded[0]["w"].tolist()[:2],
        "b": loaded[1]["w"].tolist()[:2],
        "group_destroyed": group.broken == "destroyed" and checkpoint_async._state.group is None,
    }


def test_save_load_and_destroy_wait_and_the_default_group_is_not_used(tmp_path):
    got = run_tcp(2, "test_dcp_async:ordering_and_world", {"path": str(tmp_path)}).values()
    for value in got:
        assert value["sums"] == [2 * i + 1 for i in range(20)]
        assert value["async_done_before_save_returned"] and value["late_done"]
        assert value["a"] == [2.0, 2.0] and value["b"] == [3.0, 3.0]
        assert value["group_destroyed"]


def staging_refusal() -> dict:
    """save's message for an object it refuses, not a deep copy's."""
    future = dcp.async_save({"lock": threading.Lock()}, checkpoint_id="unused", no_dist=True)
    return {"error": f"{type(future.exception()).__name__}: {future.exception()}"}


def test_an_object_save_refuses_gets_saves_message(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    error = staging_refusal()["error"]
    assert "pickle" not in error and "lock" in error, error


def test_a_failed_save_does_not_keep_the_staged_copy_alive(tmp_path):
    import gc
    import weakref

    from dtrain.parallel import checkpoint_async

    (tmp_path / "file").write_text("not a directory")
    staged_refs = []
    original = checkpoint_async.stage

    def stage(state_dict):
        staged = original(state_dict)
        staged_refs.append(weakref.ref(staged["w"]))
        return staged

    checkpoint_async.stage = stage
    try:
        future = dcp.async_save({"w": dt.ones(1000)}, checkpoint_id=str(tmp_path / "file" / "x"))
        assert future.exception() is not None
    finally:
        checkpoint_async.stage = original
    gc.collect()
    assert staged_refs[0]() is None  # freed, though the Future (and its error) is held


def exit_while_saving(path: str) -> dict:
    """Start a save that is slow to write and return at once, without waiting for it."""
    import time

    import dtrain.parallel.checkpoint_save as checkpoint_save

    real = checkpoint_save._write_rank_file

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(1.0)
        return real(*args, **kwargs)

    checkpoint_save._write_rank_file = slow
    dist.init_process_group(timeout=30)
    sd = rank_state(dist.get_rank(), dist.get_world_size())
    future = dcp.async_save(sd, checkpoint_id=path)
    sd["model"]["w"].fill_(0.0)
    return {"done": future.done()}


def test_a_save_still_running_at_exit_is_finished(tmp_path):
    path = str(tmp_path / "ckpt")
    got = run_tcp(2, "test_dcp_async:exit_while_saving", {"path": path}).values()
    assert [v["done"] for v in got] == [False, False]
    loaded = {"model": {"w": dt.zeros(N)}, "shard": dt.zeros(8), "step": None}
    dcp.load(loaded, checkpoint_id=path)
    np.testing.assert_array_equal(loaded["model"]["w"].numpy(), np.arange(N, dtype=np.float32))
    assert loaded["shard"].tolist() == [0.0] * 4 + [1.0] * 4 and loaded["step"] == 0
    assert os.listdir(tmp_path) == ["ckpt"]


@pytest.mark.skipif(not have_mpiexec(), reason=NO_MPIEXEC)
@pytest.mark.parametrize("level", ["multiple", "serialized"])
def test_mpi_in_the_background_or_with_a_warning_before_returning(tmp_path, level):
    args = {"path": str(tmp_path), "backend": "mpi", "level": level}
    got = run_mpi(2, "test_dcp_async:saving_while_training", args, guard=150).values()
    check_saving_while_training(got, 2)
    for value in got:
        if level == "serialized":  # MPI_THREAD_SERIALIZED: saved before async_save returned
            assert value["done_at_return"] == [True, True]
            assert len(value["warnings"]) == 2
            assert "without MPI_THREAD_MULTIPLE" in value["warnings"][0]
        else:
            assert value["warnings"] == []
