"""``save`` and ``load``: checkpoints as safetensors files, never pickle.

A checkpoint is one safetensors file. Its tensors are the file's tensors; the structure
around them (dicts, lists, tuples and plain values, with references to tensor names) is a
JSON document in the header's ``__metadata__`` under the key ``"dtrain"``. Any safetensors
reader sees the tensors, and a safetensors file from elsewhere loads as a flat dict of
tensors. Loading parses JSON and copies bytes; nothing in a file can run code.

Tensor names: the path of keys and list positions joined by dots, so a state dict's
tensors keep its keys (``"fc.weight"``) and nested objects get names such as
``"optimizer.state.0.exp_avg"`` (a clash gets ``#2``, ``#3``… appended).

Differences from ``torch.save``/``torch.load``:

- What can be saved: ``Tensor`` (a ``Parameter`` comes back as a plain tensor without
  ``requires_grad``), numpy arrays (back as numpy arrays), ``dict`` with ``str`` or ``int``
  keys (any Mapping comes back as a plain ``dict``; key types round-trip exactly), ``list``,
  ``tuple`` (a namedtuple comes back as a plain tuple), ``str``, ``int`` (up to 4000 digits),
  ``float`` (exactly, NaN and infinities too), ``bool`` and ``None``. numpy scalars are saved
  as the Python number. Anything else raises ``TypeError``.
- Sharing: a tensor that appears more than once, or tensors that wrap the same array (a
  tensor and its ``detach()``), is stored once and loads as one tensor object in every
  place; partial views of another tensor (``x[0]``) are stored as copies.
- CUDA tensors are written from host copies and load back onto their device unless
  ``map_location`` says otherwise: a device (str or ``Device``), a dict from saved device
  to device (``{"cuda:0": "cpu"}``; devices it does not name stay), or a callable
  ``fn(tensor, location)`` that gets each tensor on the CPU and its saved device name and
  returns the tensor to use (or None for the saved device). PyTorch's callable gets a
  storage instead; ``lambda storage, loc: storage`` loads on the CPU in both.
- ``save`` and ``load`` take a path or a binary file object (``open(p, "wb")``,
  ``io.BytesIO``): the same bytes either way, written or read from its current position.
  Only a save to a path is atomic: a crash or kill mid-save leaves the previous file as it
  was (and at worst a hidden ``.<name>.*.tmp`` file beside it); a file object gets the
  bytes as they are written.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
import secrets
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

import numpy as np

from dtrain._tensor.serialization import safetensors
from dtrain._tensor.serialization.safetensors import CheckpointError
from dtrain._tensor.tensor import Tensor, wrap
from dtrain.runtime.backend import is_cuda_array
from dtrain.runtime.device import CPU, Device, as_numpy, to_device
from dtrain.runtime.dtypes import SUPPORTED
from dtrain.runtime.random import Generator

FORMAT_KEY = "dtrain"
FORMAT_VERSION = 1

_SAVEABLE = (
    "tensors, numpy arrays, dicts (str or int keys), lists, tuples, str, int, float, bool and None"
)


# ---- save --------------------------------------------------------------------------------
def save(obj: Any, f: str | os.PathLike | BinaryIO) -> None:
    """Save ``obj`` (e.g. ``model.state_dict()`` or a dict of several) to ``f``.

    The file is a safetensors file; see the module docstring for what can be saved. A save
    to a path is atomic: the data goes to a temporary file in the same directory, which is
    flushed, fsynced and renamed over ``f``. A binary file object gets the same bytes at
    its current position (not atomically; it is not closed).

    Args:
        obj: nested dicts, lists and tuples of tensors, numpy arrays and plain values.
        f: the file's path, or a binary file object with ``write``.

    Raises:
        TypeError: for an object that cannot be saved (the message names where it is).
        FileNotFoundError: when the directory of ``f`` does not exist.
    """
    stream = _stream(f, "save", "write")
    path = None if stream is not None else _path(f, "save")
    encoder = _Encoder()
    root = encoder.encode(obj, "")
    document = {"version": FORMAT_VERSION, "root": root}
    metadata = {FORMAT_KEY: json.dumps(document, separators=(",", ":"), allow_nan=False)}
    if stream is not None:
        safetensors.write(stream, encoder.arrays, metadata)
        return
    _atomic_write(path, lambda fh: safetensors.write(fh, encoder.arrays, metadata))


_MAX_INT_BITS = 13_287  # 2**13287 < 10**4000: at most 4000 digits, under Python's 4300


class _Encoder:
    """Walks an object, collecting host arrays by name and returning its JSON structure."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self._names: dict[int, str] = {}  # id(array) -> name
        self._keep: list[Any] = []  # keeps ids valid while the walk runs
        self._open: set[int] = set()  # containers being walked, to catch cycles

    def encode(self, obj: Any, path: str) -> Any:
        if isinstance(obj, Tensor):
            ref = {"tensor": self._array_name(obj._array, path)}
            if is_cuda_array(obj._array):
                ref["device"] = str(obj.device)
            return ref
        if isinstance(obj, np.ndarray):
            if safetensors.dtype_code(obj.dtype) is None:
                raise TypeError(
                    f"save: the numpy array at {_where(path)} has dtype {obj.dtype}, which "
                    "safetensors cannot hold; convert it (e.g. .astype(np.float32)) first"
                )
            return {"ndarray": self._array_name(obj, path)}
        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, np.bool_):
            return bool(obj)
        if isinstance(obj, (int, np.integer)):
            if abs(int(obj)).bit_length() > _MAX_INT_BITS:  # JSON text past Python's limit
                raise TypeError(
                    f"save: {_where(path)} is an int of over 4000 digits, more than Python "
                    "writes as text by default; save it as a str (str(n)) or an array"
                )
            return int(obj)
        if isinstance(obj, (float, np.floating)):
            value = float(obj)
            if math.isfinite(value):
                return value
            return {"float": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
        if isinstance(obj, (Mapping, list, tuple)):
            if id(obj) in self._open:
                raise ValueError(f"save: {_where(path)} contains itself; break the cycle")
            self._open.add(id(obj))
            try:
                return self._container(obj, path)
            finally:
                self._open.discard(id(obj))
        hint = (
            "; save its state instead: generator.get_state()"
            if isinstance(obj, (Generator, np.random.Generator))
            else ""
        )
        raise TypeError(
            f"save: {_where(path)} is a {type(obj).__name__}, which a checkpoint cannot hold; "
            f"it holds {_SAVEABLE}{hint}"
        )

    def _container(self, obj: Any, path: str) -> Any:
        if isinstance(obj, Mapping):
            pairs = []
            for key, value in obj.items():
                if isinstance(key, (bool, np.bool_)) or not isinstance(key, (str, int, np.integer)):
                    raise TypeError(
                        f"save: {_where(path)} has the key {key!r} of type "
                        f"{type(key).__name__}; checkpoint dict keys must be str or int"
                    )
                key = key if isinstance(key, str) else int(key)
                pairs.append([key, self.encode(value, _join(path, key))])
            return {"dict": pairs}
        items = [self.encode(value, _join(path, i)) for i, value in enumerate(obj)]
        return items if isinstance(obj, list) else {"tuple": items}

    def _array_name(self, array: Any, path: str) -> str:
        if id(array) in self._names:
            return self._names[id(array)]
        name = path or "tensor"
        if name in self.arrays or name == safetensors.METADATA:
            k = 2
            while f"{name}#{k}" in self.arrays:
                k += 1
            name = f"{name}#{k}"
        self._keep.append(array)
        self._names[id(array)] = name
        self.arrays[name] = as_numpy(array)  # CUDA arrays: a host copy
        return name


def _join(path: str, key: str | int) -> str:
    return f"{path}.{key}" if path else str(key)


def _where(path: str) -> str:
    return f"obj at {path!r}" if path else "obj"


def _path(f: Any, what: str) -> str:
    if not isinstance(f, (str, os.PathLike)):
        raise TypeError(
            f"{what}: f must be a path (str or os.PathLike) or a binary file object, got "
            f"{type(f).__name__}"
        )
    return os.fspath(f)


def _stream(f: Any, what: str, method: str) -> Any:
    """``f`` when it is a file object with ``method`` (None for a path); a text-mode file
    is a TypeError (checkpoints are bytes).

    Text mode is found by a zero-length probe, not from ``f.mode``: binary streams such as
    ``gzip.GzipFile`` (an int mode) and zip members (mode ``'r'``) have no ``'b'`` in it.
    """
    if isinstance(f, (str, os.PathLike)) or not hasattr(f, method):
        return None
    if isinstance(f, io.TextIOBase) or _takes_text(f, method):
        raise TypeError(
            f"{what}: {getattr(f, 'name', type(f).__name__)!r} is open in text mode; open it "
            f"in binary mode ('{'wb' if method == 'write' else 'rb'}')"
        )
    return f


def _takes_text(f: Any, method: str) -> bool:
    """Whether the file object ``f`` reads or writes str rather than bytes."""
    if method == "read":
        try:
            return isinstance(f.read(0), str)
        except TypeError:  # a read() that takes no size: read whole later, bytes or not
            return False
    try:
        f.write(b"")
    except TypeError:  # e.g. "write() argument must be str, not bytes"
        return True
    return False


def _stream_size(f: Any) -> tuple[Any, int]:
    """A readable binary stream positioned where ``f`` is, and the bytes left in it."""
    if hasattr(f, "readinto") and getattr(f, "seekable", lambda: False)():
        start = f.tell()
        end = f.seek(0, io.SEEK_END)
        f.seek(start)
        return f, end - start
    data = f.read()
    return io.BytesIO(data), len(data)


def _atomic_write(path: str, write: Callable[[BinaryIO], None]) -> None:
    """Write a file with ``write`` to a temporary name beside ``path``, fsync it, rename it
    over ``path`` and fsync the directory, so ``path`` is always the old or the new file.
    A symlink is followed (its target is the file replaced, as a plain open would write)."""
    given, path = path, os.path.realpath(path)
    if os.path.islink(path):  # realpath stops at a loop of links
        raise OSError(errno.ELOOP, f"save: {given!r} is a loop of symbolic links", given)
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"save: the directory {directory!r} of {path!r} does not exist; create it first "
            "(os.makedirs)"
        )
    if os.path.isdir(path):
        raise IsADirectoryError(f"save: {path!r} is a directory; pass a file path")
    # A hidden name ending in .tmp, so a leftover from a killed save never looks like a
    # checkpoint; os.open with 0o666 lets the umask set the mode, as open() would.
    base = os.path.basename(path)
    while True:
        tmp = os.path.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(
                tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666
            )
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    """Make the rename durable; platforms that cannot open a directory skip it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---- load --------------------------------------------------------------------------------
def load(
    f: str | os.PathLike | BinaryIO,
    map_location: Any = None,
    weights_only: bool | None = None,
) -> Any:
    """Load what ``save`` wrote to ``f``, or the tensors of any safetensors file.

    Args:
        f: the file's path, or a binary file object (read from its current position).
        map_location: None puts each tensor back on the device it was saved from; a device
            (``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a ``Device``) for every tensor; a dict
            from saved device to device (``{"cuda:0": "cpu"}``; others stay where they
            were); or a callable ``fn(tensor, location)`` given each tensor on the CPU and
            its saved device name, returning the tensor to use (None: the saved device).
        weights_only: accepted for PyTorch compatibility: whatever its value, nothing is
            ever unpickled (a checkpoint holds tensors and JSON), so loading is always as
            safe as PyTorch's ``weights_only=True``.

    Returns:
        The saved object; for a safetensors file that ``save`` did not write, a dict from
        tensor name to tensor, in name order.

    Raises:
        CheckpointError: (a ``ValueError``) when the file is truncated, corrupted or not a
            safetensors file; the message names the file and the problem.
        RuntimeError: when a tensor's device is not available; pass ``map_location="cpu"``.
    """
    stream = _stream(f, "load", "read")
    path = _path(f, "load") if stream is None else str(getattr(f, "name", "<file object>"))
    placer = _Placer(path, map_location)
    if stream is not None:
        fh, size = _stream_size(stream)
        entries, metadata = safetensors.read_header(fh, path, size)
        arrays = safetensors.read_arrays(fh, path, entries)
    else:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            entries, metadata = safetensors.read_header(fh, path, size)
            arrays = safetensors.read_arrays(fh, path, entries)
    if FORMAT_KEY not in metadata:
        return {name: placer(name, arrays[name], "cpu") for name in sorted(arrays)}
    try:
        document = json.loads(metadata[FORMAT_KEY])
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(
            f"{path}: corrupted metadata: the {FORMAT_KEY!r} structure is not JSON ({exc})"
        ) from None
    if not isinstance(document, dict) or set(document) != {"version", "root"}:
        raise CheckpointError(f"{path}: corrupted metadata: {FORMAT_KEY!r} has the wrong form")
    if document["version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {document['version']!r}; this dtrain reads "
            f"version {FORMAT_VERSION} (a newer dtrain wrote it?)"
        )
    decoder = _Decoder(path, arrays, placer)
    try:
        return decoder.decode(document["root"])
    except RecursionError:
        raise CheckpointError(f"{path}: corrupted metadata: the structure nests too deep") from None


class _Decoder:
    """Rebuilds the saved object from its JSON structure and the file's arrays."""

    def __init__(self, path: str, arrays: dict[str, np.ndarray], placer: _Placer) -> None:
        self.path, self.arrays, self.placer = path, arrays, placer
        self._tensors: dict[tuple, Tensor] = {}

    def bad(self, problem: str) -> CheckpointError:
        return CheckpointError(f"{self.path}: corrupted metadata: {problem}")

    def decode(self, node: Any) -> Any:
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, list):
            return [self.decode(item) for item in node]
        if not isinstance(node, dict) or not node:
            raise self.bad(f"unexpected node {node!r}")
        if "tensor" in node:
            return self._tensor(node)
        if len(node) != 1:
            raise self.bad(f"unexpected node {node!r}")
        ((tag, value),) = node.items()
        if tag == "dict" and isinstance(value, list):
            out = {}
            for pair in value:
                if (
                    not isinstance(pair, list)
                    or len(pair) != 2
                    or isinstance(pair[0], bool)
                    or not isinstance(pair[0], (str, int))
                ):
                    raise self.bad(f"a dict item should be [str or int key, value], got {pair!r}")
                out[pair[0]] = self.decode(pair[1])
            return out
        if tag == "tuple" and isinstance(value, list):
            return tuple(self.decode(item) for item in value)
        if tag == "ndarray" and isinstance(value, str):
            return self._array(value)
        if tag == "float" and value in ("nan", "inf", "-inf"):
            return float(value)
        raise self.bad(f"unexpected node {node!r}")

    def _array(self, name: str) -> np.ndarray:
        if name not in self.arrays:
            raise self.bad(f"the structure refers to tensor {name!r}, which the file does not hold")
        return self.arrays[name]

    def _tensor(self, node: dict) -> Tensor:
        name, device = node["tensor"], node.get("device", "cpu")
        if (
            not isinstance(name, str)
            or not isinstance(device, str)
            or set(node) - {"tensor", "device"}
        ):
            raise self.bad(f"unexpected tensor node {node!r}")
        array = self._array(name)
        key = (name, device)
        if key not in self._tensors:
            try:
                Device(device)
            except ValueError:
                raise self.bad(f"tensor {name!r} has unknown device {device!r}") from None
            self._tensors[key] = self.placer(name, array, device)
        return self._tensors[key]


