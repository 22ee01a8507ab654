"""Checkpoints: round trips, safetensors interop, atomic saves and every rejection."""

from __future__ import annotations

import collections
import gzip
import io
import json
import math
import os
import pickle
import re
import signal
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import dtrain as dt
from dtrain._tensor.serialization import CheckpointError, load, save
from dtrain._tensor.serialization import safetensors as st
from dtrain.runtime.random import default_generator

ALL_DTYPES = [
    dt.float16,
    dt.float32,
    dt.float64,
    dt.int8,
    dt.uint8,
    dt.int16,
    dt.int32,
    dt.int64,
    dt.bool,
]


@pytest.fixture
def torch():
    """The ``torch`` module, or a skip when it is not installed (CI has none)."""
    return pytest.importorskip("torch")


def sample(dtype, shape, seed=0):
    """A numpy array of ``dtype`` with varied values (extremes included for ints)."""
    rng = np.random.default_rng(seed)
    if dtype == np.bool_:
        return np.asarray(rng.random(shape) < 0.5)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    out = rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    if out.size >= 2:
        out.flat[0], out.flat[1] = info.min, info.max
    return out


def equal(a, b):
    """Same type, dtype, shape and values (NaN equals NaN)."""
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, (dt.Tensor, np.ndarray)):
        a, b = np.asarray(a), np.asarray(b)
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
    if isinstance(a, dict):
        return list(a) == list(b) and all(
            type(k1) is type(k2) and equal(a[k1], b[k2]) for k1, k2 in zip(a, b)
        )
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(map(equal, a, b))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, float):
        return math.copysign(1, a) == math.copysign(1, b) and a == b
    return a == b


def roundtrip(obj, tmp_path, **kwargs):
    path = tmp_path / "ckpt.safetensors"
    save(obj, path)
    return load(path, **kwargs)


# ---- round trips -------------------------------------------------------------------------
def test_nested_structure_roundtrip(tmp_path):
    obj = {
        "model": collections.OrderedDict([("fc.weight", dt.randn(3, 4)), ("fc.bias", dt.zeros(3))]),
        "optimizer": {
            "state": {0: {"step": 7, "exp_avg": dt.ones(3, 4)}, 1: {"step": 7}},
            "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0, 1]}],
        },
        "int and str keys": {1: "one", "1": "string one", -5: None},
        "values": [
            1e-300,
            5e-324,
            -0.0,
            1e300,
            float("nan"),
            float("inf"),
            -float("inf"),
            2**100,
            -(2**70),
            True,
            False,
            None,
            'ünïcødé \n "quoted"',
            "",
        ],
        "empty": {"list": [], "tuple": (), "dict": {}},
        "tuple": (1, (2.5, [dt.tensor([1, 2])])),
    }
    back = roundtrip(obj, tmp_path)
    expected = dict(obj, model=dict(obj["model"]))  # any Mapping comes back a plain dict
    assert equal(back, expected)
    assert type(back["int and str keys"]) is dict and list(back["int and str keys"]) == [1, "1", -5]


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_every_dtype_and_shape_roundtrips(tmp_path, dtype):
    obj = {
        f"s{i}": dt.from_numpy(sample(dtype, shape, seed=i))
        for i, shape in enumerate([(), (1,), (5,), (2, 3, 4), (0,), (3, 0, 2)])
    }
    obj["noncontiguous"] = dt.from_numpy(sample(dtype, (4, 3)).T)
    back = roundtrip(obj, tmp_path)
    assert equal(back, obj)
    for t in back.values():  # loaded data is writable, aligned and owns its memory
        a = t.numpy()
        assert a.flags.writeable and a.flags.aligned and a.flags.c_contiguous
    back["s2"][0] = back["s2"][1]


