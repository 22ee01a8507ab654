"""Map-style datasets: ``Dataset``, ``TensorDataset``, ``ConcatDataset``, ``Subset`` and
``random_split``, with ``torch.utils.data``'s names and semantics."""

from __future__ import annotations

import bisect
import itertools
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from dtrain._tensor.tensor import Tensor
from dtrain.runtime import random as _random
from dtrain.runtime.random import Generator


class Dataset:
    """A map-style dataset: ``dataset[i]`` gives sample ``i`` and ``len(dataset)`` the count.

    Subclasses define ``__getitem__`` and ``__len__``; ``a + b`` chains two datasets into a
    ``ConcatDataset``. A subclass may also define ``__getitems__(indices)`` returning the list
    of samples for a whole batch, which the ``DataLoader`` then calls once per batch.
    """

    def __getitem__(self, index: int) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__")

    def __add__(self, other: Dataset) -> ConcatDataset:
        return ConcatDataset([self, other])


class TensorDataset(Dataset):
    """Samples are the rows of tensors that share their first dim: ``dataset[i]`` is
    ``(t[i] for t in tensors)`` as a tuple.

    Args:
        *tensors: tensors with equal sizes in dim 0.

    Raises:
        ValueError: when the first dims differ or a tensor is 0-d.
        TypeError: when an argument is not a Tensor.
    """

    def __init__(self, *tensors: Tensor) -> None:
        for i, t in enumerate(tensors):
            if not isinstance(t, Tensor):
                raise TypeError(
                    f"TensorDataset: argument {i} is a {type(t).__name__}, not a Tensor; "
                    "wrap it with dtrain.tensor(...) or dtrain.from_numpy(...)"
                )
            if t.ndim == 0:
                raise ValueError(
                    f"TensorDataset: tensor {i} is 0-d; every tensor needs a first dim to index"
                )
        sizes = [t.shape[0] for t in tensors]
        if len(set(sizes)) > 1:
            raise ValueError(
                f"TensorDataset: size mismatch between tensors: first dims are {sizes}; every "
                "tensor must have the same number of rows"
            )
        self.tensors = tuple(tensors)

    def __getitem__(self, index: Any) -> tuple:
        return tuple(t[index] for t in self.tensors)

    def __len__(self) -> int:
        return self.tensors[0].shape[0] if self.tensors else 0


class ConcatDataset(Dataset):
    """Several datasets one after another, as one dataset.

    Args:
        datasets: map-style datasets (each with ``__len__``).
    """

    def __init__(self, datasets: Sequence[Dataset]) -> None:
        self.datasets = list(datasets)
        if not self.datasets:
            raise ValueError("ConcatDataset: datasets should not be an empty iterable")
        self.cumulative_sizes = list(itertools.accumulate(len(d) for d in self.datasets))

    def __len__(self) -> int:
        return self.cumulative_sizes[-1]

    def __getitem__(self, index: int) -> Any:
        if index < 0:
            if -index > len(self):
                raise IndexError(f"index {index} is out of range for a dataset of {len(self)}")
            index += len(self)
        which = bisect.bisect_right(self.cumulative_sizes, index)
        if which == len(self.datasets):
            raise IndexError(f"index {index} is out of range for a dataset of {len(self)}")
        start = self.cumulative_sizes[which - 1] if which else 0
        return self.datasets[which][index - start]


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices``, in that order.

    Args:
        dataset: the whole dataset.
        indices: positions in ``dataset``; ``subset[i]`` is ``dataset[indices[i]]``.
    """

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = indices
        # The DataLoader fetches a batch with __getitems__, which reads the dataset
        # directly: a subclass's own __getitem__ alone would be skipped (PyTorch refuses it).
        cls = type(self)
        if cls.__getitem__ is not Subset.__getitem__ and cls.__getitems__ is Subset.__getitems__:
            raise NotImplementedError(
                f"{cls.__name__} overrides Subset.__getitem__ but not __getitems__, which "
                "the DataLoader calls for a batch; define __getitems__(self, indices) too "
                "(e.g. return [self[i] for i in indices])"
            )

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, list):
            return self.dataset[[self.indices[i] for i in index]]
        return self.dataset[self.indices[index]]

    def __getitems__(self, indices: list) -> list:
        inner = [self.indices[i] for i in indices]
        if hasattr(self.dataset, "__getitems__"):
            return self.dataset.__getitems__(inner)
        return [self.dataset[i] for i in inner]

    def __len__(self) -> int:
        return len(self.indices)


def numpy_rng(generator: Generator | None) -> np.random.Generator:
    """The numpy stream behind ``generator`` (the default generator when None), read at
    each draw so that ``dtrain.manual_seed`` takes effect."""
    if generator is None:
        return _random.default_generator.numpy
    if not isinstance(generator, Generator):
        raise TypeError(
            f"generator must be a dtrain.Generator or None, got {type(generator).__name__}; "
            "make one with dtrain.Generator().manual_seed(seed)"
        )
    return generator.numpy


def random_split(
    dataset: Dataset, lengths: Sequence[int | float], generator: Generator | None = None
) -> list[Subset]:
    """Split ``dataset`` at random into non-overlapping ``Subset``s of the given lengths.

    Args:
        dataset: the dataset to split.
        lengths: the sizes, or fractions that add up to 1 (``[0.8, 0.2]``); fractions are
            floored and the remainder handed out one sample at a time from the first split,
            as PyTorch does.
        generator: the random stream; the default generator when None.

    Returns:
        One ``Subset`` per length.

    Raises:
        ValueError: when the lengths do not add up to ``len(dataset)``.
    """
    n = len(dataset)
    lengths = list(lengths)
    if lengths and math.isclose(sum(lengths), 1) and sum(lengths) <= 1:
        for i, frac in enumerate(lengths):
            if not 0 <= frac <= 1:
                raise ValueError(f"random_split: fraction at index {i} is {frac}, not in [0, 1]")
        sizes = [math.floor(n * frac) for frac in lengths]
        for i in range(n - sum(sizes)):
            sizes[i % len(sizes)] += 1
        for i, size in enumerate(sizes):
            if size == 0:
                warnings.warn(
                    f"random_split: length of split at index {i} is 0; this split is empty",
                    stacklevel=2,
                )
        lengths = sizes
    for i, length in enumerate(lengths):
        if not isinstance(length, (int, np.integer)) or isinstance(length, bool) or length < 0:
            raise ValueError(
                f"random_split: lengths must be non-negative ints or fractions adding up to 1, "
                f"got {lengths[i]!r} at index {i}"
            )
    if sum(lengths) != n:
        raise ValueError(
            f"random_split: lengths {lengths} add up to {sum(lengths)} but the dataset has {n} "
            "samples; pass lengths that add up to len(dataset) or fractions that add up to 1"
        )
    order = numpy_rng(generator).permutation(n).tolist()
    ends = itertools.accumulate(lengths)
    return [Subset(dataset, order[end - length : end]) for end, length in zip(ends, lengths)]


__all__ = ["ConcatDataset", "Dataset", "Subset", "TensorDataset", "random_split"]
