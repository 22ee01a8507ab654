"""``dtrain.distributed.algorithms``: torch's module path for ``Join`` (``.join``)."""

from dtrain.distributed.algorithms import join

__all__ = ["join"]