def test_numpy_arrays_stay_numpy(tmp_path):
    obj = {
        "f": np.arange(6, dtype=np.float64).reshape(2, 3),
        "u32": np.arange(5, dtype=np.uint32),
        "big_endian": np.arange(4, dtype=">i4"),
        "scalars": [np.float32(1.5), np.int64(3), np.bool_(True)],
    }
    back = roundtrip(obj, tmp_path)
    assert isinstance(back["f"], np.ndarray) and np.array_equal(back["f"], obj["f"])
    assert back["u32"].dtype == np.uint32 and back["big_endian"].tolist() == [0, 1, 2, 3]
    assert back["scalars"] == [1.5, 3, True] and type(back["scalars"][1]) is int


def test_bare_tensor_and_bare_values(tmp_path):
    t = dt.arange(4)
    assert equal(roundtrip(t, tmp_path), t)
    assert roundtrip(3, tmp_path) == 3 and roundtrip(None, tmp_path) is None


def test_rng_state_roundtrip(tmp_path):
    dt.manual_seed(42)
    default_generator.numpy.random(3)
    state = default_generator.get_state()
    assert state["state"]["state"] > 2**64  # PCG64 holds 128-bit ints
    back = roundtrip({"rng": state, "gen": dt.Generator(7).get_state()}, tmp_path)
    assert back["rng"] == state
    expected = default_generator.numpy.random(5)
    default_generator.set_state(back["rng"])
    assert np.array_equal(default_generator.numpy.random(5), expected)


def test_shared_tensors_are_stored_once(tmp_path):
    w = dt.randn(4, 4)
    obj = {"a": w, "b": w, "c": w.detach(), "view": w[0]}
    path = tmp_path / "shared.safetensors"
    save(obj, path)
    assert sorted(load_file(str(path))) == ["a", "view"]
    back = load(path)
    assert back["a"] is back["b"] is back["c"]
    assert equal(back["view"], w[0].clone())
    back["view"][0] = 100.0  # a partial view comes back as its own copy
    assert back["a"][0, 0].item() != 100.0


def test_tensor_names(tmp_path):
    path = tmp_path / "names.safetensors"
    save({"fc.weight": dt.ones(2), "fc.bias": dt.zeros(1)}, path)
    assert sorted(load_file(str(path))) == ["fc.bias", "fc.weight"]
    save({"model": {"fc.weight": dt.ones(1)}, "optimizer": {"state": {0: {"m": dt.ones(1)}}},
          "layers": [dt.ones(1)]}, path)  # fmt: skip
    assert sorted(load_file(str(path))) == ["layers.0", "model.fc.weight", "optimizer.state.0.m"]
    clash = {"a.b": dt.tensor([1]), "a": {"b": dt.tensor([2])}, "__metadata__": dt.tensor([3])}
    save(clash, path)
    assert sorted(load_file(str(path))) == ["__metadata__#2", "a.b", "a.b#2"]
    assert equal(load(path), clash)


# ---- safetensors interop -----------------------------------------------------------------
def test_safetensors_reads_our_files(tmp_path):
    obj = {f"t.{d}": dt.from_numpy(sample(d, (3, 2))) for d in ALL_DTYPES}
    obj["scalar"] = dt.tensor(2.5)
    obj["empty"] = dt.zeros(0, 4)
    path = tmp_path / "ours.safetensors"
    save(obj, path)
    theirs = load_file(str(path))
    assert theirs.keys() == obj.keys()
    for name, t in obj.items():
        assert theirs[name].dtype == t.dtype and np.array_equal(theirs[name], np.asarray(t))
    with open(path, "rb") as f:  # data starts 8-byte aligned, as the library writes it
        assert (8 + int.from_bytes(f.read(8), "little")) % 8 == 0


def test_we_read_safetensors_files(tmp_path):
    tensors = {f"w{i}": sample(np.dtype(d), (2, 3), seed=i) for i, d in enumerate(ALL_DTYPES)}
    tensors["zero_d"] = np.array(7, dtype=np.int64)
    path = tmp_path / "theirs.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    back = load(path)
    assert list(back) == sorted(tensors)
    for name, array in tensors.items():
        assert isinstance(back[name], dt.Tensor) and equal(back[name], dt.from_numpy(array))


