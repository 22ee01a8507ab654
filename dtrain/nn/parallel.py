"""``dtrain.nn.parallel``: ``DistributedDataParallel`` at PyTorch's import path (it lives
in ``dtrain.parallel``)."""

from dtrain.parallel import DistributedDataParallel

__all__ = ["DistributedDataParallel"]
