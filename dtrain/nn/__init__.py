"""``dtrain.nn``: parameters and (in later releases) modules and layers."""

from dtrain._tensor.parameter import Parameter
from dtrain.nn import functional

__all__ = ["Parameter", "functional"]
