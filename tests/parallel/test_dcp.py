"""``dtrain.distributed.checkpoint`` across real processes (tcp): a DDP model and AdamW
saved on 2 ranks and loaded on 3 and 1, ShardedTensor ranges resharded, a save that fails
on one rank, and training resumed from a checkpoint equal to an uninterrupted run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from dcp_workers import SHAPES, full
from launcher import run_tcp

import dtrain as dt
import dtrain.distributed.checkpoint as dcp
from dtrain.distributed.checkpoint import ShardedTensor


@pytest.mark.parametrize("ddp", [True, False])
def test_model_and_optimizer_saved_on_2_load_on_3_and_1(tmp_path, ddp):
    path = str(tmp_path / "ckpt")
    saved = run_tcp(2, "dcp_workers:save_trained", {"path": path, "steps": 3, "ddp": ddp})
    saved = saved.values()
    assert saved[0]["files"] == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    assert saved[0]["world_size"] == 2
    assert saved[0]["params"] == saved[1]["params"]
    for world in (3, 1):
        loaded = run_tcp(world, "dcp_workers:load_fresh", {"path": path, "ddp": ddp}).values()
        for value in loaded:
            assert value["params"] == saved[0]["params"]  # exactly: bytes copied
            assert value["state"] == saved[0]["state"]
            assert value["lr"] == 0.02 and value["step"] == 3
    assert saved[0]["state"]["0"]["step"] == 3


def test_resume_equals_an_uninterrupted_run(tmp_path):
    path = str(tmp_path / "ckpt")
    args = {"first": 3, "more": 2}
    whole = run_tcp(2, "dcp_workers:resume", {"path": None, "stop": False, **args}).values()
    run_tcp(2, "dcp_workers:resume", {"path": path, "stop": True, **args}).values()
    resumed = run_tcp(2, "dcp_workers:resume", {"path": path, "stop": False, **args}).values()
    for a, b in zip(whole, resumed):
        assert a["params"] == b["params"]
        assert a["state"] == b["state"]
        assert a["state"]["0"]["step"] == 5


RANGES_2 = {"w": [[0, 13], [13, 35]], "v": [[0, 0], [0, 4]]}  # uneven; rank 0 holds no v
RANGES_3 = {"w": [[0, 10], [10, 11], [11, 35]], "v": [[2, 4], [0, 3], [3, 3]]}


def test_sharded_ranges_resharded_from_2_to_3_ranks_and_to_full(tmp_path):
    path = str(tmp_path / "ckpt")
    files = run_tcp(2, "dcp_workers:sharded_save", {"path": path, "ranges": RANGES_2}).values()
    assert files[0] == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    loaded = run_tcp(3, "dcp_workers:sharded_load", {"path": path, "ranges": RANGES_3}).values()
    for rank, value in enumerate(loaded):
        for name in ("w", "v"):
            lo, hi = RANGES_3[name][rank]
            np.testing.assert_array_equal(value[name], full(name).reshape(-1)[lo:hi])
        assert value["rep"]["a"] == np.arange(6.0).reshape(2, 3).tolist()
        assert value["rep"]["b"] == (np.arange(6.0).reshape(3, 2) + 10).tolist()
        assert value["plain"] == [3, [0.9, 0.99]] and value["tuple"]
    # One process, no process group: into full tensors and a numpy array.
    state = {"w": dt.zeros(*SHAPES["w"]), "v": np.zeros(4, np.float32), "plain": 0}
    dcp.load(state, checkpoint_id=path)
    np.testing.assert_array_equal(state["w"].numpy(), full("w"))
    np.testing.assert_array_equal(state["v"], full("v"))
    assert state["plain"] == {"epoch": 3, "betas": (0.9, 0.99)}
    # Every range stored once; each replicated tensor once, by the rank with fewer bytes to
    # write (rank 0: 52 bytes of w against rank 1's 88 of w and 16 of v).
    items = {i["key"]: i for i in json.loads(Path(path, ".metadata").read_text())["items"]}
    assert [(c["offset"], c["length"]) for c in items["w"]["chunks"]] == [(0, 13), (13, 22)]
    assert [(c["offset"], c["length"]) for c in items["v"]["chunks"]] == [(0, 0), (0, 4)]
    assert len(items["rep.a"]["chunks"]) == len(items["rep.b"]["chunks"]) == 1
    writers = {items[k]["chunks"][0]["file"] for k in ("rep.a", "rep.b")}
    assert writers == {"__0_0.distcp"}


def test_a_load_error_on_one_rank_raises_on_every_rank(tmp_path):
    path = str(tmp_path / "ckpt")
    run_tcp(2, "dcp_workers:sharded_save", {"path": path, "ranges": RANGES_2}).values()
    args = {"path": path, "ranges": RANGES_3, "bad_rank": 1}
    values = run_tcp(3, "dcp_workers:sharded_load", args).values()
    assert values[1]["error"][0] == "ValueError" and "(5, 7)" in values[1]["error"][1]
    for rank in (0, 2):
        kind, message = values[rank]["error"]
        assert kind == "ValueError" and "rank 1 failed" in message and "w has shape" in message


@pytest.mark.parametrize("how", ["raise", "exit"])
def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path, how):
    path = str(tmp_path / "ckpt")
    launch = run_tcp(2, "dcp_workers:failing_save", {"path": path, "how": how})
    assert not launch.timed_out, launch.describe()
    kind, message = launch[0].value["error"]
    if how == "raise":
        assert kind == "RuntimeError"
        assert "rank 1 failed" in message and "No space left" in message
        assert launch[1].value["error"][0] == "OSError"
        assert os.listdir(tmp_path) == ["ckpt"]  # the unfinished directory was removed
    else:  # rank 1 died: rank 0's collective fails instead of hanging
        assert launch[1].returncode == 3
        assert kind == "CollectiveError", message
    state = {"x": dt.zeros(4), "y": dt.zeros(3)}
    dcp.load(state, checkpoint_id=path)
    assert state["x"].tolist() == [1.0] * 4 and state["y"].tolist() == [1.0] * 3


@pytest.mark.parametrize("how", ["set", "deep"])
def test_a_step_1_failure_on_rank_1_raises_everywhere_and_leaves_no_temporary(tmp_path, how):
    # "deep": a RecursionError, which step 1 once let through: rank 0 then waited for the
    # timeout, and in both cases rank 0's temporary directory stayed behind.
    path = str(tmp_path / "ckpt")
    launch = run_tcp(2, "dcp_workers:step1_fails", {"path": path, "how": how})
    values = launch.values()
    own = "TypeError" if how == "set" else "RecursionError"
    assert values[1]["error"][0] == own
    kind, message = values[0]["error"]
    assert kind == ("TypeError" if how == "set" else "RuntimeError"), message
    assert f"rank 1 failed: {own}" in message
    for value in values:
        assert value["listing"] == ["ckpt"]
        assert value["w"] == [1.0] * 3  # the previous checkpoint stays


def test_fsdp_ignore_frozen_params_leaves_out_the_frozen_parameters():
    for whole in (False, True):
        values = run_tcp(2, "dcp_workers:fsdp_frozen", {"full": whole}).values()
        for value in values:
            assert value["every"] == ["0.weight", "0.bias", "1.weight", "1.bias"]
            assert value["keys"] == ["1.weight", "1.bias"]


def test_fsdp_resumes_from_2_on_3_ranks(tmp_path):
    path = str(tmp_path / "ckpt")
    args = {"path": path, "first": 3, "more": 2}
    saved = run_tcp(2, "dcp_workers:fsdp_resume", {**args, "mode": "save"}).values()
    whole = run_tcp(2, "dcp_workers:fsdp_resume", {**args, "mode": "whole"}).values()
    resumed = run_tcp(2, "dcp_workers:fsdp_resume", {**args, "mode": "load"}).values()
    for a, b in zip(whole, resumed):
        np.testing.assert_array_equal(
            np.concatenate([np.ravel(p) for p in a["params"]]),
            np.concatenate([np.ravel(p) for p in b["params"]]),
        )
    # At 3 ranks the same checkpoint loads (the full parameters after loading are equal).
    loaded = run_tcp(3, "dcp_workers:fsdp_resume", {**args, "more": 0, "mode": "load"}).values()
    assert loaded[0]["params"] == saved[0]["params"]


def test_sharded_tensor_into_wrong_tensor_kind(tmp_path):
    path = str(tmp_path / "ckpt")
    dcp.save({"s": ShardedTensor(dt.arange(4.0), (2, 2), 0)}, checkpoint_id=path)
    with pytest.raises(ValueError, match="s is a float32 tensor of shape"):
        dcp.load({"s": 3}, checkpoint_id=path)
