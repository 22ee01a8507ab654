"""The safetensors file format, written and read with numpy alone.

A file is: an 8-byte little-endian unsigned header length ``N``; ``N`` bytes of UTF-8 JSON,
``{name: {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
"__metadata__": {str: str}}``; then the tensors' raw little-endian bytes, where the offsets
count from the first byte after the header. Reading checks everything the header claims
against the file before it trusts it, and names the file and the problem when it does not
hold (``CheckpointError``).
"""

from __future__ import annotations

import json
import math
from typing import Any, BinaryIO

import numpy as np

#: safetensors dtype codes dtrain reads and writes (BF16 and the FP8 codes have no numpy
#: dtype). U16/U32/U64 exist for numpy arrays; dtrain tensors never have them.
DTYPES = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype("u1"),
    "I8": np.dtype("i1"),
    "I16": np.dtype("<i2"),
    "U16": np.dtype("<u2"),
    "F16": np.dtype("<f2"),
    "I32": np.dtype("<i4"),
    "U32": np.dtype("<u4"),
    "F32": np.dtype("<f4"),
    "I64": np.dtype("<i8"),
    "U64": np.dtype("<u8"),
    "F64": np.dtype("<f8"),
}
_CODES = {(dtype.kind, dtype.itemsize): code for code, dtype in DTYPES.items()}

#: The largest header the safetensors library accepts; a length above it means the file is
#: something else (a zip's or pickle's first bytes read as a length are enormous).
MAX_HEADER = 100_000_000
METADATA = "__metadata__"


class CheckpointError(ValueError):
    """A file that cannot be a checkpoint: truncated, corrupted, or in another format."""


def dtype_code(dtype: np.dtype) -> str | None:
    """The safetensors code for a numpy dtype, or None when the format has none."""
    return _CODES.get((dtype.kind, dtype.itemsize))


def write(f: BinaryIO, arrays: dict[str, np.ndarray], metadata: dict[str, str] | None) -> None:
    """Write ``arrays`` (host arrays of dtypes with a code) and ``metadata`` to ``f``.

    The data is laid out largest itemsize first, as the safetensors library does, so every
    tensor starts at a multiple of its itemsize; the header is padded with spaces to make
    the data start 8-byte aligned.
    """
    order = sorted(arrays, key=lambda name: (-arrays[name].dtype.itemsize, name))
    header: dict[str, Any] = {}
    if metadata:
        header[METADATA] = metadata
    offset = 0
    for name in order:
        array = arrays[name]
        header[name] = {
            "dtype": dtype_code(array.dtype),
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
    text = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    text += b" " * (-(8 + len(text)) % 8)
    f.write(len(text).to_bytes(8, "little"))
    f.write(text)
    for name in order:
        write_array(f, arrays[name])


def write_array(f: BinaryIO, array: np.ndarray) -> None:
    """Write one array's elements as little-endian bytes in row-major order."""
    little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    if little.size:
        f.write(little.reshape(-1).view(np.uint8))


def _foreign_hint(prefix: bytes) -> str:
    """What a file that failed to parse probably is, from its first bytes."""
    if prefix.startswith(b"PK\x03\x04"):
        return (
            "; it is a zip archive, like a PyTorch .pt/.pth file from torch.save. dtrain never "
            "unpickles; in PyTorch, re-save the tensors with safetensors.torch.save_file"
        )
    if prefix[:1] == b"\x80" and prefix[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return (
            "; it is a Python pickle, like an old PyTorch checkpoint. dtrain never unpickles; "
            "in PyTorch, re-save the tensors with safetensors.torch.save_file"
        )
    if prefix.startswith(b"\x93NUMPY"):
        return "; it is a numpy .npy file; load it with numpy.load and save it with dtrain.save"
    return ""


def _reject_duplicates(pairs: list) -> dict:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"duplicate keys {dup}")
    return dict(pairs)


class Entry:
    """One tensor's header record, checked: its dtype, shape and byte range."""

    __slots__ = ("begin", "dtype", "end", "name", "shape")

    def __init__(self, path: str, name: str, info: Any) -> None:
        def bad(problem: str) -> CheckpointError:
            return CheckpointError(f"{path}: corrupted header: tensor {name!r} {problem}")

        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise bad(f"should map to dtype, shape and data_offsets, got {info!r}")
        code, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(code, str) or code not in DTYPES:
            raise bad(
                f"has unknown dtype {code!r}; dtrain reads {', '.join(sorted(DTYPES))} "
                "(convert bfloat16 and fp8 to float32 before saving)"
            )
        if not isinstance(shape, list) or not all(_is_count(s) for s in shape):
            raise bad(f"has shape {shape!r}, not a list of non-negative ints")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(_is_count(o) for o in offsets)
        ):
            raise bad(f"has data_offsets {offsets!r}, not a pair of non-negative ints")
        if offsets[0] > offsets[1]:
            raise bad(f"has unsorted data_offsets {offsets} (begin after end)")
        dtype = DTYPES[code]
        # What numpy can make: an empty shape passes the size check below at any size, and
        # numpy refuses one whose other dims multiply past its address range.
        span = math.prod(s for s in shape if s) * dtype.itemsize
        if len(shape) > _MAX_DIMS or span > _MAX_BYTES:
            raise bad(f"has shape {shape!r}, beyond what an array can have")
        nbytes = math.prod(shape) * dtype.itemsize
        if offsets[1] - offsets[0] != nbytes:
            raise bad(
                f"has shape {shape} of {code} ({nbytes} bytes) but data_offsets {offsets} span "
                f"{offsets[1] - offsets[0]} bytes"
            )
        self.name, self.dtype, self.shape = name, dtype, tuple(shape)
        self.begin, self.end = offsets


