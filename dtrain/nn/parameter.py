"""``dtrain.nn.parameter``: ``Parameter``."""

from dtrain._tensor.parameter import Parameter

__all__ = ["Parameter"]
