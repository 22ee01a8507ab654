"""The Python protocol of ``Tensor`` (repr, format, len, iteration, truth, numbers, indexing,
deepcopy) and its ways out to Python and other array libraries: ``numpy()``, ``__array__``,
``item()``, ``tolist()`` and DLPack.

``TensorProtocol`` is mixed into ``Tensor``; ``tensor.py`` binds ``dtrain._tensor.functions``
and the ``dlpack`` module here once every op module has loaded (both import ``Tensor``, so
this module cannot import them first).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from dtrain.runtime.device import as_numpy

if TYPE_CHECKING:
    from dtrain._tensor.tensor import Tensor

_fn: Any = None
_dlpack: Any = None
_new = object.__new__


def bind(functions: Any, dlpack: Any) -> None:
    """Point the methods at ``dtrain._tensor.functions`` and ``dtrain._tensor.dlpack``
    (called once, by tensor.py)."""
    global _fn, _dlpack
    _fn, _dlpack = functions, dlpack


class TensorProtocol:
    """Mixed into ``Tensor``: the Python protocol and the conversions out of dtrain."""

    __slots__ = ()

    def numpy(self) -> np.ndarray:
        """The data as a numpy array, sharing memory on the CPU."""
        if self._requires_grad:
            raise RuntimeError(
                "numpy() on a tensor that requires grad would leave the graph silently; "
                "call .detach().numpy() instead"
            )
        if self.device.type != "cpu":
            raise TypeError(
                f"numpy() needs a CPU tensor, this one is on {self.device}; call .cpu() first"
            )
        return self._array

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        array = as_numpy(self.detach()._array)
        return array if dtype is None else array.astype(dtype, copy=False)

    def item(self) -> Any:
        """The value of a one-element tensor as a Python number."""
        if self._array.size != 1:
            raise ValueError(
                f"item() needs a tensor with one element, this one has shape {self.shape}; "
                "index or reduce it first"
            )
        return self._array.item() if self._array.ndim == 0 else self._array.reshape(()).item()

    def tolist(self) -> Any:
        """The data as (nested) Python lists."""
        return as_numpy(self._array).tolist()

    def __dlpack__(
        self,
        stream: Any = None,
        *,
        max_version: tuple[int, int] | None = None,
        dl_device: tuple[int, int] | None = None,
        copy: bool | None = None,
    ) -> Any:
        """A DLPack capsule of this tensor's memory (no copy), for ``from_dlpack`` elsewhere.
        A tensor that requires grad refuses (BufferError), as in PyTorch: export
        ``detach()``."""
        return _dlpack.export(self, stream, max_version, dl_device, copy)

    def __dlpack_device__(self) -> tuple[int, int]:
        """``(device_type, device_id)`` in DLPack codes: ``(1, 0)`` CPU, ``(2, N)`` cuda:N."""
        return _dlpack.device(self)

    def __repr__(self) -> str:
        return _fn.format_tensor(self)

    def share_memory_(self) -> Tensor:
        """Not offered: dtrain tensors cannot be shared between processes (Hogwild).

        Raises:
            NotImplementedError: always, naming the alternative.
        """
        raise NotImplementedError(
            "share_memory_: dtrain cannot share tensors between processes (Hogwild); train "
            "one process per rank with dtrain.parallel.DistributedDataParallel "
            "(dtrain.multiprocessing.spawn or dtrain launch starts them)"
        )

    def __deepcopy__(self, memo: dict) -> Tensor:
        """A leaf with a copy of the data (and of ``.grad``), the same class and
        ``requires_grad``, and none of the hooks, as PyTorch's (so a copied model carries
        no DistributedDataParallel hooks). Only leaves can be copied, as in PyTorch."""
        if self.grad_fn is not None:
            raise RuntimeError(
                "deepcopy: only tensors created by the user (graph leaves) can be deep-copied, "
                "as in PyTorch; copy t.detach() (or t.clone() for a differentiable copy)"
            )
        copied = _new(type(self))
        memo[id(self)] = copied
        copied._array = self._array.copy()
        copied.grad = None if self.grad is None else copy.deepcopy(self.grad, memo)
        copied.grad_fn = None
        copied._requires_grad = self._requires_grad
        copied._version = [0]
        copied._base = None
        copied._hooks = None
        return copied

    def __format__(self, spec: str) -> str:
        # As PyTorch: a 0-d tensor formats as its Python number (f"{loss:.4f}"); any other
        # tensor as its repr, and a format spec for it is a TypeError.
        if self._array.ndim == 0:
            return self.item().__format__(spec)
        return object.__format__(self, spec)

    def __len__(self) -> int:
        if self._array.ndim == 0:
            raise TypeError("len() of a 0-d tensor; use .item() or .numel()")
        return self._array.shape[0]

    def __iter__(self) -> Iterator[Tensor]:
        if self._array.ndim == 0:
            raise TypeError("iteration over a 0-d tensor; use .item()")
        return (self[i] for i in range(self._array.shape[0]))

    def __bool__(self) -> bool:
        if self._array.size != 1:
            raise RuntimeError(
                f"the truth value of a tensor with {self._array.size} elements is ambiguous; "
                "use .any() or .all()"
            )
        return bool(self._array.reshape(()))

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __index__(self) -> int:
        if self._array.dtype.kind not in "iu" or self._array.size != 1:
            raise TypeError("only one-element integer tensors can be used as an index")
        return int(self.item())

    def __getitem__(self, key: Any) -> Tensor:
        return _fn.getitem(self, key)

    def __setitem__(self, key: Any, value: Any) -> None:
        _fn.setitem(self, key, value)