def test_foreign_unsigned_tensors_are_refused_as_tensors(tmp_path):
    path = tmp_path / "u32.safetensors"
    save_file({"x": np.arange(3, dtype=np.uint32)}, str(path))
    with pytest.raises(CheckpointError, match=r"uint32.*safetensors\.numpy\.load_file"):
        load(path)


def test_map_location(tmp_path):
    back = roundtrip({"w": dt.ones(2)}, tmp_path, map_location="cpu")
    assert back["w"].device == dt.device("cpu")
    back = roundtrip({"w": dt.ones(2)}, tmp_path, map_location={"cuda:0": "cpu"})
    assert back["w"].tolist() == [1.0, 1.0]
    with pytest.raises(TypeError, match="map_location must be a device"):
        roundtrip({"w": dt.ones(2)}, tmp_path, map_location=5)
    with pytest.raises(TypeError, match="dict entries"):
        roundtrip({"w": dt.ones(2)}, tmp_path, map_location={"cuda:0": 1})


def _cuda_file(tmp_path):
    """A checkpoint whose tensor "w" was saved from cuda:0 (and "c" from the CPU)."""
    path = tmp_path / "cuda.safetensors"
    root = {
        "dict": [
            ["w", {"tensor": "w", "device": "cuda:0"}],
            ["c", {"tensor": "c", "device": "cpu"}],
        ]
    }
    metadata = {"dtrain": json.dumps({"version": 1, "root": root})}
    with open(path, "wb") as f:
        st.write(f, {"w": np.ones(2, np.float32), "c": np.zeros(1, np.float32)}, metadata)
    return path


def test_map_location_dict_and_callable(tmp_path):
    path = _cuda_file(tmp_path)
    back = load(path, map_location={"cuda:0": "cpu"})
    assert back["w"].device == dt.device("cpu") and back["w"].tolist() == [1.0, 1.0]
    seen = []

    def keep_on_cpu(storage, location):
        seen.append((storage.device, location))
        return storage

    back = load(path, map_location=keep_on_cpu)
    assert back["w"].tolist() == [1.0, 1.0] and back["w"].device == dt.device("cpu")
    assert sorted(seen, key=str) == sorted(
        [(dt.device("cpu"), "cuda:0"), (dt.device("cpu"), "cpu")], key=str
    )
    doubled = load(path, map_location=lambda t, loc: t * 2)
    assert doubled["w"].tolist() == [2.0, 2.0]
    with pytest.raises(TypeError, match="returned list"):
        load(path, map_location=lambda t, loc: [t])
    # None from the callable: the saved device, which a CPU-only machine lacks
    if not dt.cuda_is_available():
        with pytest.raises(RuntimeError, match="map_location='cpu'"):
            load(path, map_location=lambda t, loc: None)
        with pytest.raises(RuntimeError, match="map_location='cpu'"):
            load(path, map_location={"cuda:1": "cpu"})  # cuda:0 is not remapped
    assert load(path, map_location=lambda t, loc: None if loc == "cpu" else t)["c"].tolist() == [
        0.0
    ]


def test_file_objects_get_the_same_bytes(tmp_path):
    obj = {"w": dt.arange(6.0).reshape(2, 3), "meta": {"epoch": 3, "name": "run"}, "t": (1, 2.5)}
    save(obj, tmp_path / "a.safetensors")
    buffer = io.BytesIO()
    buffer.write(b"xyz")  # written from the current position
    save(obj, buffer)
    assert buffer.getvalue()[3:] == (tmp_path / "a.safetensors").read_bytes()
    buffer.seek(3)
    back = load(buffer)
    assert back["w"].tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    assert back["meta"] == {"epoch": 3, "name": "run"} and back["t"] == (1, 2.5)
    with open(tmp_path / "b.pt", "wb") as f:  # time_sequence_prediction's form
        save(obj, f)
    with open(tmp_path / "b.pt", "rb") as f:
        assert load(f)["meta"]["epoch"] == 3

    # a stream that cannot seek is read whole
    class Pipe:
        def __init__(self, data):
            self._data = io.BytesIO(data)

        def read(self, n=-1):
            return self._data.read(n)

    assert load(Pipe(buffer.getvalue()[3:]))["w"].shape == (2, 3)


