"""``dtrain.distributed.checkpoint`` and the file system, in one process: a load sees one
save while another replaces it, symbolic links, durability order, cycles, and a dtype
mismatch cast as torch casts it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import dtrain as dt
import dtrain.distributed.checkpoint as dcp
from dtrain.parallel import checkpoint_fs, checkpoint_load


@pytest.fixture
def torch() -> Any:
    """The ``torch`` module, or a skip when it is not installed."""
    return pytest.importorskip("torch")


def test_a_save_landing_during_a_load_does_not_mix_the_two(tmp_path, monkeypatch):
    path = str(tmp_path / "ckpt")
    dcp.save({"w": dt.full((3,), 3.0), "step": 3}, checkpoint_id=path)
    real = checkpoint_load._fill_all

    def save_then_fill(*args):  # another job's save lands once the files are open
        dcp.save({"w": dt.full((3,), 5.0), "step": 5}, checkpoint_id=path)
        real(*args)

    monkeypatch.setattr(checkpoint_load, "_fill_all", save_then_fill)
    state = {"w": dt.zeros(3), "step": 0}
    dcp.load(state, checkpoint_id=path)
    assert state["w"].tolist() == [3.0] * 3 and state["step"] == 3
    monkeypatch.undo()
    dcp.load(state, checkpoint_id=path)
    assert state["w"].tolist() == [5.0] * 3 and state["step"] == 5


def test_a_save_landing_before_the_files_are_open_is_an_error(tmp_path, monkeypatch):
    path = str(tmp_path / "ckpt")
    dcp.save({"w": dt.full((3,), 3.0), "step": 3}, checkpoint_id=path)
    real = checkpoint_fs.read_metadata

    def read_then_save(*args):
        document = real(*args)
        dcp.save({"w": dt.full((3,), 5.0), "step": 5}, checkpoint_id=path)
        return document

    monkeypatch.setattr(checkpoint_fs, "read_metadata", read_then_save)
    state = {"w": dt.zeros(3), "step": 0}
    with pytest.raises(dt.CheckpointError, match="replaced by another save"):
        dcp.load(state, checkpoint_id=path)
    assert state["w"].tolist() == [0.0] * 3 and state["step"] == 0


def test_a_checkpoint_id_that_is_a_symlink_is_saved_through(tmp_path):
    real, link = tmp_path / "real", tmp_path / "link"
    dcp.save({"w": dt.ones(2)}, checkpoint_id=str(real))
    os.symlink(real, link)
    dcp.save({"w": dt.full((2,), 7.0)}, checkpoint_id=str(link))
    assert link.is_symlink()
    state = {"w": dt.zeros(2)}
    dcp.load(state, checkpoint_id=str(real))
    assert state["w"].tolist() == [7.0, 7.0]
    assert sorted(os.listdir(tmp_path)) == ["link", "real"]
    (tmp_path / "new").mkdir()
    os.symlink(tmp_path / "new" / "ckpt", tmp_path / "dangling")
    dcp.save({"w": dt.ones(2)}, checkpoint_id=str(tmp_path / "dangling"))
    assert sorted(os.listdir(tmp_path / "new" / "ckpt")) == [".metadata", "__0_0.distcp"]


def test_a_mount_point_is_refused(tmp_path, monkeypatch):
    path = str(tmp_path / "ckpt")
    real = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: p == path or real(p))
    with pytest.raises(ValueError, match="is a mount point"):
        dcp.save({"w": dt.ones(2)}, checkpoint_id=path)
    assert os.listdir(tmp_path) == []


def test_the_directory_is_fsynced_before_the_swap_and_the_old_one_removed_after(
    tmp_path, monkeypatch
):
    path = str(tmp_path / "ckpt")
    dcp.save({"w": dt.ones(2)}, checkpoint_id=path)
    events: list = []
    monkeypatch.setattr(checkpoint_fs, "_fsync_directory", lambda d: events.append(("fsync", d)))
    exchange, rmtree = checkpoint_fs._exchange, checkpoint_fs.shutil.rmtree

    def record_exchange(a, b):
        events.append(("exchange", a))
        return exchange(a, b)

    def record_rmtree(d, **kwargs):
        events.append(("rmtree", d))
        rmtree(d, **kwargs)

    monkeypatch.setattr(checkpoint_fs, "_exchange", record_exchange)
    monkeypatch.setattr(checkpoint_fs.shutil, "rmtree", record_rmtree)
    dcp.save({"w": dt.ones(2) * 2}, checkpoint_id=path)
    kinds = [kind for kind, _ in events]
    tmp = events[kinds.index("exchange")][1]
    swap = kinds.index("exchange")
    assert ("fsync", tmp) in events[:swap]  # the entries of the new directory
    assert events[swap + 1 :] == [("fsync", str(tmp_path)), ("rmtree", tmp)]


def test_save_rechecks_what_it_replaces(tmp_path, monkeypatch):
    path = tmp_path / "ckpt"
    dcp.save({"w": dt.ones(2)}, checkpoint_id=str(path))
    real = checkpoint_fs.write_metadata

    def write_then_replace(directory, document):  # someone puts data there meanwhile
        real(directory, document)
        checkpoint_fs.shutil.rmtree(path)
        path.mkdir()
        (path / "keep.txt").write_text("precious")

    monkeypatch.setattr(checkpoint_fs, "write_metadata", write_then_replace)
    with pytest.raises(FileExistsError, match="not a dtrain distributed checkpoint"):
        dcp.save({"w": dt.ones(2)}, checkpoint_id=str(path))
    assert (path / "keep.txt").read_text() == "precious"
    assert os.listdir(tmp_path) == ["ckpt"]


@pytest.mark.parametrize("name", ["__0_0.distcp", ".metadata"])
def test_symlinked_files_inside_a_checkpoint_are_refused(tmp_path, name):
    path, other = tmp_path / "ckpt", tmp_path / "other"
    dcp.save({"w": dt.zeros(3)}, checkpoint_id=str(path))
    dcp.save({"w": dt.full((3,), 42.0)}, checkpoint_id=str(other))
    os.remove(path / name)
    os.symlink(other / name, path / name)
    state = {"w": dt.zeros(3)}
    with pytest.raises(dt.CheckpointError, match=f"{name}: a symbolic link"):
        dcp.load(state, checkpoint_id=str(path))
    assert state["w"].tolist() == [0.0] * 3


@pytest.mark.parametrize("through", ["a list without tensors", "a dict with tensors"])
def test_a_state_dict_holding_itself_is_a_value_error(tmp_path, through):
    state: dict = {"w": dt.ones(1)}
    if through == "a dict with tensors":
        state["self"] = [state]
    else:
        loop: list = []
        loop.append(loop)
        state["c"] = loop
    with pytest.raises(ValueError, match="contains itself"):
        dcp.save(state, checkpoint_id=str(tmp_path / "ckpt"))
    assert os.listdir(tmp_path) == []


def test_a_shared_container_is_not_a_cycle(tmp_path):
    shared = {"m": dt.ones(2)}
    dcp.save({"a": shared, "b": shared}, checkpoint_id=str(tmp_path / "ckpt"))
    state = {"a": {"m": dt.zeros(2)}, "b": {"m": dt.zeros(2)}}
    dcp.load(state, checkpoint_id=str(tmp_path / "ckpt"))
    assert state["a"]["m"].tolist() == state["b"]["m"].tolist() == [1.0, 1.0]


def test_a_dtype_mismatch_is_cast_into_the_target(tmp_path):
    path = str(tmp_path / "ckpt")
    values = np.array([0.0, 1.7, -2.5, 3.25], dtype=np.float32)
    dcp.save({"x": dt.tensor(values), "n": values.copy()}, checkpoint_id=path)
    x, n = dt.zeros(4, dtype=dt.float64), np.zeros(4, np.int64)
    state = {"x": x, "n": n}
    dcp.load(state, checkpoint_id=path)
    assert state["x"] is x and x.dtype == dt.float64
    np.testing.assert_array_equal(x.numpy(), values.astype(np.float64))
    np.testing.assert_array_equal(n, values.astype(np.int64))  # truncated, as numpy and torch


def test_a_dtype_mismatch_is_cast_as_torch_casts_it(tmp_path, torch):
    import warnings

    import torch.distributed.checkpoint as tdcp

    values = np.array([0.0, 1.7, -2.5, 3.25], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that no process group is initialized
        tdcp.save({"x": torch.from_numpy(values)}, checkpoint_id=str(tmp_path / "t"))
        for dtype, ours in ((torch.float64, dt.float64), (torch.int64, dt.int64)):
            theirs = torch.zeros(4, dtype=dtype)
            tdcp.load({"x": theirs}, checkpoint_id=str(tmp_path / "t"))
            dcp.save({"x": dt.tensor(values)}, checkpoint_id=str(tmp_path / "d"))
            mine = dt.zeros(4, dtype=ours)
            dcp.load({"x": mine}, checkpoint_id=str(tmp_path / "d"))
            np.testing.assert_array_equal(mine.numpy(), theirs.numpy())


def test_an_unknown_dtype_in_the_metadata_is_a_checkpoint_error(tmp_path):
    path = str(tmp_path / "ckpt")
    dcp.save({"w": dt.ones(2)}, checkpoint_id=path)
    meta = Path(path, ".metadata")
    document = json.loads(meta.read_text())
    document["items"][0]["dtype"] = "no such dtype"
    meta.write_text(json.dumps(document))
    with pytest.raises(dt.CheckpointError, match="has the dtype 'no such dtype'"):
        dcp.load({"w": dt.zeros(2)}, checkpoint_id=path)


def test_a_missing_key_names_at_most_20_saved_keys(tmp_path):
    path = str(tmp_path / "ckpt")
    dcp.save({f"k{i}": dt.ones(1) for i in range(25)}, checkpoint_id=path)
    with pytest.raises(RuntimeError, match=r"holds no extra;.*k19 and 5 more\)") as info:
        dcp.load({"extra": dt.zeros(1)}, checkpoint_id=path)
    assert "k20" not in str(info.value)