class _Placer:
    """Puts each loaded array where ``map_location`` says (see ``load``)."""

    def __init__(self, path: str, map_location: Any) -> None:
        self.path = path
        self.device: Device | None = None
        self.table: dict[Device, Device] | None = None
        self.function: Callable[[Tensor, str], Any] | None = None
        if map_location is None:
            return
        if isinstance(map_location, (str, Device)):
            self.device = Device(map_location)
        elif isinstance(map_location, Mapping):
            self.table = {}
            for key, value in map_location.items():
                if not isinstance(key, (str, Device)) or not isinstance(value, (str, Device)):
                    raise TypeError(
                        f"load: map_location dict entries must map a device to a device "
                        f"(such as {{'cuda:0': 'cpu'}}), got {key!r}: {value!r}"
                    )
                self.table[Device(key)] = Device(value)
        elif callable(map_location):
            self.function = map_location
        else:
            raise TypeError(
                f"load: map_location must be a device such as 'cpu' or 'cuda:0', a dict from "
                f"device to device, or a callable (tensor, location), got "
                f"{type(map_location).__name__}"
            )

    def __call__(self, name: str, array: np.ndarray, saved: str) -> Tensor:
        if self.function is not None:
            host = _place(self.path, name, array, None)
            result = self.function(host, saved)
            if result is None:
                return _place(self.path, name, array, Device(saved))
            if not isinstance(result, Tensor):
                raise TypeError(
                    f"load: map_location returned {type(result).__name__} for tensor {name!r}; "
                    "return a Tensor (or None to keep its saved device)"
                )
            return result
        if self.device is not None:
            return _place(self.path, name, array, self.device)
        where = Device(saved)
        if self.table is not None:
            where = self.table.get(where, where)
        return _place(self.path, name, array, where)


def _place(path: str, name: str, array: np.ndarray, device: Device | None) -> Tensor:
    """A tensor of ``array`` on ``device`` (the CPU when None)."""
    if array.dtype.newbyteorder("=") not in SUPPORTED:
        raise CheckpointError(
            f"{path}: tensor {name!r} has numpy dtype {array.dtype}, which dtrain tensors do "
            "not support; read the file with safetensors.numpy.load_file instead"
        )
    if device is None or device == CPU:
        return wrap(array)
    try:
        return wrap(to_device(array, device))
    except RuntimeError as exc:
        raise RuntimeError(
            f"load: {path} holds tensor {name!r} for {device}, which is not available here "
            f"({exc}); pass map_location='cpu' to load it on the CPU"
        ) from None


__all__ = ["FORMAT_KEY", "CheckpointError", "load", "save"]