def test_text_mode_files_are_refused(tmp_path):
    with (
        open(tmp_path / "t.txt", "w") as f,
        pytest.raises(TypeError, match="binary mode \\('wb'\\)"),
    ):
        save({"a": 1}, f)
    save({"a": 1}, tmp_path / "t.txt")
    with open(tmp_path / "t.txt") as f, pytest.raises(TypeError, match="text mode"):
        load(f)


def test_gzip_and_zip_member_streams_roundtrip(tmp_path):
    # GzipFile.mode is an int and a zip member's mode is 'r': both are binary streams.
    obj = {"w": dt.arange(6.0).reshape(2, 3), "step": 7}
    with gzip.open(tmp_path / "c.gz", "wb") as f:
        save(obj, f)
    with gzip.open(tmp_path / "c.gz", "rb") as f:
        back = load(f)
    assert equal(back, obj)
    with zipfile.ZipFile(tmp_path / "c.zip", "w") as z, z.open("ckpt", "w") as f:
        save(obj, f)
    with zipfile.ZipFile(tmp_path / "c.zip") as z, z.open("ckpt") as f:
        assert equal(load(f), obj)


def test_gzip_and_zip_streams_match_torch(tmp_path, torch):
    # torch.save/torch.load take the same stream objects (their bytes differ: not a format test).
    for stream in ("gzip", "zip"):
        for lib_save, lib_load, value in (
            (torch.save, torch.load, torch.arange(3.0)),
            (save, load, dt.arange(3.0)),
        ):
            if stream == "gzip":
                with gzip.open(tmp_path / "t.gz", "wb") as f:
                    lib_save({"x": value}, f)
                with gzip.open(tmp_path / "t.gz", "rb") as f:
                    assert f.mode == gzip.READ  # an int
                    assert lib_load(f)["x"].tolist() == [0.0, 1.0, 2.0]
            else:
                with zipfile.ZipFile(tmp_path / "t.zip", "w") as z, z.open("m", "w") as f:
                    lib_save({"x": value}, f)
                with zipfile.ZipFile(tmp_path / "t.zip") as z, z.open("m") as f:
                    assert f.mode == "r"
                    assert lib_load(f)["x"].tolist() == [0.0, 1.0, 2.0]


def test_text_streams_without_textiobase_are_refused(tmp_path):
    # Found by what they read and write, not by a 'mode' attribute.
    class TextReader:
        mode = "rb"  # a wrong claim must not matter

        def read(self, n=-1):
            return ""

    class TextWriter:
        def write(self, s):
            if not isinstance(s, str):
                raise TypeError(f"write() argument must be str, not {type(s).__name__}")
            return len(s)

    with pytest.raises(TypeError, match="text mode; open it in binary mode \\('rb'\\)"):
        load(TextReader())
    with pytest.raises(TypeError, match="text mode; open it in binary mode \\('wb'\\)"):
        save({"a": 1}, TextWriter())
    with pytest.raises(TypeError, match="text mode"):
        load(io.StringIO(""))


def test_a_corrupt_file_object_is_a_checkpoint_error():
    with pytest.raises(CheckpointError, match="<file object>"):
        load(io.BytesIO(b"\x01\x02"))


@pytest.mark.skipif(dt.cuda_is_available(), reason="checks the error on a CPU-only machine")
def test_cuda_checkpoint_on_a_cpu_machine_names_map_location(tmp_path):
    path = tmp_path / "cuda.safetensors"
    root = {"dict": [["w", {"tensor": "w", "device": "cuda:0"}]]}
    metadata = {"dtrain": json.dumps({"version": 1, "root": root})}
    with open(path, "wb") as f:
        st.write(f, {"w": np.ones(2, np.float32)}, metadata)
    with pytest.raises(RuntimeError, match="map_location='cpu'"):
        load(path)
    assert load(path, map_location="cpu")["w"].tolist() == [1.0, 1.0]


