"""``DataLoader``: batches from a map-style dataset, in the order a sampler gives.

As ``torch.utils.data.DataLoader`` for map-style datasets, with two differences:

- ``num_workers > 0`` runs ``dataset[i]`` and ``collate_fn`` in that many *threads* of this
  process (no fork, nothing pickled), up to ``prefetch_factor * num_workers`` batches ahead.
  Batches still come in sampler order, and the sampler (hence the shuffle) runs in the
  calling thread; but a dataset that draws random numbers inside ``__getitem__`` sees its
  draws in a thread-dependent order, so keep ``num_workers=0`` where such augmentation must
  be bit-reproducible. Threads help when loading releases the GIL (file I/O, decoding);
  ``worker_init_fn(worker_id)`` runs first in each thread, ``timeout`` bounds the wait for
  a batch; ``pin_memory``, ``persistent_workers`` and ``multiprocessing_context`` are
  accepted and ignored (threads are cheap to start). An ``IterableDataset`` is iterated by
  each worker thread itself (see ``iterable.py``: shard it by ``get_worker_info()``).
- A ``TensorDataset`` (or a ``Subset`` of one, such as ``random_split`` gives) with the
  default ``collate_fn`` is batched by indexing each tensor once with the batch's index
  array, not by stacking per-sample rows; the batches are the same.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from dtrain._tensor.data.collate import default_collate, default_convert
from dtrain._tensor.data.dataset import Dataset, Subset, TensorDataset, numpy_rng
from dtrain._tensor.data.iterable import IterableDataset, batches, threaded_batches
from dtrain._tensor.data.sampler import BatchSampler, RandomSampler, SequentialSampler
from dtrain._tensor.data.worker import WorkerInfo, become_worker
from dtrain._tensor.ops.indexing import getitem
from dtrain._tensor.tensor import wrap
from dtrain.runtime.backend import get_array_module
from dtrain.runtime.random import Generator


class DataLoader:
    """Iterate over ``dataset`` in batches.

    Args:
        dataset: a map-style dataset (``__getitem__`` and ``__len__``), or an
            ``IterableDataset`` (no sampler or shuffle then; its samples are batched in
            the order it yields them).
        batch_size: samples per batch; None turns batching off (each sample is passed
            through ``default_convert`` or ``collate_fn`` alone).
        shuffle: visit the samples in a new random order each epoch.
        sampler: any iterable of indices with ``__len__`` (e.g. ``DistributedSampler``);
            excludes ``shuffle``.
        batch_sampler: an iterable of index lists; excludes ``batch_size``, ``shuffle``,
            ``sampler`` and ``drop_last``.
        num_workers: 0 loads in the calling thread; N > 0 uses N threads (see the module
            docstring).
        collate_fn: turns a list of samples into a batch; ``default_collate`` by default.
        pin_memory: accepted for PyTorch compatibility; has no effect.
        drop_last: drop the last batch when it is smaller than ``batch_size``.
        generator: the random stream for ``shuffle``; the default generator when None, so
            ``dtrain.manual_seed(s)`` fixes the order.
        prefetch_factor: batches each worker thread loads ahead (2 by default); only with
            ``num_workers > 0``.

    Raises:
        ValueError: for conflicting or out-of-range options.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int | None = 1,
        shuffle: bool | None = None,
        sampler: Iterable | None = None,
        batch_sampler: Iterable | None = None,
        num_workers: int = 0,
        collate_fn: Callable[[list], Any] | None = None,
        pin_memory: bool = False,
        drop_last: bool = False,
        timeout: float = 0,
        worker_init_fn: Callable[[int], None] | None = None,
        multiprocessing_context: Any = None,
        generator: Generator | None = None,
        *,
        prefetch_factor: int | None = None,
        persistent_workers: bool = False,
    ) -> None:
        if not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 0:
            raise ValueError(
                f"num_workers must be a non-negative int, got {num_workers!r}; use 0 to load "
                "in the main thread"
            )
        if prefetch_factor is not None and num_workers == 0:
            raise ValueError(
                "prefetch_factor only applies with num_workers > 0; leave it as None when "
                "num_workers=0"
            )
        if timeout < 0:
            raise ValueError(f"timeout must be non-negative, got {timeout!r}")
        if persistent_workers and num_workers == 0:
            raise ValueError("persistent_workers option needs num_workers > 0")
        if prefetch_factor is None:
            prefetch_factor = 2
        if not isinstance(prefetch_factor, int) or prefetch_factor < 1:
            raise ValueError(f"prefetch_factor must be a positive int, got {prefetch_factor!r}")
        iterable = isinstance(dataset, IterableDataset)
        if iterable:
            for name, value in (
                ("shuffle", shuffle), ("sampler", sampler), ("batch_sampler", batch_sampler)
            ):  # fmt: skip
                if value not in (None, False):
                    raise ValueError(
                        f"DataLoader with IterableDataset: expected unspecified {name} option, "
                        f"but got {name}={value!r}; an iterable dataset sets its own order"
                    )
        elif not hasattr(dataset, "__getitem__"):
            raise TypeError(
                f"DataLoader needs a map-style dataset (__getitem__ and __len__) or a "
                f"dtrain.utils.data.IterableDataset, got {type(dataset).__name__}; subclass "
                "IterableDataset for a stream"
            )
        if sampler is not None and shuffle:
            raise ValueError(
                "DataLoader: sampler option is mutually exclusive with shuffle; shuffle in the "
                "sampler instead (e.g. DistributedSampler(dataset, shuffle=True))"
            )
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError(
                    "DataLoader: batch_sampler option is mutually exclusive with batch_size, "
                    "shuffle, sampler, and drop_last; leave those at their defaults"
                )
            batch_size = None
            drop_last = False
        elif batch_size is None and drop_last:
            raise ValueError(
                "DataLoader: batch_size=None option disables auto-batching and is mutually "
                "exclusive with drop_last"
            )
        if iterable:
            pass  # no sampler: the dataset's own iterator gives the order
        elif sampler is None:
            if shuffle:
                sampler = RandomSampler(dataset, generator=generator)
            else:
                sampler = SequentialSampler(dataset)
        if batch_size is not None and batch_sampler is None and not iterable:
            batch_sampler = BatchSampler(sampler, batch_size, drop_last)

        self.dataset = dataset
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.sampler = sampler
        self.batch_sampler = batch_sampler
        self.num_workers = num_workers
        self.prefetch_factor = prefetch_factor if num_workers > 0 else None
        self._prefetch = prefetch_factor
        self.pin_memory = pin_memory
        self.generator = generator
        self.timeout = timeout
        self.worker_init_fn = worker_init_fn
        self.persistent_workers = persistent_workers
        self._iterable = iterable
        self._default_collate = collate_fn is None
        if collate_fn is None:
            collate_fn = default_collate if self._auto_collation else default_convert
        self.collate_fn = collate_fn

    @property
    def _auto_collation(self) -> bool:
        if self._iterable:
            return self.batch_size is not None
        return self.batch_sampler is not None

    @property
    def _index_sampler(self) -> Iterable:
        return self.batch_sampler if self._auto_collation else self.sampler

    def __len__(self) -> int:
        if self._iterable:
            # As PyTorch: the dataset's length (TypeError without one) in batches.
            n = len(self.dataset)  # type: ignore[arg-type]
            if self.batch_size is None:
                return n
            return n // self.batch_size if self.drop_last else -(-n // self.batch_size)
        return len(self._index_sampler)

    def __iter__(self) -> Iterator[Any]:
        # As PyTorch: a base seed per iterator, from the loader's generator (or the default
        # one), drawn with or without workers, so both shuffle alike from one seed.
        base_seed = int(numpy_rng(self.generator).integers(0, 2**62))
        if self._iterable:
            return self._iterate_stream(base_seed)
        fetch = self._fetcher()
        indices = iter(self._index_sampler)
        if self.num_workers == 0:
            return (fetch(index) for index in indices)
        workers = [
            WorkerInfo(id=i, num_workers=self.num_workers, seed=base_seed + i, dataset=self.dataset)
            for i in range(self.num_workers)
        ]
        return _threaded(
            fetch, indices, workers, self.num_workers * self._prefetch, self.worker_init_fn,
            self.timeout,
        )  # fmt: skip

    def _iterate_stream(self, base_seed: int) -> Iterator[Any]:
        """Batches of an IterableDataset: in this thread, or one stream per worker."""
        size, drop_last, collate = self.batch_size, self.drop_last, self.collate_fn

        def make_batches(samples: Iterator[Any]) -> Iterator[Any]:
            return batches(samples, size, drop_last, collate)

        if self.num_workers == 0:
            return make_batches(iter(self.dataset))  # type: ignore[call-overload]
        workers = [
            WorkerInfo(id=i, num_workers=self.num_workers, seed=base_seed + i, dataset=self.dataset)
            for i in range(self.num_workers)
        ]
        return threaded_batches(
            self.dataset, workers, make_batches, self._prefetch, self.worker_init_fn,
            self.timeout,
        )  # fmt: skip

    def _fetcher(self) -> Callable[[Any], Any]:
        """The function from one entry of the index sampler to one batch."""
        dataset, collate = self.dataset, self.collate_fn
        if not self._auto_collation:
            return lambda index: collate(dataset[index])
        if self._default_collate:
            fast = _tensor_rows(dataset)
            if fast is not None:
                return fast
        if hasattr(dataset, "__getitems__"):
            return lambda batch: collate(dataset.__getitems__(batch))
        return lambda batch: collate([dataset[i] for i in batch])


