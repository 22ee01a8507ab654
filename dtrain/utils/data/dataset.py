"""``dtrain.utils.data.dataset``: the datasets, as ``torch.utils.data.dataset``."""

from dtrain._tensor.data.dataset import ConcatDataset, Dataset, Subset, TensorDataset, random_split
from dtrain._tensor.data.iterable import ChainDataset, IterableDataset

__all__ = [
    "ChainDataset",
    "ConcatDataset",
    "Dataset",
    "IterableDataset",
    "Subset",
    "TensorDataset",
    "random_split",
]
