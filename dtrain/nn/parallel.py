"""``dtrain.nn.parallel``: ``DistributedDataParallel`` at PyTorch's import path (it lives
in ``dtrain.parallel``) and ``DataParallel`` (a plain wrapper: one device per process)."""

from dtrain._tensor.nn.modules.data_parallel import DataParallel
from dtrain.parallel import DistributedDataParallel

__all__ = ["DataParallel", "DistributedDataParallel"]
