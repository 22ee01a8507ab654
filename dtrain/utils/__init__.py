"""``dtrain.utils``: helpers around training (``dtrain.utils.data``: datasets and loaders)."""

from dtrain.utils import data

__all__ = ["data"]