_MAX_DIMS = 64 if np.lib.NumpyVersion(np.__version__) >= "2.0.0" else 32  # numpy's limit
_MAX_BYTES = np.iinfo(np.intp).max


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_header(f: BinaryIO, path: str, size: int) -> tuple[list[Entry], dict[str, str]]:
    """Read and check the header of the open file ``f`` of ``size`` bytes.

    Returns:
        The entries sorted by offset, and the ``__metadata__`` dict (empty when absent).

    Raises:
        CheckpointError: when the file is truncated, corrupted or not safetensors.
    """
    prefix = f.read(8)
    if len(prefix) < 8:
        raise CheckpointError(
            f"{path}: not a checkpoint: the file has {size} bytes, fewer than the 8-byte "
            "header length a safetensors file starts with (truncated or empty)"
        )
    length = int.from_bytes(prefix, "little")
    if length > MAX_HEADER:
        raise CheckpointError(
            f"{path}: not a safetensors checkpoint: its first 8 bytes give a header length of "
            f"{length} bytes, above the {MAX_HEADER}-byte limit" + _foreign_hint(prefix)
        )
    if 8 + length > size:
        raise CheckpointError(
            f"{path}: truncated: the header should be {length} bytes but only {size - 8} "
            "follow the length" + _foreign_hint(prefix)
        )
    raw = f.read(length)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_reject_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(
            f"{path}: corrupted header: not valid JSON ({exc})" + _foreign_hint(prefix)
        ) from None
    if not isinstance(header, dict):
        raise CheckpointError(
            f"{path}: corrupted header: expected a JSON object, got {type(header).__name__}"
        )
    metadata = header.pop(METADATA, None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise CheckpointError(f"{path}: corrupted header: __metadata__ must map str to str")
    entries = sorted(
        (Entry(path, name, info) for name, info in header.items()),
        key=lambda e: (e.begin, e.end),
    )
    data_size = size - 8 - length
    end = 0
    for entry in entries:
        if entry.begin < end:
            raise CheckpointError(
                f"{path}: corrupted header: tensor {entry.name!r} at bytes "
                f"[{entry.begin}, {entry.end}) overlaps the tensor before it (ends at {end})"
            )
        if entry.begin > end:
            raise CheckpointError(
                f"{path}: corrupted header: a gap of {entry.begin - end} bytes before tensor "
                f"{entry.name!r}; safetensors data must be packed"
            )
        end = entry.end
    if end > data_size:
        raise CheckpointError(
            f"{path}: truncated: the header describes {end} bytes of tensor data but the file "
            f"holds {data_size}"
        )
    if end < data_size:
        raise CheckpointError(
            f"{path}: corrupted: {data_size - end} bytes follow the last tensor's data"
        )
    return entries, metadata


def read_arrays(f: BinaryIO, path: str, entries: list[Entry]) -> dict[str, np.ndarray]:
    """Read each entry's data into a new, aligned, writable native-order array; ``f`` must
    be positioned at the start of the data and ``entries`` sorted by offset."""
    arrays = {}
    for entry in entries:
        array = np.empty(entry.shape, dtype=entry.dtype)
        buffer = memoryview(array.reshape(-1).view(np.uint8))
        got = 0
        while got < len(buffer):
            n = f.readinto(buffer[got:])
            if not n:
                raise CheckpointError(
                    f"{path}: truncated while reading tensor {entry.name!r} (the file changed "
                    "during the load?)"
                )
            got += n
        if not array.dtype.isnative:
            array = array.astype(array.dtype.newbyteorder("="))
        arrays[entry.name] = array
    return arrays


__all__ = [
    "DTYPES",
    "MAX_HEADER",
    "CheckpointError",
    "Entry",
    "dtype_code",
    "read_arrays",
    "read_header",
    "write",
    "write_array",
]
