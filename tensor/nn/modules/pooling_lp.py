"""``LPPool1d`` and ``LPPool2d``: power-average pooling layers."""

from __future__ import annotations

from typing import Any

from dtrain._tensor.nn.functional.pooling_lp import lp_pool1d, lp_pool2d
from dtrain._tensor.nn.module import Module
from dtrain._tensor.tensor import Tensor


class _LPPool(Module):
    def __init__(
        self, norm_type: float, kernel_size: Any, stride: Any = None, ceil_mode: bool = False
    ) -> None:
        super().__init__()
        self.norm_type, self.kernel_size = norm_type, kernel_size
        self.stride, self.ceil_mode = stride, ceil_mode

    def extra_repr(self) -> str:
        return (
            f"norm_type={self.norm_type}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, ceil_mode={self.ceil_mode}"
        )


class LPPool1d(_LPPool):
    """``(Σ_window x^p)^(1/p)`` over windows of ``(N, C, L)`` input."""

    def forward(self, input: Tensor) -> Tensor:
        return lp_pool1d(input, self.norm_type, self.kernel_size, self.stride, self.ceil_mode)


class LPPool2d(_LPPool):
    """``(Σ_window x^p)^(1/p)`` over windows of ``(N, C, H, W)`` input."""

    def forward(self, input: Tensor) -> Tensor:
        return lp_pool2d(input, self.norm_type, self.kernel_size, self.stride, self.ceil_mode)
