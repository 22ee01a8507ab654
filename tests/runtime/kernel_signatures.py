"""Check kernel launches against the kernels' CUDA C signatures, without a GPU.

A kernel launch passes its arguments as raw bytes: a wrong order, an ``int`` where the
kernel takes ``long long``, or a float32 array where it reads ``double`` is not an error on
the GPU, just wrong numbers (or a fault). ``FakeCupy`` stands in for the few cupy calls the
kernel wrappers make (``empty``, ``zeros``, ``.device``, ``.data.ptr``...), its arrays are
numpy arrays underneath, and ``check_launch`` compares each recorded launch with the
``__global__`` declaration it names: one argument per parameter, pointers as arrays of the
element type of that template instantiation, scalars as the exact numpy scalar type, and
every pointer inside a multi-tensor ``TensorList`` an array of the kernel's element type.
"""

from __future__ import annotations

import importlib
import re
import types
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from dtrain.runtime import kernels
from dtrain.runtime.kernels.multi_tensor import LIST_DTYPE

#: Every kernel module (each registers one source under its own name), so that a new one is
#: checked without being listed here.
KERNEL_MODULES = tuple(
    importlib.import_module(f"{kernels.__name__}.{source.name}") for source in kernels.sources()
)

_SCALARS = {
    "int": np.int32,
    "long long": np.int64,
    "double": np.float64,
    "float": np.float32,
}
_ELEMENTS = {
    "float": np.float32,
    "double": np.float64,
    "half_t": np.float16,
    "long long": np.int64,
    "int": np.int32,
}


class FakeCupyArray(np.ndarray):
    """A numpy array that answers as a cupy one: its type's module starts with "cupy", and
    it has ``.device`` (a context manager with ``.id``) and ``.data.ptr``."""

    registry: ClassVar[dict[int, FakeCupyArray]] = {}  # data pointer -> array (TensorList)

    @property
    def device(self) -> _Device:
        return _Device(0)

    @property
    def _c_contiguous(self) -> bool:  # cupy's flag, read without making a flags object
        return self.flags.c_contiguous

    @property
    def data(self) -> _Pointer:
        ptr = self.__array_interface__["data"][0]
        FakeCupyArray.registry[ptr] = self
        owner = self
        while isinstance(owner.base, np.ndarray):  # as cupy: views share one allocation
            owner = owner.base
        return _Pointer(ptr, 0, owner)

    def get(self) -> np.ndarray:
        return np.asarray(self)


FakeCupyArray.__module__ = "cupy._fake"


@dataclass
class _Pointer:
    ptr: int
    device_id: int
    mem: Any = None  # the allocation, shared by every view of it


@dataclass
class _Device:
    id: int

    def __enter__(self) -> _Device:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


def fake(array: Any) -> FakeCupyArray:
    """A fake cupy array holding a copy of ``array``."""
    return np.array(array).view(FakeCupyArray)


class _Stream:
    ptr = 0  # the legacy default stream


class FakeCupy:
    """The cupy calls the kernel wrappers make, on numpy."""

    float16, float32, float64, int64 = np.float16, np.float32, np.float64, np.int64

    class cuda:  # noqa: N801 - cupy's name
        Device = staticmethod(lambda device=0: _Device(device))
        get_current_stream = staticmethod(lambda: _Stream())
        runtime = types.SimpleNamespace(getDeviceCount=lambda: 1, getDevice=lambda: 0)

    @staticmethod
    def empty(shape: Any, dtype: Any = np.float32) -> FakeCupyArray:
        return np.full(shape, np.nan if np.dtype(dtype).kind == "f" else 0, dtype).view(
            FakeCupyArray
        )

    @staticmethod
    def empty_like(array: Any, dtype: Any = None) -> FakeCupyArray:
        return FakeCupy.empty(array.shape, dtype or array.dtype)

    @staticmethod
    def zeros(shape: Any, dtype: Any = np.float32) -> FakeCupyArray:
        return np.zeros(shape, dtype).view(FakeCupyArray)

    @staticmethod
    def ascontiguousarray(array: Any, dtype: Any = None) -> FakeCupyArray:
        return np.ascontiguousarray(array, dtype=dtype).view(FakeCupyArray)


