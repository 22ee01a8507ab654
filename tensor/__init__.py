"""The Tensor and autograd core (imported as ``dtrain._tensor``; public names live in
``dtrain``)."""

from dtrain._tensor.tensor import Tensor

__all__ = ["Tensor"]
