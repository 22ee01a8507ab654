"""``dtrain.utils.data``: datasets, samplers and the DataLoader, as ``torch.utils.data``.

Differences from PyTorch: ``num_workers > 0`` uses threads of this process, not worker
processes; iterable-style datasets are not supported; ``pin_memory`` has no effect.
"""

from dtrain._tensor.data import (
    BatchSampler,
    ConcatDataset,
    DataLoader,
    Dataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
    Subset,
    TensorDataset,
    WorkerInfo,
    default_collate,
    default_convert,
    get_worker_info,
    random_split,
)

__all__ = [
    "BatchSampler",
    "ConcatDataset",
    "DataLoader",
    "Dataset",
    "RandomSampler",
    "Sampler",
    "SequentialSampler",
    "Subset",
    "TensorDataset",
    "WorkerInfo",
    "default_collate",
    "default_convert",
    "get_worker_info",
    "random_split",
]