def _index_array(indices: Any) -> np.ndarray:
    """``indices`` as int64, refusing what is not an integer (numpy would truncate 1.7)."""
    array = np.asarray(indices)
    if array.size and array.dtype.kind not in "iu":
        raise IndexError(
            f"dataset indices must be integers, got {array.dtype} values such as "
            f"{array.flat[0]!r}; check the sampler or the Subset's indices"
        )
    return array.astype(np.int64, copy=False)


def _tensor_rows(dataset: Any) -> Callable[[list], list] | None:
    """For a TensorDataset, or Subsets of one: a fetcher that takes all rows of a batch
    with one fancy index per tensor. None for any other dataset."""
    mapping = None
    while type(dataset) is Subset:  # a subclass may override __getitem__ or __getitems__
        indices = _index_array(dataset.indices)
        mapping = indices if mapping is None else indices[mapping]
        dataset = dataset.dataset
    if type(dataset) is not TensorDataset:  # a subclass may override __getitem__
        return None
    tensors = dataset.tensors
    n = len(dataset)

    def fetch(batch: list) -> list:
        rows = _index_array(batch)
        if rows.ndim != 1:
            raise IndexError(f"a batch must be a flat list of indices, got {batch!r}")
        if mapping is not None:
            rows = mapping[rows]
        if rows.size and (rows.max() >= n or rows.min() < -n):
            raise IndexError(f"index out of range for a TensorDataset of {n} samples")
        out = []
        for t in tensors:
            key = get_array_module(t._array).asarray(rows)
            out.append(getitem(t, wrap(key)))
        return out

    return fetch


