"""Samplers: the order in which a ``DataLoader`` visits a dataset's indices.

Any iterable of indices with ``__len__`` works as a sampler (``DistributedSampler`` is one);
the classes here are PyTorch's ``Sampler``, ``SequentialSampler``, ``RandomSampler``,
``SubsetRandomSampler``, ``WeightedRandomSampler`` and ``BatchSampler``. Random draws come
from the sampler's ``generator`` or, when it is None, from the default generator at the
moment iteration starts, so ``dtrain.manual_seed(s)`` makes the order reproducible. The
draws are dtrain's (numpy's streams): the same seed gives another order than PyTorch's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence, Sized
from typing import Any

import numpy as np

from dtrain._tensor.data.dataset import numpy_rng
from dtrain._tensor.tensor import Tensor
from dtrain.runtime.random import Generator

_CHUNK = 4096  # indices drawn at a time by RandomSampler(replacement=True)


class Sampler:
    """Base class: a subclass yields indices from ``__iter__`` and says how many in
    ``__len__``."""

    def __init__(self, data_source: Sized | None = None) -> None:
        pass

    def __iter__(self) -> Iterator[Any]:
        raise NotImplementedError(f"{type(self).__name__} must define __iter__")


class SequentialSampler(Sampler):
    """``0, 1, …, len(data_source) - 1`` in order."""

    def __init__(self, data_source: Sized) -> None:
        self.data_source = data_source

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self.data_source)))

    def __len__(self) -> int:
        return len(self.data_source)


class RandomSampler(Sampler):
    """Indices in random order: a fresh permutation each epoch, or draws with replacement.

    Args:
        data_source: the dataset (only its length is used).
        replacement: draw ``num_samples`` indices independently when True (lazily, a
            few thousand at a time, so ``num_samples`` may be huge).
        num_samples: how many indices per epoch; ``len(data_source)`` by default. Without
            replacement a value above the length chains whole permutations, as in PyTorch.
        generator: the random stream; the default generator when None.
    """

    def __init__(
        self,
        data_source: Sized,
        replacement: bool = False,
        num_samples: int | None = None,
        generator: Generator | None = None,
    ) -> None:
        if not isinstance(replacement, bool):
            raise TypeError(f"RandomSampler: replacement must be a bool, got {replacement!r}")
        self.data_source = data_source
        self.replacement = replacement
        self._num_samples = num_samples
        self.generator = generator
        numpy_rng(generator)  # refuses a wrong generator type now, not at the first epoch
        n = self.num_samples
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n <= 0:
            raise ValueError(
                f"RandomSampler: num_samples should be a positive integer, got {n!r}"
                + (" (the dataset is empty)" if num_samples is None else "")
            )

    @property
    def num_samples(self) -> int:
        """Indices per epoch."""
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def __iter__(self) -> Iterator[int]:
        n = len(self.data_source)
        rng = numpy_rng(self.generator)
        if self.replacement:
            # Lazily, a chunk at a time (num_samples may be 1e10, an "infinite" sampler),
            # from a stream seeded by one draw of the generator at the start of each epoch
            # (as PyTorch), so the indices do not depend on what else draws meanwhile.
            stream = np.random.Generator(np.random.PCG64(int(rng.integers(0, 2**63))))
            left = self.num_samples
            while left > 0:
                chunk = min(left, _CHUNK)
                yield from stream.integers(0, n, size=chunk).tolist()
                left -= chunk
            return
        whole, rest = divmod(self.num_samples, n)
        for _ in range(whole):
            yield from rng.permutation(n).tolist()
        if rest:
            yield from rng.permutation(n)[:rest].tolist()

    def __len__(self) -> int:
        return self.num_samples


class SubsetRandomSampler(Sampler):
    """The given indices, in a fresh random order each epoch (without replacement).

    Args:
        indices: the indices to visit (any sequence, e.g. a list or a range).
        generator: the random stream; the default generator when None.
    """

    def __init__(self, indices: Sequence[int], generator: Generator | None = None) -> None:
        self.indices = indices
        self.generator = generator
        numpy_rng(generator)  # refuses a wrong generator type now, not at the first epoch

    def __iter__(self) -> Iterator[Any]:
        for i in numpy_rng(self.generator).permutation(len(self.indices)).tolist():
            yield self.indices[i]

    def __len__(self) -> int:
        return len(self.indices)


class WeightedRandomSampler(Sampler):
    """``num_samples`` indices in ``[0, len(weights))``, each drawn with probability
    proportional to its weight (the weights need not sum to 1).

    Args:
        weights: one non-negative weight per index (a sequence, array or 1-d tensor).
        num_samples: how many indices per epoch.
        replacement: draw independently (True), or each index at most once (False; once
            the indices of non-zero weight are used up, zero-weight ones follow in index
            order; PyTorch's order for them differs).
        generator: the random stream; the default generator when None.

    Raises:
        ValueError: ``num_samples`` is not a positive integer (or, without replacement,
            exceeds the number of weights); the weights are not 1-d, are negative, not
            finite, or all 0.
        TypeError: ``replacement`` is not a bool.
    """

    def __init__(
        self,
        weights: Sequence[float] | Any,
        num_samples: int,
        replacement: bool = True,
        generator: Generator | None = None,
    ) -> None:
        if not isinstance(num_samples, (int, np.integer)) or isinstance(num_samples, bool):
            raise ValueError(
                f"num_samples should be a positive integer value, but got "
                f"num_samples={num_samples!r}"
            )
        if num_samples <= 0:
            raise ValueError(
                f"num_samples should be a positive integer value, but got num_samples={num_samples}"
            )
        if not isinstance(replacement, bool):
            raise TypeError(
                f"replacement should be a boolean value, but got replacement={replacement!r}"
            )
        if isinstance(weights, Tensor):
            weights = weights.detach().cpu().numpy()
        weights = np.asarray(weights, dtype=np.float64)
        if weights.ndim != 1:
            raise ValueError(
                "weights should be a 1d sequence but given weights have shape "
                f"{tuple(weights.shape)}"
            )
        if not np.isfinite(weights).all() or (weights < 0).any():
            raise ValueError(
                "invalid weights: every weight must be finite and >= 0 (entry "
                f"{int(np.flatnonzero(~(np.isfinite(weights) & (weights >= 0)))[0])} is not)"
            )
        if not weights.sum() > 0:
            raise ValueError("invalid weights: they sum to 0; give some index a positive weight")
        if not replacement and num_samples > weights.size:
            raise ValueError(
                f"cannot draw num_samples={num_samples} indices without replacement from "
                f"{weights.size} weights; pass replacement=True or fewer samples"
            )
        numpy_rng(generator)  # refuses a wrong generator type now, not at the first epoch
        self.weights = weights
        self.num_samples = int(num_samples)
        self.replacement = replacement
        self.generator = generator

    def __iter__(self) -> Iterator[int]:
        rng = numpy_rng(self.generator)
        weights = self.weights
        if self.replacement:
            chosen = rng.choice(weights.size, self.num_samples, p=weights / weights.sum())
        else:
            # Efraimidis-Spirakis: the smallest Exp(1) / w keys are a weighted draw without
            # replacement; zero weights get infinite keys and come last, in index order.
            with np.errstate(divide="ignore"):
                keys = rng.standard_exponential(weights.size) / weights
            chosen = np.argsort(keys, kind="stable")[: self.num_samples]
        yield from chosen.tolist()

    def __len__(self) -> int:
        return self.num_samples


class BatchSampler(Sampler):
    """Group another sampler's indices into lists of ``batch_size``.

    Args:
        sampler: any iterable of indices (with ``__len__`` for ``len(batch_sampler)``).
        batch_size: indices per batch.
        drop_last: drop a last batch shorter than ``batch_size``.
    """

    def __init__(self, sampler: Iterable, batch_size: int, drop_last: bool) -> None:
        if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool):
            raise ValueError(f"batch_size should be a positive integer, got {batch_size!r}")
        if batch_size <= 0:
            raise ValueError(f"batch_size should be a positive integer, got {batch_size!r}")
        if not isinstance(drop_last, bool):
            raise ValueError(f"drop_last should be a bool, got {drop_last!r}")
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.drop_last = drop_last

    def __iter__(self) -> Iterator[list]:
        batch = []
        for index in self.sampler:
            batch.append(index)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self) -> int:
        if self.drop_last:
            return len(self.sampler) // self.batch_size
        return -(-len(self.sampler) // self.batch_size)


__all__ = [
    "BatchSampler",
    "RandomSampler",
    "Sampler",
    "SequentialSampler",
    "SubsetRandomSampler",
    "WeightedRandomSampler",
]
