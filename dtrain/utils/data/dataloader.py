"""``dtrain.utils.data.dataloader``: ``DataLoader`` and its collate functions, as
``torch.utils.data.dataloader``."""

from dtrain._tensor.data.collate import default_collate, default_convert
from dtrain._tensor.data.dataloader import DataLoader
from dtrain._tensor.data.worker import get_worker_info

__all__ = ["DataLoader", "default_collate", "default_convert", "get_worker_info"]
