"""``dtrain.utils.data.distributed``: ``DistributedSampler``, as
``torch.utils.data.distributed`` (it is ``dtrain.parallel.DistributedSampler``)."""

from dtrain.parallel.sampler import DistributedSampler

__all__ = ["DistributedSampler"]
