"""The Tensor and autograd core (imported as ``dtrain._tensor``; public names live in
``dtrain``)."""

from dtrain._tensor.float_warnings import silence_numpy_float_warnings
from dtrain._tensor.tensor import Tensor

silence_numpy_float_warnings()

__all__ = ["Tensor"]
