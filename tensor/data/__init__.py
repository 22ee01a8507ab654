"""Datasets, samplers, batching and the DataLoader (public as ``dtrain.utils.data``)."""

from dtrain._tensor.data.collate import default_collate, default_convert
from dtrain._tensor.data.dataloader import DataLoader
from dtrain._tensor.data.dataset import (
    ConcatDataset,
    Dataset,
    Subset,
    TensorDataset,
    random_split,
)
from dtrain._tensor.data.iterable import ChainDataset, IterableDataset
from dtrain._tensor.data.sampler import (
    BatchSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
)
from dtrain._tensor.data.worker import WorkerInfo, get_worker_info

__all__ = [
    "BatchSampler",
    "ChainDataset",
    "ConcatDataset",
    "DataLoader",
    "Dataset",
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
]
