"""``dtrain.utils.data``: datasets, samplers and the DataLoader, as ``torch.utils.data``.

Differences from PyTorch: ``num_workers > 0`` uses threads of this process, not worker
processes; iterable-style datasets are not supported; ``pin_memory`` has no effect; random
samplers draw from dtrain's generators, so a seed gives another order than PyTorch's.
``DistributedSampler`` (also ``dtrain.utils.data.distributed.DistributedSampler``) is
``dtrain.parallel.DistributedSampler``, imported on first use.
"""

from typing import Any

from dtrain._tensor.data import (
    BatchSampler,
    ConcatDataset,
    DataLoader,
    Dataset,
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


def __getattr__(name: str) -> Any:
    # Only DistributedSampler, and only when asked: it lives in dtrain.parallel, whose
    # import would otherwise come with every `import dtrain`.
    if name == "DistributedSampler":
        from dtrain.utils.data.distributed import DistributedSampler

        return DistributedSampler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BatchSampler",
    "ConcatDataset",
    "DataLoader",
    "Dataset",
    "DistributedSampler",
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
]
