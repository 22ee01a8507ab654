"""The ``new_*``, dtype-conversion and legacy-name methods of ``Tensor``.

The ``new_*`` methods call the creation functions of ``dtrain._tensor.functions``, which
``methods.bind`` sets as ``_fn`` here once every op module has loaded; the casts go
through ``Tensor.to``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from dtrain._tensor.tensor import Tensor

_fn: Any = None


class ConversionMethods:
    """Mixed into ``Tensor`` through ``TensorMethods``: new tensors like this one, dtype
    conversions and PyTorch's legacy names."""

    __slots__ = ()

    def new_tensor(self, data: Any, dtype: Any = None, device: Any = None, **kw: Any) -> Tensor:
        """A copy of ``data`` with this tensor's dtype and device unless told otherwise."""
        return _fn.tensor(data, **self._like(dtype, device), **kw)

    def new(self, *args: Any) -> Tensor:
        """Legacy: ``x.new(2, 3)`` a new tensor of those sizes (zeros; PyTorch leaves it
        uninitialised), ``x.new(dt.Size([2, 3]))`` too, ``x.new([1, 2])`` data, ``x.new()``
        empty — with ``x``'s dtype and device. A plain tuple is refused: PyTorch reads it
        as data, but ``x.new(y.shape)`` (a torch.Size there, a tuple here) as sizes."""
        from dtrain._tensor.size import Size

        if len(args) == 1 and isinstance(args[0], Size):
            args = tuple(args[0])
        if not args or all(
            isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in args
        ):
            return _fn.zeros(*args if args else (0,), dtype=self.dtype, device=self.device)
        if len(args) == 1 and isinstance(args[0], tuple):
            raise TypeError(
                f"new({args[0]!r}): ambiguous in dtrain, whose shapes are plain tuples "
                "(PyTorch reads a torch.Size as sizes, a tuple as data); use "
                "x.new_zeros(shape) / x.new_empty(shape) for sizes, x.new_tensor(data) or a "
                "list for data"
            )
        if len(args) == 1:
            return _fn.tensor(args[0], dtype=self.dtype, device=self.device)
        raise TypeError(
            f"new({', '.join(type(a).__name__ for a in args)}): takes sizes (x.new(2, 3)) or "
            "data (x.new([1, 2])); prefer x.new_zeros / x.new_tensor"
        )

    def new_zeros(self, *size: Any, dtype: Any = None, device: Any = None, **kw: Any) -> Tensor:
        """Zeros of ``size``, with this tensor's dtype and device unless told otherwise."""
        return _fn.zeros(*size, **self._like(dtype, device), **kw)

    def new_ones(self, *size: Any, dtype: Any = None, device: Any = None, **kw: Any) -> Tensor:
        """Ones of ``size``, with this tensor's dtype and device unless told otherwise."""
        return _fn.ones(*size, **self._like(dtype, device), **kw)

    def new_empty(self, *size: Any, dtype: Any = None, device: Any = None, **kw: Any) -> Tensor:
        """Uninitialised ``size``, with this tensor's dtype and device unless told otherwise."""
        return _fn.empty(*size, **self._like(dtype, device), **kw)

    def new_full(
        self, size: Any, fill_value: Any, dtype: Any = None, device: Any = None, **kw: Any
    ) -> Tensor:
        """``fill_value`` in ``size``, with this tensor's dtype and device unless told
        otherwise."""
        return _fn.full(size, fill_value, **self._like(dtype, device), **kw)

    def _like(self, dtype: Any, device: Any) -> dict:
        return {
            "dtype": self.dtype if dtype is None else dtype,
            "device": self.device if device is None else device,
        }

    def type(self, dtype: Any = None, non_blocking: bool = False) -> Any:
        """Without ``dtype``, the type's name ('dtrain.FloatTensor', as PyTorch's
        'torch.FloatTensor'); with one (a dtype, or such a name), a cast to it."""
        if dtype is None:
            prefix = "dtrain.cuda." if self.device.type == "cuda" else "dtrain."
            return prefix + _TYPE_NAMES[self.dtype]
        if isinstance(dtype, str) and dtype.split(".")[-1] in _TYPE_DTYPES:
            dtype = _TYPE_DTYPES[dtype.split(".")[-1]]
        return self.to(dtype)

    def nelement(self) -> int:
        return self.numel()

    def ndimension(self) -> int:
        return self.ndim

    def byte(self) -> Tensor:
        """Cast to uint8."""
        return self.to("uint8")

    def char(self) -> Tensor:
        """Cast to int8."""
        return self.to("int8")

    def short(self) -> Tensor:
        """Cast to int16."""
        return self.to("int16")

    def pin_memory(self) -> Tensor:
        """This tensor: host memory is not pinned in dtrain (a CPU copy to a GPU is made
        the same way either way)."""
        return self


_TYPE_NAMES = {
    np.dtype(np.float16): "HalfTensor",
    np.dtype(np.float32): "FloatTensor",
    np.dtype(np.float64): "DoubleTensor",
    np.dtype(np.uint8): "ByteTensor",
    np.dtype(np.int8): "CharTensor",
    np.dtype(np.int16): "ShortTensor",
    np.dtype(np.int32): "IntTensor",
    np.dtype(np.int64): "LongTensor",
    np.dtype(np.bool_): "BoolTensor",
}
_TYPE_DTYPES = {name: dtype for dtype, name in _TYPE_NAMES.items()}