@pytest.mark.gpu
@pytest.mark.skipif(not dt.cuda_is_available(), reason="needs a CUDA GPU and cupy")
def test_cuda_tensors_roundtrip(tmp_path):
    obj = {"gpu": dt.randn(3, 3).cuda(), "cpu": dt.ones(2)}
    back = roundtrip(obj, tmp_path)
    assert back["gpu"].is_cuda and not back["cpu"].is_cuda
    assert np.array_equal(np.asarray(back["gpu"]), np.asarray(obj["gpu"]))
    assert roundtrip(obj, tmp_path, map_location="cpu")["gpu"].device == dt.device("cpu")
    assert roundtrip({"w": dt.ones(2)}, tmp_path, map_location="cuda")["w"].is_cuda


# ---- what save refuses -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("obj", "error", "match"),
    [
        ({"a": {"b": object()}}, TypeError, r"obj at 'a.b' is a object"),
        ({"g": dt.Generator(0)}, TypeError, r"get_state\(\)"),
        ({1.5: 1}, TypeError, "key 1.5 of type float"),
        ({True: 1}, TypeError, "key True of type bool"),
        ({"s": {1, 2}}, TypeError, "is a set"),
        ({"c": np.zeros(2, np.complex64)}, TypeError, "complex64"),
        ({"n": 10**5000}, TypeError, r"obj at 'n' is an int of over 4000 digits"),
    ],
)
def test_save_refuses_what_it_cannot_hold(tmp_path, obj, error, match):
    with pytest.raises(error, match=match):
        save(obj, tmp_path / "x.safetensors")
    assert os.listdir(tmp_path) == []  # checked before any file is made


def test_save_refuses_cycles_and_bad_paths(tmp_path):
    loop = []
    loop.append(loop)
    with pytest.raises(ValueError, match="contains itself"):
        save(loop, tmp_path / "x.safetensors")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save({}, tmp_path / "missing" / "x.safetensors")
    with pytest.raises(TypeError, match=r"path \(str or os.PathLike\) or a binary file object"):
        save({}, 42)