def _threaded(
    fetch: Callable[[Any], Any],
    indices: Iterator,
    workers: list[WorkerInfo],
    depth: int,
    worker_init_fn: Callable[[int], None] | None,
    timeout: float,
) -> Iterator[Any]:
    """``fetch`` each entry of ``indices`` on a thread per worker, at most ``depth`` in
    flight, yielding the results in order; each thread first becomes its worker
    (``get_worker_info``) and runs ``worker_init_fn`` with its id, and a batch not ready
    within ``timeout`` seconds (0: no limit) is an error, as in PyTorch."""
    ids = itertools.count()
    failed: list[BaseException] = []  # worker_init_fn's error: the pool only says "broken"

    def start() -> None:
        info = workers[next(ids)]
        become_worker(info)
        if worker_init_fn is not None:
            try:
                worker_init_fn(info.id)
            except BaseException as error:
                failed.append(error)
                raise

    pool = ThreadPoolExecutor(len(workers), "dtrain-dataloader", initializer=start)
    pending: collections.deque = collections.deque()
    stuck = False

    def submit(index: Any) -> None:
        try:
            pending.append(pool.submit(fetch, index))
        except concurrent.futures.BrokenExecutor:  # an initializer failed already
            if failed:
                raise failed[0] from None
            raise

    def next_batch() -> Any:
        nonlocal stuck
        try:
            return pending.popleft().result(timeout or None)
        except concurrent.futures.BrokenExecutor:
            if failed:
                raise failed[0] from None
            raise
        except concurrent.futures.TimeoutError:
            stuck = True
            raise RuntimeError(
                f"DataLoader timed out after {timeout} seconds waiting for a batch from its "
                "workers; raise timeout (or 0 for none)"
            ) from None

    try:
        for index in indices:
            submit(index)
            if len(pending) >= depth:
                yield next_batch()
        while pending:
            yield next_batch()
    finally:
        # Queued batches are dropped; a stuck worker is not waited for (its thread ends
        # when its fetch does).
        pool.shutdown(wait=not stuck, cancel_futures=True)


__all__ = ["DataLoader"]
