"""3-D pooling layers (``MaxPool3d``, ``AvgPool3d``, ``AdaptiveAvgPool3d``,
``AdaptiveMaxPool3d``) and the unpooling layers ``MaxUnpool1d/2d/3d``."""

from __future__ import annotations

from typing import Any

from dtrain._tensor.nn.functional.pooling3d import (
    adaptive_avg_pool3d,
    adaptive_max_pool3d,
    avg_pool3d,
    max_pool3d,
)
from dtrain._tensor.nn.functional.unpool import max_unpool1d, max_unpool2d, max_unpool3d
from dtrain._tensor.nn.module import Module
from dtrain._tensor.nn.modules.pooling import (
    AdaptiveAvgPool2d,
    AdaptiveMaxPool2d,
    AvgPool2d,
    _MaxPoolNd,
)
from dtrain._tensor.tensor import Tensor


class MaxPool3d(_MaxPoolNd):
    """3-D max pooling; see ``functional.max_pool3d`` (``stride`` defaults to the kernel)."""

    _pool = staticmethod(max_pool3d)


class AvgPool3d(AvgPool2d):
    """3-D average pooling; see ``functional.avg_pool3d`` (``stride`` defaults to the kernel)."""

    _pool = staticmethod(avg_pool3d)


class AdaptiveAvgPool3d(AdaptiveAvgPool2d):
    """Average pooling to a fixed ``output_size`` (an int or a 3-tuple, None keeps)."""

    def forward(self, input: Tensor) -> Tensor:
        return adaptive_avg_pool3d(input, self.output_size)


class AdaptiveMaxPool3d(AdaptiveMaxPool2d):
    """Max pooling to a fixed ``output_size`` (an int or a 3-tuple, None keeps); with
    ``return_indices``, also the flat in-volume index of each maximum."""

    def forward(self, input: Tensor) -> Any:
        return adaptive_max_pool3d(input, self.output_size, self.return_indices)


class MaxUnpool2d(Module):
    """Inverse of ``MaxPool2d``: ``forward(input, indices, output_size=None)`` puts each
    value back at its index, zeros elsewhere; see ``functional.max_unpool2d``."""

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding

    _unpool = staticmethod(max_unpool2d)

    def forward(self, input: Tensor, indices: Tensor, output_size: Any = None) -> Tensor:
        return type(self)._unpool(
            input, indices, self.kernel_size, self.stride, self.padding, output_size
        )

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxUnpool1d(MaxUnpool2d):
    """Inverse of ``MaxPool1d``; see ``functional.max_unpool1d``."""

    _unpool = staticmethod(max_unpool1d)


class MaxUnpool3d(MaxUnpool2d):
    """Inverse of ``MaxPool3d``; see ``functional.max_unpool3d``."""

    _unpool = staticmethod(max_unpool3d)
