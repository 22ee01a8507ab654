"""``dtrain.nn.modules.module``: ``Module`` at PyTorch's import path."""

from dtrain._tensor.nn.module import Module

__all__ = ["Module"]
