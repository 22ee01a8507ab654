"""PyTorch's legacy tensor types: ``dt.FloatTensor(2, 3)``, ``dt.LongTensor([1, 2])``.

Each is a type whose call makes an ordinary ``Tensor`` of its dtype (on the CPU), and
``isinstance(x, dt.FloatTensor)`` asks whether ``x`` is a CPU float32 tensor, as in
PyTorch. Nothing is an instance of these types in Python's own sense.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dtrain._tensor.size import Size
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.backend import is_cuda_array
from dtrain.runtime.dtypes import to_dtype


class LegacyTensorType(type):
    """The metaclass of ``FloatTensor`` and its kin."""

    dtype: np.dtype

    def __call__(cls, *args: Any, device: Any = None) -> Tensor:
        from dtrain._tensor.creation import tensor, zeros

        if len(args) == 1 and isinstance(args[0], Size):
            args = tuple(args[0])
        if not args or all(
            isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in args
        ):
            return zeros(*args if args else (0,), dtype=cls.dtype, device=device)
        if len(args) == 1 and isinstance(args[0], Tensor):
            data = args[0]
            if data.dtype != cls.dtype or data.device.type != "cpu":
                raise TypeError(
                    f"{cls.__name__}(data): the data is a {data.dtype} tensor on {data.device}, "
                    f"the type means CPU {cls.dtype}; convert it with "
                    f".to('cpu', dtrain.{cls.dtype.name}) (PyTorch refuses too)"
                )
            return data
        if len(args) == 1 and isinstance(args[0], tuple) and not isinstance(args[0], Size):
            raise TypeError(
                f"{cls.__name__}({args[0]!r}): ambiguous in dtrain, whose shapes are plain "
                f"tuples (PyTorch reads a torch.Size as sizes, a tuple as data); pass sizes "
                f"unpacked ({cls.__name__}(*x.shape)) or data as a list"
            )
        if len(args) == 1 and (
            isinstance(args[0], (list, range, np.ndarray)) or is_cuda_array(args[0])
        ):
            data = args[0]
            if is_cuda_array(data):
                data = data.get()  # the type means a CPU tensor
            return tensor(list(data) if isinstance(data, range) else data, dtype=cls.dtype)
        described = ", ".join(type(a).__name__ for a in args)
        raise TypeError(
            f"{cls.__name__}({described}): takes sizes ({cls.__name__}(2, 3)), a list of data "
            f"({cls.__name__}([1, 2])) or a tensor of its dtype; use dtrain.tensor(data, "
            "dtype=...) for anything else"
        )

    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, Tensor) and obj.dtype == cls.dtype and obj.device.type == "cpu"


def _legacy(name: str, dtype: Any) -> LegacyTensorType:
    doc = f"A CPU {np.dtype(dtype)} tensor: ``{name}(2, 3)`` (zeros) or ``{name}([...])``."
    return LegacyTensorType(name, (), {"dtype": to_dtype(dtype), "__doc__": doc})


FloatTensor = _legacy("FloatTensor", np.float32)
DoubleTensor = _legacy("DoubleTensor", np.float64)
HalfTensor = _legacy("HalfTensor", np.float16)
LongTensor = _legacy("LongTensor", np.int64)
IntTensor = _legacy("IntTensor", np.int32)
ShortTensor = _legacy("ShortTensor", np.int16)
CharTensor = _legacy("CharTensor", np.int8)
ByteTensor = _legacy("ByteTensor", np.uint8)
BoolTensor = _legacy("BoolTensor", np.bool_)

__all__ = [
    "BoolTensor",
    "ByteTensor",
    "CharTensor",
    "DoubleTensor",
    "FloatTensor",
    "HalfTensor",
    "IntTensor",
    "LegacyTensorType",
    "LongTensor",
    "ShortTensor",
]
