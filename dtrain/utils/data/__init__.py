"""``dtrain.utils.data``: datasets, samplers and the DataLoader, as ``torch.utils.data``.

Differences from PyTorch: ``num_workers > 0`` uses threads of this process, not worker
processes (an ``IterableDataset``'s workers share the one dataset object); ``pin_memory``
has no effect; random samplers draw from dtrain's generators, so a seed gives another order
than PyTorch's. Torch's submodules import too: ``.dataloader``, ``.dataset``, ``.sampler``,
``.distributed``.
``DistributedSampler`` (also ``dtrain.utils.data.distributed.DistributedSampler``) is
``dtrain.parallel.DistributedSampler``, imported on first use.
"""

from typing import Any

from dtrain._tensor.data import (
    BatchSampler,
    ChainDataset,
    ConcatDataset,
    DataLoader,
    Dataset,
    IterableDataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
    Subset,
    SubsetRandomSampler,
    TensorDataset,
    WeightedRandomSampler,
    WorkerInfo,
    default_collate,
    default_convert,
    get_worker_info,
    random_split,
)
from dtrain.utils.data import dataloader, dataset, sampler


def __getattr__(name: str) -> Any:
    # DistributedSampler (and its module) only when asked: it lives in dtrain.parallel,
    # whose import would otherwise come with every `import dtrain`.
    if name == "DistributedSampler":
        from dtrain.utils.data.distributed import DistributedSampler

        return DistributedSampler
    if name == "distributed":  # torch.utils.data.distributed without importing it first
        import dtrain.utils.data.distributed as distributed

        return distributed
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BatchSampler",
    "ChainDataset",
    "ConcatDataset",
    "DataLoader",
    "Dataset",
    "DistributedSampler",
    "IterableDataset",
    "RandomSampler",
    "Sampler",
    "SequentialSampler",
    "Subset",
    "SubsetRandomSampler",
    "TensorDataset",
    "WeightedRandomSampler",
    "WorkerInfo",
    "default_collate",
    "default_convert",
    "get_worker_info",
    "random_split",
    # submodules, as torch's paths
    "dataloader",
    "dataset",
    "sampler",
]