# ---- atomic save -------------------------------------------------------------------------
def test_failed_save_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.safetensors"
    save({"w": dt.ones(3)}, path)
    before = path.read_bytes()

    def broken(f, array):
        raise OSError("disk full")

    monkeypatch.setattr(st, "write_array", broken)
    with pytest.raises(OSError, match="disk full"):
        save({"w": dt.zeros(1000)}, path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["ckpt.safetensors"]


def test_save_overwrites_and_keeps_umask_mode(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    save({"w": dt.ones(3)}, path)
    save({"w": dt.zeros(2)}, path)
    assert load(path)["w"].tolist() == [0.0, 0.0] and os.listdir(tmp_path) == [path.name]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


_KILLED_SAVE = textwrap.dedent(
    """
    import os, sys, time
    import dtrain as dt
    from dtrain._tensor.serialization import safetensors as st, save

    stage, path = sys.argv[1], sys.argv[2]
    if stage == "data":  # stop after the first tensor's bytes, mid-file
        real = st.write_array
        def write_array(f, array):
            real(f, array)
            f.flush()
            print("stalled", flush=True)
            time.sleep(60)
        st.write_array = write_array
    else:  # stop at fsync: every byte written, not yet renamed
        def fsync(fd):
            print("stalled", flush=True)
            time.sleep(60)
        os.fsync = fsync
    save({"big": dt.zeros(1_000_000), "small": dt.ones(10, dtype=dt.int8)}, path)
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.parametrize("stage", ["data", "fsync"])
def test_sigkill_mid_save_leaves_previous_checkpoint(tmp_path, stage):
    path = tmp_path / "ckpt.safetensors"
    old = {"w": dt.arange(5), "step": 3}
    save(old, path)
    before = path.read_bytes()
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_SAVE, stage, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = child.stdout.readline()
        assert line == "stalled\n", child.stderr.read()
        stray = [name for name in os.listdir(tmp_path) if name != path.name]
        assert len(stray) == 1 and os.path.getsize(tmp_path / stray[0]) > 0
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate()
    assert child.returncode == -signal.SIGKILL
    assert path.read_bytes() == before and equal(load(path), old)
    # The leftover is hidden and ends in .tmp: it never looks like a checkpoint.
    (stray,) = [name for name in os.listdir(tmp_path) if name != path.name]
    assert stray.startswith(".ckpt.safetensors.") and stray.endswith(".tmp")
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == [path.name]
    if stage == "data":
        with pytest.raises(CheckpointError, match="truncated"):
            load(tmp_path / stray)


# ---- what load refuses -------------------------------------------------------------------
def raw_file(path, header, data=b"", pad=True, length=None):
    """Write a safetensors-shaped file from a header dict (or raw header bytes)."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    if pad:
        text += b" " * (-(8 + len(text)) % 8)
    path.write_bytes((len(text) if length is None else length).to_bytes(8, "little") + text + data)
    return path


def f32(name, shape, begin):
    end = begin + 4 * math.prod(shape)
    return {name: {"dtype": "F32", "shape": shape, "data_offsets": [begin, end]}}


def structure(root):
    return {"__metadata__": {"dtrain": json.dumps({"version": 1, "root": root})}}


BAD_FILES = {
    "empty": (lambda p: p.write_bytes(b""), "fewer than the 8-byte"),
    "five bytes": (lambda p: p.write_bytes(b"\x10\x00\x00\x00\x00"), "fewer than the 8-byte"),
    "random bytes": (
        lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)),
        "header length of .* bytes, above",
    ),
    "absurd length": (lambda p: raw_file(p, {}, length=2**40), "above the 100000000-byte limit"),
    "header cut short": (lambda p: raw_file(p, f32("w", [2], 0), length=500), "truncated"),
    "data cut short": (lambda p: raw_file(p, f32("w", [4], 0), b"\x00" * 15), "truncated: .*16"),
    "offsets past the end": (
        lambda p: raw_file(p, f32("w", [3], 0), b"\x00" * 4),
        "describes 12 bytes of tensor data but the file holds 4",
    ),
    "gap before a tensor": (
        lambda p: raw_file(p, {"w": {"dtype": "F32", "shape": [1], "data_offsets": [60, 64]}}),
        "gap of 60 bytes",
    ),
    "bad JSON": (lambda p: raw_file(p, b'{"w": {"dtype": '), "not valid JSON"),
    "not UTF-8": (lambda p: raw_file(p, b'{"\xff": 1}'), "not valid JSON"),
    "JSON list": (lambda p: raw_file(p, [1, 2]), "expected a JSON object"),
    "duplicate names": (
        lambda p: raw_file(p, b'{"w": {}, "w": {}}'),
        "duplicate keys",
    ),
    "overlapping offsets": (
        lambda p: raw_file(p, {**f32("a", [2], 0), **f32("b", [2], 4)}, b"\x00" * 12),
        "overlaps",
    ),
    "unsorted offsets": (
        lambda p: raw_file(p, {"w": {"dtype": "F32", "shape": [0], "data_offsets": [4, 0]}}),
        "unsorted data_offsets",
    ),
    "shape and bytes disagree": (
        lambda p: raw_file(
            p, {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}}, b"\x00" * 12
        ),
        r"16 bytes\) but data_offsets \[0, 12\] span 12",
    ),
    "unknown dtype": (
        lambda p: raw_file(
            p, {"w": {"dtype": "BF16", "shape": [1], "data_offsets": [0, 2]}}, b"\x00" * 2
        ),
        "unknown dtype 'BF16'",
    ),
    "negative shape": (
        lambda p: raw_file(p, {"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}),
        "not a list of non-negative ints",
    ),
    "empty but past numpy's range": (
        lambda p: raw_file(
            p, {"w": {"dtype": "F32", "shape": [0, 2**62, 2**62], "data_offsets": [0, 0]}}
        ),
        "beyond what an array can have",
    ),
    "more dims than an array has": (
        lambda p: raw_file(p, {"w": {"dtype": "F32", "shape": [0] * 65, "data_offsets": [0, 0]}}),
        "beyond what an array can have",
    ),
    "missing field": (
        lambda p: raw_file(p, {"w": {"dtype": "F32", "shape": [1]}}),
        "should map to dtype, shape and data_offsets",
    ),
    "trailing bytes": (lambda p: raw_file(p, f32("w", [1], 0), b"\x00" * 8), "4 bytes follow"),
    "metadata not str": (
        lambda p: raw_file(p, {"__metadata__": {"dtrain": 1}}),
        "__metadata__ must map str to str",
    ),
    "structure refers to a missing tensor": (
        lambda p: raw_file(p, {**f32("w", [1], 0), **structure({"tensor": "v"})}, b"\x00" * 4),
        "refers to tensor 'v', which the file does not hold",
    ),
    "structure missing ndarray": (
        lambda p: raw_file(p, structure([{"ndarray": "nope"}])),
        "tensor 'nope'",
    ),
    "structure not JSON": (
        lambda p: raw_file(p, {"__metadata__": {"dtrain": "{oops"}}),
        "structure is not JSON",
    ),
    "structure with unknown node": (
        lambda p: raw_file(p, structure({"dict": [[1.5, 2]]})),
        r"dict item should be \[str or int key",
    ),
    "structure from the future": (
        lambda p: raw_file(p, {"__metadata__": {"dtrain": '{"version": 99, "root": null}'}}),
        "version 99",
    ),
    "zip (PyTorch .pt)": (
        lambda p: zipfile.ZipFile(p, "w").writestr("archive/data.pkl", b"\x80\x02}q\x00."),
        "zip archive, like a PyTorch .pt",
    ),
    "pickle": (
        lambda p: p.write_bytes(pickle.dumps({"weight": list(range(100))}, protocol=2)),
        "Python pickle.*never unpickles",
    ),
    "npy": (lambda p: np.save(p.open("wb"), np.zeros(3)), "numpy .npy file"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_load_rejects(tmp_path, case):
    make, match = BAD_FILES[case]
    path = tmp_path / "bad.safetensors"
    make(path)
    with pytest.raises(CheckpointError, match=match) as info:
        load(path)
    assert isinstance(info.value, ValueError) and str(path) in str(info.value)


def test_truncating_a_real_checkpoint_anywhere_is_caught(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    save({"w": dt.randn(8, 8), "opt": {"step": 1}}, path)
    whole = path.read_bytes()
    for cut in (1, 7, 8, 20, len(whole) // 2, len(whole) - 1):
        path.write_bytes(whole[:cut])
        with pytest.raises(CheckpointError, match=re.escape(str(path))):
            load(path)


def test_load_takes_weights_only_and_never_unpickles(tmp_path):
    path = tmp_path / "w.safetensors"
    save({"w": dt.ones(2)}, path)
    for weights_only in (None, True, False):
        assert load(path, weights_only=weights_only)["w"].tolist() == [1.0, 1.0]


def test_save_through_a_symlink_replaces_its_target(tmp_path):
    target = tmp_path / "real.safetensors"
    save({"w": dt.zeros(1)}, target)
    link = tmp_path / "latest.safetensors"
    link.symlink_to(target)
    save({"w": dt.ones(1)}, link)
    assert link.is_symlink() and load(target)["w"].tolist() == [1.0]


def test_save_refuses_a_loop_of_symlinks_and_keeps_many_dims(tmp_path):
    first, second = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    first.symlink_to(second)
    second.symlink_to(first)
    with pytest.raises(OSError, match="loop of symbolic links"):
        save({"w": 1}, first)
    assert first.is_symlink() and second.is_symlink()
    deep = dt.ones(*(1,) * 33)  # past numpy 1.x's 32 dims, within 2.x's 64
    save({"t": deep}, tmp_path / "deep.safetensors")
    assert load(tmp_path / "deep.safetensors")["t"].ndim == 33
    assert load_int(tmp_path, 10**3999 - 1) == 10**3999 - 1  # 3999 digits: saved


def load_int(tmp_path, value):
    save({"n": value}, tmp_path / "n.safetensors")
    return load(tmp_path / "n.safetensors")["n"]
