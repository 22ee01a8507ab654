"""The dtypes dtrain supports, with PyTorch's names. A dtype is a numpy ``dtype`` object.

``bfloat16`` is a name only: numpy and cupy have no such type, so it is a sentinel that
prints as ``bfloat16``, equals no real dtype, and that ``to_dtype`` (and so every creation
function, ``.to()``, cast and ``autocast(dtype=...)``) refuses with a TypeError. Scripts
that merely build a table of dtype names (nanoGPT's) then import and run in float32/16.
``dtype`` is the type of all of them, for annotations and ``isinstance``: an abstract class
that numpy's ``np.dtype`` (and so every numpy dtype object) and the sentinel's class belong to.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import numpy as np

float16 = np.dtype(np.float16)
float32 = np.dtype(np.float32)
float64 = np.dtype(np.float64)
int8 = np.dtype(np.int8)
uint8 = np.dtype(np.uint8)
int16 = np.dtype(np.int16)
int32 = np.dtype(np.int32)
int64 = np.dtype(np.int64)
bool_ = np.dtype(np.bool_)


class dtype(abc.ABC):  # noqa: N801, B024 - PyTorch's name; a type to test against only
    """The type of dtrain's dtypes: ``isinstance(dt.float32, dt.dtype)`` is True, as is
    ``isinstance(dt.bfloat16, dt.dtype)``. The real dtypes are numpy ``dtype`` objects
    (registered here as a virtual subclass); there is nothing to construct."""

    __slots__ = ()


dtype.register(np.dtype)


class _NamedOnly(dtype):
    """A dtype PyTorch has and numpy/cupy do not: usable as a name, refused in use."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name

    def __eq__(self, other: object) -> bool:
        return other is self  # never equal to a numpy dtype, a string or a type

    def __hash__(self) -> int:
        return hash(self.name)

    def __reduce__(self) -> str:
        return self.name  # copy/pickle give back the module's singleton

    @property
    def is_floating_point(self) -> bool:
        return True

    @property
    def itemsize(self) -> int:
        return 2


bfloat16 = _NamedOnly("bfloat16")
BFLOAT16_REFUSAL = (
    "bfloat16: numpy and cupy have no bfloat16; use dt.float16 (with a GradScaler on CUDA) "
    "or float32"
)

#: Aliases PyTorch also accepts.
ALIASES = {
    "half": float16,
    "float": float32,
    "double": float64,
    "short": int16,
    "int": int32,
    "long": int64,
    "bool": bool_,
}
SUPPORTED = (float16, float32, float64, int8, uint8, int16, int32, int64, bool_)
DEFAULT_FLOAT = float32
DEFAULT_INT = int64
_SUPPORTED_SET = frozenset(SUPPORTED)


def names_bfloat16(spec: Any) -> bool:
    """Whether ``spec`` means bfloat16: ``dt.bfloat16``, the string, or another library's
    bfloat16 (``torch.bfloat16``, ``ml_dtypes.bfloat16``) by its printed name."""
    if spec is bfloat16:
        return True
    text = str(getattr(spec, "name", spec)).lower()
    return text.endswith("bfloat16") or text == "bf16"


def to_dtype(spec: Any) -> np.dtype:
    """Resolve ``dt.float32``, ``"float32"``, ``"float"``, ``np.float32`` or ``float``.

    Raises:
        TypeError: bfloat16 (numpy and cupy have none), or a dtype dtrain does not support.
    """
    if isinstance(spec, np.dtype) and spec.kind != "V":  # the common case, kept cheap:
        if spec in _SUPPORTED_SET:  # np.dtype.name is a slow property in numpy 2 (~4 us),
            return spec  # and ml_dtypes' bfloat16 (the one to refuse) has kind "V"
    elif isinstance(spec, str) and spec in ALIASES:
        return ALIASES[spec]
    if isinstance(spec, _NamedOnly) or names_bfloat16(spec):
        raise TypeError(BFLOAT16_REFUSAL)
    if spec is float:
        return DEFAULT_FLOAT
    if spec is int:
        return DEFAULT_INT
    try:
        dtype = np.dtype(spec)
    except TypeError:
        dtype = None
    # (not `None in SUPPORTED`: numpy compares a dtype equal to None as float64)
    if dtype is None or dtype not in SUPPORTED:
        names = ", ".join(str(d) for d in SUPPORTED)
        raise TypeError(f"unsupported dtype {spec!r}; use one of {names}")
    return dtype


def accumulation_dtype(dtype: Any) -> np.dtype:
    """The dtype to sum ``dtype`` values in: float32 for float16 (whose sums and squares
    overflow past 65504), as PyTorch's CPU kernels accumulate; ``dtype`` itself otherwise."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype == np.float16 else dtype


def is_floating(dtype: np.dtype) -> bool:
    """True for float16/32/64 (and the bfloat16 name)."""
    return dtype is bfloat16 or dtype.kind == "f"


def name(dtype: np.dtype) -> str:
    """PyTorch-style name, as printed in a tensor's repr: ``dtrain.float64``."""
    return f"dtrain.{'bool' if dtype == bool_ else dtype.name}"


@dataclasses.dataclass(frozen=True)
class FloatInfo:
    """A float dtype's limits as Python floats, as ``torch.finfo`` gives them."""

    dtype: np.dtype
    bits: int
    eps: float
    max: float
    min: float
    tiny: float
    smallest_normal: float
    resolution: float


@dataclasses.dataclass(frozen=True)
class IntInfo:
    """An integer dtype's limits as Python ints, as ``torch.iinfo`` gives them."""

    dtype: np.dtype
    bits: int
    max: int
    min: int


def finfo(dtype: Any = None) -> FloatInfo:
    """Limits of a float dtype (``min``, ``max``, ``eps``, ``tiny``, ``bits`` ...), as
    ``torch.finfo``; the default float dtype (float32) when none is given."""
    dtype = DEFAULT_FLOAT if dtype is None else to_dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"finfo takes a floating-point dtype, got {dtype}; use iinfo for {dtype}")
    info = np.finfo(dtype)
    return FloatInfo(
        dtype, int(info.bits), float(info.eps), float(info.max), float(info.min),
        float(info.tiny), float(info.smallest_normal), 10.0 ** -int(info.precision),
    )  # fmt: skip


def iinfo(dtype: Any) -> IntInfo:
    """Limits of an integer dtype (``min``, ``max``, ``bits``), as ``torch.iinfo``."""
    dtype = to_dtype(dtype)
    if dtype.kind not in "iu":
        raise TypeError(f"iinfo takes an integer dtype, got {dtype}; use finfo for {dtype}")
    info = np.iinfo(dtype)
    return IntInfo(dtype, int(info.bits), int(info.max), int(info.min))


def get_default_dtype() -> np.dtype:
    """The dtype of tensors made from Python floats: float32, as PyTorch's default."""
    return DEFAULT_FLOAT


def set_default_dtype(dtype: Any) -> None:
    """Accepted for float32, the default already. dtrain's default float dtype is fixed:
    another one is a TypeError saying to pass ``dtype=`` where tensors are made."""
    if to_dtype(dtype) != DEFAULT_FLOAT:
        raise TypeError(
            f"set_default_dtype({to_dtype(dtype)}): dtrain's default float dtype is fixed at "
            "float32; pass dtype= to the creation functions (dt.tensor(x, dtype=dt.float64)) "
            "or convert with .double()"
        )