@dataclass
class Signature:
    """A ``__global__`` function: its template parameters, its parameters' C types, and the
    element type its body reads from each ``TensorList`` row (``list_ptr<T>(list, row, t)``)."""

    template: list[str]
    parameters: list[str] = field(default_factory=list)
    list_rows: dict[int, str] = field(default_factory=dict)


def signatures(code: str) -> dict[str, Signature]:
    """Every ``__global__`` function of a kernel source, by name."""
    found = {}
    pattern = r"(?:template\s*<([^>]*)>\s*)?__global__\s+void\s+(\w+)\s*\((.*?)\)\s*\{"
    matches = list(re.finditer(pattern, code, re.S))
    for match, after in zip(matches, [*matches[1:], None]):
        template = [t.split()[-1] for t in (match.group(1) or "").split(",") if t.strip()]
        parameters = [" ".join(p.split()[:-1]) for p in match.group(3).split(",")]
        body = code[match.end() : after.start() if after else len(code)]
        rows = {int(r): t for t, r in re.findall(r"list_ptr<(\w+)>\(list, (\d+)", body)}
        found[match.group(2)] = Signature(template, parameters, rows)
    return found


def _instantiate(expression: str, signature: Signature) -> dict[str, str]:
    rest = expression.partition("<")[2]
    types = [t.strip() for t in rest.rstrip(">").split(",")] if rest else []
    if len(types) != len(signature.template):
        raise AssertionError(f"{expression}: template takes {signature.template}")
    return dict(zip(signature.template, types))


def _element(c_type: str, bound: dict[str, str]) -> Any:
    """numpy dtype of the element a pointer parameter points to."""
    base = c_type.replace("const", "").replace("*", "").strip()
    acc = re.fullmatch(r"typename Acc<(\w+)>::type", base)
    if acc:
        return np.float64 if bound[acc.group(1)] == "double" else np.float32
    return _ELEMENTS[bound.get(base, base)]


def check_launch(code: str, expression: str, args: tuple) -> None:
    """Raise AssertionError unless ``args`` match the parameters of kernel ``expression``."""
    name = expression.partition("<")[0]
    signature = signatures(code)[name]
    bound = _instantiate(expression, signature)
    if len(args) != len(signature.parameters):
        raise AssertionError(
            f"{expression}: {len(args)} arguments for {len(signature.parameters)} parameters"
        )
    for index, (c_type, arg) in enumerate(zip(signature.parameters, args)):
        where = f"{expression} argument {index} ({c_type})"
        if c_type.endswith("*"):
            if not isinstance(arg, FakeCupyArray):
                raise AssertionError(f"{where}: got {type(arg).__name__}, not a device array")
            if arg.dtype != _element(c_type, bound):
                raise AssertionError(f"{where}: got an array of {arg.dtype}")
        elif "TensorList" in c_type:
            _check_tensor_list(where, arg, signature.list_rows, bound)
        else:
            expected = _SCALARS[c_type.replace("const", "").strip()]
            if type(arg) is not expected:
                raise AssertionError(f"{where}: got {type(arg).__name__}, not {expected.__name__}")


def _check_tensor_list(where: str, struct: Any, rows: dict[int, str], bound: dict) -> None:
    if not isinstance(struct, np.ndarray) or struct.dtype != LIST_DTYPE or struct.size != 1:
        raise AssertionError(f"{where}: not a one-element LIST_DTYPE array")
    for row, pointers in enumerate(struct["ptr"][0]):
        if row not in rows:  # a row this kernel does not read (a struct shared by two)
            continue
        for ptr in pointers[pointers != 0]:
            element = _ELEMENTS[bound.get(rows[row], rows[row])]
            array = FakeCupyArray.registry.get(int(ptr))
            if array is None:
                raise AssertionError(f"{where}: pointer {int(ptr):#x} is no array the test made")
            if array.dtype != element:
                raise AssertionError(
                    f"{where}: row {row} holds an array of {array.dtype}, not {np.dtype(element)}"
                )
