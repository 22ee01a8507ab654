"""``dtrain.utils``: helpers around training (``dtrain.utils.data``: datasets and loaders;
``dtrain.utils.dlpack``: DLPack capsules)."""

from dtrain.utils import data, dlpack

__all__ = ["data", "dlpack"]
