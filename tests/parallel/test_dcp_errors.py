"""``dtrain.distributed.checkpoint`` in one process (no process group): what is written,
and the errors for corrupted, foreign and incomplete checkpoints and mismatched state dicts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import dtrain as dt
import dtrain.distributed.checkpoint as dcp
from dtrain.distributed.checkpoint import ShardedTensor


def saved(tmp_path) -> str:
    path = str(tmp_path / "ckpt")
    state = {
        "w": dt.arange(6.0).reshape(2, 3),
        "s": ShardedTensor(dt.arange(10.0, 14.0), (2, 2), 0),
        "meta": {"epoch": 2, "inf": float("inf"), 7: [1, (2, 3)]},
        "opt": {"state": {"w": {"step": 4, "m": dt.ones(2, 3)}}},
    }
    dcp.save(state, checkpoint_id=path)
    return path


def fresh() -> dict:
    return {
        "w": dt.zeros(2, 3),
        "s": ShardedTensor(dt.zeros(2), (2, 2), 1),
        "meta": None,
        "opt": {"state": {"w": {"step": 0, "m": dt.zeros(2, 3)}}},
    }


def test_round_trip_in_place(tmp_path):
    path = saved(tmp_path)
    state = fresh()
    w, local = state["w"], state["s"].local_tensor()
    dcp.load(state, checkpoint_id=path)
    assert state["w"] is w and w.tolist() == np.arange(6.0).reshape(2, 3).tolist()
    assert local.tolist() == [11.0, 12.0]  # elements [1, 3) of the flattening
    assert state["meta"] == {"epoch": 2, "inf": float("inf"), 7: [1, (2, 3)]}
    assert state["opt"]["state"]["w"]["step"] == 4
    assert state["opt"]["state"]["w"]["m"].tolist() == [[1.0] * 3] * 2
    assert sorted(os.listdir(path)) == [".metadata", "__0_0.distcp"]


def test_data_files_are_safetensors_and_metadata_is_json(tmp_path):
    path = saved(tmp_path)
    from dtrain._tensor.serialization import safetensors

    with open(os.path.join(path, "__0_0.distcp"), "rb") as fh:
        entries, _ = safetensors.read_header(fh, "f", os.path.getsize(fh.name))
    assert sorted(e.name for e in entries) == ["opt.state.w.m", "s[0:4]", "w"]
    meta = json.loads(Path(path, ".metadata").read_text())
    w = next(i for i in meta["items"] if i["key"] == "w")
    assert w["shape"] == [2, 3] and w["dtype"] == "float32"
    assert w["chunks"] == [{"file": "__0_0.distcp", "name": "w", "offset": 0, "length": 6}]


def test_save_replaces_a_checkpoint_and_keeps_no_temporary(tmp_path):
    path = saved(tmp_path)
    dcp.save({"w": dt.ones(2, 3)}, storage_writer=dcp.FileSystemWriter(path))
    state = {"w": dt.zeros(2, 3)}
    dcp.load(state, checkpoint_id=path)
    assert state["w"].tolist() == [[1.0] * 3] * 2
    assert os.listdir(tmp_path) == ["ckpt"]
    with pytest.raises(RuntimeError, match="holds no s"):  # the old keys are gone
        dcp.load({"s": dt.zeros(2, 2)}, checkpoint_id=path)


def test_save_refuses_to_replace_other_directories(tmp_path):
    other = tmp_path / "data"
    other.mkdir()
    (other / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not a dtrain distributed checkpoint"):
        dcp.save({"w": dt.ones(2)}, checkpoint_id=str(other))
    assert (other / "keep.txt").read_text() == "precious"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dcp.save({"w": dt.ones(2)}, checkpoint_id=str(tmp_path / "no" / "ckpt"))
    empty = tmp_path / "empty"
    empty.mkdir()
    dcp.save({"w": dt.ones(2)}, checkpoint_id=str(empty))
    assert sorted(os.listdir(empty)) == [".metadata", "__0_0.distcp"]


def test_missing_keys_are_all_named(tmp_path):
    path = saved(tmp_path)
    state = {"w": dt.zeros(2, 3), "extra": dt.zeros(1), "more": {"n": 1}}
    with pytest.raises(RuntimeError, match=r"holds no extra, more;"):
        dcp.load(state, checkpoint_id=path)


def test_shape_and_kind_mismatches_name_the_key(tmp_path):
    path = saved(tmp_path)
    state = fresh()
    state["opt"]["state"]["w"]["m"] = dt.zeros(3, 2)
    with pytest.raises(ValueError, match=r"opt\.state\.w\.m has shape \(2, 3\) in the checkpoint"):
        dcp.load(state, checkpoint_id=path)
    state = fresh()
    state["meta"] = dt.zeros(1)
    with pytest.raises(ValueError, match="meta is a plain value in the checkpoint"):
        dcp.load(state, checkpoint_id=path)


def test_corrupted_metadata(tmp_path):
    path = saved(tmp_path)
    meta = os.path.join(path, ".metadata")
    Path(meta).write_text("{not json")
    with pytest.raises(dt.CheckpointError, match=r"\.metadata: corrupted metadata: not valid JSON"):
        dcp.load(fresh(), checkpoint_id=path)
    Path(meta).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(dt.CheckpointError, match="not a dtrain distributed checkpoint"):
        dcp.load(fresh(), checkpoint_id=path)


def test_metadata_may_only_name_the_checkpoints_own_files(tmp_path):
    path = saved(tmp_path)
    meta = os.path.join(path, ".metadata")
    document = json.loads(Path(meta).read_text())
    document["items"][0]["chunks"][0]["file"] = "../../etc/passwd"
    Path(meta).write_text(json.dumps(document))
    with pytest.raises(dt.CheckpointError, match="has the chunk"):
        dcp.load(fresh(), checkpoint_id=path)


def test_missing_and_truncated_data_files(tmp_path):
    path = saved(tmp_path)
    data = os.path.join(path, "__0_0.distcp")
    raw = Path(data).read_bytes()
    Path(data).write_bytes(raw[:-8])
    with pytest.raises(dt.CheckpointError, match=r"__0_0\.distcp: truncated"):
        dcp.load(fresh(), checkpoint_id=path)
    os.remove(data)
    with pytest.raises(dt.CheckpointError, match=r"__0_0\.distcp: missing"):
        dcp.load(fresh(), checkpoint_id=path)


def test_foreign_directories_and_files(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(dt.CheckpointError, match=r"plain: not a distributed checkpoint: it has no"):
        dcp.load({"w": dt.zeros(1)}, checkpoint_id=str(tmp_path / "plain"))
    dt.save({"w": dt.zeros(1)}, str(tmp_path / "single.pt"))
    with pytest.raises(dt.CheckpointError, match="a file, not a directory"):
        dcp.load({"w": dt.zeros(1)}, checkpoint_id=str(tmp_path / "single.pt"))
    with pytest.raises(FileNotFoundError, match="no directory"):
        dcp.load({"w": dt.zeros(1)}, checkpoint_id=str(tmp_path / "nothing"))


def test_argument_errors(tmp_path):
    path = str(tmp_path / "ckpt")
    with pytest.raises(ValueError, match="pass checkpoint_id"):
        dcp.save({"w": dt.ones(1)})
    with pytest.raises(TypeError, match="holding tensors; use a list or a dict"):
        dcp.save({"w": (dt.ones(1),)}, checkpoint_id=path)
    with pytest.raises(TypeError, match="a set"):
        dcp.save({"w": {1, 2}}, checkpoint_id=path)
    with pytest.raises(ValueError, match="differ"):
        dcp.save({"w": dt.ones(1)}, checkpoint_id=path, storage_writer=dcp.FileSystemWriter("x"))
    with pytest.raises(ValueError, match="async_save: pass checkpoint_id"):
        dcp.async_save({"w": dt.ones(1)})  # at once, as save
    future = dcp.async_save({"w": (dt.ones(1),)}, checkpoint_id=path)
    with pytest.raises(TypeError, match="holding tensors; use a list or a dict"):
        future.result()  # what save refuses about the state dict: from the Future
    assert not os.path.exists(path)


def test_sharded_ranges_must_cover_the_tensor(tmp_path):
    state = {"s": ShardedTensor(dt.ones(3), (2, 3), 1)}
    with pytest.raises(ValueError, match=r"no rank holds elements \[0, \.\.\.\) of s"):
        dcp.save(state, checkpoint_id=str(tmp_path / "ckpt"))
    assert os.listdir(tmp_path) == []


def test_replicated_tensors_are_written_once_spread_over_the_ranks():
    from dtrain.parallel.checkpoint_plan import assign, describe

    plan = [describe([name], dt.zeros(n)) for name, n in (("a", 8), ("b", 8), ("c", 4))]
    written, entries = assign([plan, plan])
    assert written == [[0, 2], [1]]  # a to rank 0, b to the lighter rank 1, c to rank 0
    assert [entries[k]["ranges"] for k in ('["a"]', '["b"]', '["c"]')] == [
        [[0, 8, 0]],
        [[0, 8, 1]],
        [[0, 4, 0]],
    ]
    other = [describe(["a"], dt.zeros(2, 4)), *plan[1:]]
    with pytest.raises(ValueError, match=r"ranks disagree on a: a float32 tensor of shape \(8,\)"):
        assign([plan, other])
