"""``dtrain.distributed.optim``: torch.distributed.optim's names (``ZeroRedundancyOptimizer``),
the objects in ``dtrain.parallel``."""

from dtrain.parallel import ZeroRedundancyOptimizer

__all__ = ["ZeroRedundancyOptimizer"]
