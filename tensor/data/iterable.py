"""Iterable-style datasets: ``IterableDataset``, ``ChainDataset``, and how the ``DataLoader``
batches them (as ``torch.utils.data``).

With ``num_workers=N`` each of N worker threads calls ``iter(dataset)`` itself, so
``get_worker_info()`` inside ``__iter__`` says which worker it is: a dataset that does not
shard by it yields every sample once per worker (as PyTorch documents). Batches come from
the workers in turn (worker 0, 1, …, 0, …); an exhausted worker drops out of the rotation.
Unlike PyTorch the workers share one dataset object (threads, not copies): keep the state
of an iteration in the iterator (a generator does), not on ``self``.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from dtrain._tensor.data.dataset import Dataset
from dtrain._tensor.data.worker import WorkerInfo, become_worker


class IterableDataset(Dataset):
    """A dataset that is a stream: subclasses define ``__iter__`` (``__len__`` optional).

    ``a + b`` chains two iterable datasets into a ``ChainDataset``.
    """

    def __iter__(self) -> Iterator[Any]:
        raise NotImplementedError(f"{type(self).__name__} must define __iter__")

    def __add__(self, other: Dataset) -> ChainDataset:  # type: ignore[override]
        return ChainDataset([self, other])


class ChainDataset(IterableDataset):
    """The samples of each iterable dataset in turn (chained lazily).

    Args:
        datasets: iterable datasets; anything else is a TypeError when iterated, as PyTorch.
    """

    def __init__(self, datasets: Iterable[Dataset]) -> None:
        self.datasets = datasets

    def __iter__(self) -> Iterator[Any]:
        for d in self.datasets:
            if not isinstance(d, IterableDataset):
                raise TypeError(
                    f"ChainDataset only supports IterableDataset, got {type(d).__name__}"
                )
            yield from d

    def __len__(self) -> int:
        total = 0
        for d in self.datasets:
            if not isinstance(d, IterableDataset):
                raise TypeError(
                    f"ChainDataset only supports IterableDataset, got {type(d).__name__}"
                )
            total += len(d)  # type: ignore[arg-type]
        return total


def batches(
    samples: Iterator[Any], batch_size: int | None, drop_last: bool, collate: Callable
) -> Iterator[Any]:
    """``collate`` applied to each run of ``batch_size`` samples (to each sample alone when
    ``batch_size`` is None); a short last run is dropped when ``drop_last``."""
    if batch_size is None:
        for sample in samples:
            yield collate(sample)
        return
    while True:
        batch = list(itertools.islice(samples, batch_size))
        if not batch or (drop_last and len(batch) < batch_size):
            return
        yield collate(batch)


_DONE = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def threaded_batches(
    dataset: IterableDataset,
    workers: list[WorkerInfo],
    make_batches: Callable[[Iterator[Any]], Iterator[Any]],
    depth: int,
    worker_init_fn: Callable[[int], None] | None,
    timeout: float,
) -> Iterator[Any]:
    """One thread per worker iterating ``dataset`` itself (as ``get_worker_info`` says it
    is that worker), up to ``depth`` batches ahead; batches are yielded round-robin."""
    stop = threading.Event()
    queues = [queue.Queue(maxsize=depth) for _ in workers]

    def put(q: queue.Queue, item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run(info: WorkerInfo, q: queue.Queue) -> None:
        become_worker(info)
        try:
            if worker_init_fn is not None:
                worker_init_fn(info.id)
            for batch in make_batches(iter(dataset)):
                if not put(q, batch):
                    return
        except BaseException as error:  # handed to the consumer, which raises it
            put(q, _Failed(error))
            return
        put(q, _DONE)

    threads = [
        threading.Thread(target=run, args=(info, q), name="dtrain-dataloader", daemon=True)
        for info, q in zip(workers, queues, strict=True)
    ]
    for t in threads:
        t.start()
    try:
        active = list(range(len(workers)))
        while active:
            for i in list(active):
                try:
                    item = queues[i].get(timeout=timeout or None)
                except queue.Empty:
                    raise RuntimeError(
                        f"DataLoader timed out after {timeout} seconds waiting for a batch "
                        "from its workers; raise timeout (or 0 for none)"
                    ) from None
                if item is _DONE:
                    active.remove(i)
                elif isinstance(item, _Failed):
                    raise item.error
                else:
                    yield item
    finally:
        stop.set()  # workers blocked on a full queue give up; queued batches are dropped


__all__ = ["ChainDataset", "IterableDataset"]
