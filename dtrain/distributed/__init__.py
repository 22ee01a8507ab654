"""``dtrain.distributed``: the same names as ``dtrain.parallel``, under torch's module name,
so ``import dtrain.distributed as dist`` (``import torch.distributed as dist`` ported) works,
plus torch's subpackage paths ``algorithms.join``, ``optim`` and ``fsdp``.

Every name here is the object in ``dtrain.parallel`` (its ``__all__``, so the two lists
cannot drift apart); ``docs/parallel.md`` describes them.
"""

from dtrain import parallel as _parallel
from dtrain.distributed import algorithms, fsdp, optim
from dtrain.parallel import *  # noqa: F403 - every public name of dtrain.parallel

__all__ = [*_parallel.__all__, "algorithms", "fsdp", "optim"]
