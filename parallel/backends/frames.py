"""The tcp backend's message header: every chunk of data carries the collective's
signature, so ranks that disagree are caught at no extra cost."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

MAGIC = b"DTRN"
HEADER = struct.Struct(
    "<4sBBBBiqqqqq"
)  # magic kind op dtype reduce src seq count offset nbytes tag

DATA, ABORT, BYE = 1, 2, 3
OPS = {1: "all_reduce", 2: "broadcast", 3: "all_gather", 4: "reduce_scatter", 5: "send"}
OP_CODES = {name: code for code, name in OPS.items()}
DTYPES = [
    np.dtype(t)
    for t in (
        "float16",
        "float32",
        "float64",
        "int8",
        "uint8",
        "int16",
        "int32",
        "int64",
        "bool",
        "uint16",
        "uint32",
        "uint64",
    )
]
DTYPE_CODES = {dtype: code for code, dtype in enumerate(DTYPES)}
REDUCE_NAMES = ["SUM", "AVG", "MAX", "MIN", "PRODUCT"]


@dataclass(frozen=True)
class Header:
    kind: int
    op: int
    dtype: int
    reduce: int
    src: int
    seq: int
    count: int
    offset: int
    nbytes: int
    tag: int

    def pack(self) -> bytes:
        return HEADER.pack(
            MAGIC,
            self.kind,
            self.op,
            self.dtype,
            self.reduce,
            self.src,
            self.seq,
            self.count,
            self.offset,
            self.nbytes,
            self.tag,
        )

    @classmethod
    def unpack(cls, raw: bytes) -> Header:
        magic, *fields = HEADER.unpack(raw)
        if magic != MAGIC:
            raise ValueError(f"bad magic {magic!r}: not a dtrain peer, or a corrupted stream")
        return cls(*fields)

    def signature(self) -> str:
        """``all_reduce(float32, 1024 elements, SUM)`` — what the sender called."""
        name = OPS.get(self.op, f"op {self.op}")
        dtype = DTYPES[self.dtype] if self.dtype < len(DTYPES) else f"dtype {self.dtype}"
        parts = [str(dtype), f"{self.count} elements"]
        if self.op in (1, 4):
            parts.append(REDUCE_NAMES[self.reduce] if self.reduce < len(REDUCE_NAMES) else "?")
        if self.op == 2:  # a broadcast's reduce field carries its root
            parts.append(f"root {self.reduce}")
        if self.op == 5:
            parts.append(f"tag {self.tag}")
        return f"{name}({', '.join(parts)})"

    def same_call(self, other: Header) -> bool:
        return (self.op, self.dtype, self.reduce, self.seq, self.count, self.tag) == (
            other.op,
            other.dtype,
            other.reduce,
            other.seq,
            other.count,
            other.tag,
        )
