"""More activation modules: SELU, CELU, Softsign, Softshrink, Hardshrink, Tanhshrink,
Threshold, RReLU, Softmax2d, and the dropouts AlphaDropout, FeatureAlphaDropout, Dropout3d.

``inplace=True`` is accepted for PyTorch compatibility and computes out of place."""

from __future__ import annotations

from dtrain._tensor.functions import softmax
from dtrain._tensor.nn.functional import activation_extra as _f
from dtrain._tensor.nn.module import Module
from dtrain._tensor.nn.modules.activation import _Inplace
from dtrain._tensor.nn.modules.sparse import Dropout
from dtrain._tensor.tensor import Tensor


def _inplace_suffix(inplace: bool) -> str:
    return ", inplace=True" if inplace else ""


class SELU(_Inplace):
    """``scale * elu(x, alpha)`` with SELU's fixed constants."""

    def forward(self, input: Tensor) -> Tensor:
        return _f.selu(input)


class CELU(_Inplace):
    """``max(0, x) + min(0, alpha * (exp(x / alpha) - 1))``."""

    def __init__(self, alpha: float = 1.0, inplace: bool = False) -> None:
        super().__init__(inplace)
        self.alpha = alpha

    def forward(self, input: Tensor) -> Tensor:
        return _f.celu(input, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}" + _inplace_suffix(self.inplace)


class Softsign(Module):
    """``x / (1 + |x|)``."""

    def forward(self, input: Tensor) -> Tensor:
        return _f.softsign(input)


class Tanhshrink(Module):
    """``x - tanh(x)``."""

    def forward(self, input: Tensor) -> Tensor:
        return _f.tanhshrink(input)


class _Shrink(Module):
    """Shared by Softshrink and Hardshrink (neither is a subclass of the other, as PyTorch)."""

    def __init__(self, lambd: float = 0.5) -> None:
        super().__init__()
        self.lambd = lambd

    def extra_repr(self) -> str:
        return str(self.lambd)


class Softshrink(_Shrink):
    """``x -+ lambd`` outside ``[-lambd, lambd]``, else 0."""

    def forward(self, input: Tensor) -> Tensor:
        return _f.softshrink(input, self.lambd)


class Hardshrink(_Shrink):
    """``x`` outside ``[-lambd, lambd]``, else 0."""

    def forward(self, input: Tensor) -> Tensor:
        return _f.hardshrink(input, self.lambd)


class Threshold(_Inplace):
    """``x`` where ``x > threshold``, else ``value``."""

    def __init__(self, threshold: float, value: float, inplace: bool = False) -> None:
        super().__init__(inplace)
        self.threshold, self.value = threshold, value

    def forward(self, input: Tensor) -> Tensor:
        return _f.threshold(input, self.threshold, self.value)

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}, value={self.value}" + _inplace_suffix(self.inplace)


class RReLU(_Inplace):
    """Randomised leaky ReLU: a random slope in ``[lower, upper]`` per negative element in
    training mode, the mean slope ``(lower + upper) / 2`` in eval mode."""

    def __init__(
        self, lower: float = 1.0 / 8, upper: float = 1.0 / 3, inplace: bool = False
    ) -> None:
        super().__init__(inplace)
        self.lower, self.upper = lower, upper

    def forward(self, input: Tensor) -> Tensor:
        return _f.rrelu(input, self.lower, self.upper, self.training)

    def extra_repr(self) -> str:
        return f"lower={self.lower}, upper={self.upper}" + _inplace_suffix(self.inplace)


class Softmax2d(Module):
    """Softmax over the channels (dim -3) of ``(N, C, H, W)`` or ``(C, H, W)`` input."""

    def forward(self, input: Tensor) -> Tensor:
        if input.ndim not in (3, 4):
            raise ValueError(
                f"Softmax2d: expected input of 3 or 4 dimensions (C, H, W) or (N, C, H, W), "
                f"got shape {tuple(input.shape)}"
            )
        return softmax(input, -3)


class AlphaDropout(Dropout):
    """Alpha dropout (keeps SELU's self-normalisation) in training mode; identity in eval."""

    def forward(self, input: Tensor) -> Tensor:
        return _f.alpha_dropout(input, self.p, self.training)


class FeatureAlphaDropout(Dropout):
    """Alpha dropout of whole channels in training mode; identity in eval."""

    def forward(self, input: Tensor) -> Tensor:
        return _f.feature_alpha_dropout(input, self.p, self.training)


class Dropout3d(Dropout):
    """Zero whole channels of ``(N, C, D, H, W)`` input with probability ``p`` in training."""

    def forward(self, input: Tensor) -> Tensor:
        return _f.dropout3d(input, self.p, self.training)
