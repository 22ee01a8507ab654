"""``dtrain.utils``: helpers around training (``dtrain.utils.data``: datasets and loaders;
``dtrain.utils.checkpoint``: activation checkpointing; ``dtrain.utils.dlpack``: DLPack
capsules)."""

from dtrain.utils import checkpoint, data, dlpack

__all__ = ["checkpoint", "data", "dlpack"]
