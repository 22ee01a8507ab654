"""IterableDataset / ChainDataset through the DataLoader, the lazy RandomSampler with
replacement, and torch's submodule import paths."""

from __future__ import annotations

import itertools
import math
import threading

import numpy as np
import pytest

import dtrain as dt
from dtrain.utils.data import (
    ChainDataset,
    DataLoader,
    IterableDataset,
    RandomSampler,
    TensorDataset,
    get_worker_info,
)


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


class Range(IterableDataset):
    """``start..end``, split between workers as torch's docs show."""

    def __init__(self, start: int, end: int) -> None:
        self.start, self.end = start, end

    def __iter__(self):
        info = get_worker_info()
        if info is None:
            return iter(range(self.start, self.end))
        per = math.ceil((self.end - self.start) / info.num_workers)
        lo = self.start + info.id * per
        return iter(range(lo, min(lo + per, self.end)))

    def __len__(self) -> int:
        return self.end - self.start


class Unsharded(IterableDataset):
    def __iter__(self):
        yield from range(4)


def test_batches_in_iteration_order():
    loader = DataLoader(Range(0, 10), batch_size=4)
    got = [b.tolist() for b in loader]
    assert got == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert loader.sampler is None and len(loader) == 3
    assert [b.tolist() for b in DataLoader(Range(0, 10), batch_size=4, drop_last=True)] == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
    ]
    assert len(DataLoader(Range(0, 10), batch_size=4, drop_last=True)) == 2


def test_no_batching_converts_each_sample():
    got = list(DataLoader(Range(0, 3), batch_size=None))
    assert [int(x) for x in got] == [0, 1, 2]


def test_tuples_collate_like_map_style():
    class Pairs(IterableDataset):
        def __iter__(self):
            for i in range(5):
                yield np.full(2, i, dtype=np.float32), i

    x, y = next(iter(DataLoader(Pairs(), batch_size=5)))
    assert x.shape == (5, 2) and x.dtype == dt.float32
    np.testing.assert_array_equal(y.numpy(), np.arange(5))


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_workers_shard_with_get_worker_info(workers):
    loader = DataLoader(Range(3, 17), batch_size=2, num_workers=workers)
    got = [b.tolist() for b in loader]
    flat = sorted(itertools.chain.from_iterable(got))
    assert flat == list(range(3, 17))  # every sample once
    if workers == 2:  # round-robin: worker 0's first batch, then worker 1's, ...
        assert got[:2] == [[3, 4], [10, 11]]


def test_unsharded_workers_duplicate_as_torch_documents():
    got = sorted(int(v) for b in DataLoader(Unsharded(), batch_size=3, num_workers=2) for v in b)
    assert got == sorted(list(range(4)) * 2)


def test_worker_error_reaches_the_caller():
    class Broken(IterableDataset):
        def __iter__(self):
            yield 1
            raise KeyError("bad sample")

    with pytest.raises(KeyError, match="bad sample"):
        list(DataLoader(Broken(), batch_size=1, num_workers=2))


def _loader_threads(before: set) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t not in before and t.name == "dtrain-dataloader"]


def _assert_stopped(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.join(timeout=30)  # a stopped worker notices within its 0.1 s queue poll
    assert not [t for t in threads if t.is_alive()]


def test_early_break_stops_workers():
    class Endless(IterableDataset):
        def __iter__(self):
            return itertools.count()

    loader = DataLoader(Endless(), batch_size=2, num_workers=2)
    before = set(threading.enumerate())
    it = iter(loader)
    first = [next(it).tolist() for _ in range(3)]
    assert first[0] == [0, 1] and first[1] == [0, 1]
    threads = _loader_threads(before)
    assert len(threads) == 2 and all(t.is_alive() for t in threads)  # blocked on full queues
    it.close()  # the finally block tells the threads to stop
    _assert_stopped(threads)

    # A `break` out of a for loop drops the iterator, which closes it as well.
    before = set(threading.enumerate())
    for _batch in loader:
        threads = _loader_threads(before)
        assert len(threads) == 2
        break
    _assert_stopped(threads)


def test_sampler_options_are_refused():
    for kwargs in ({"shuffle": True}, {"sampler": [0, 1]}, {"batch_sampler": [[0]]}):
        with pytest.raises(ValueError, match="IterableDataset: expected unspecified"):
            DataLoader(Range(0, 4), **kwargs)
    DataLoader(Range(0, 4), shuffle=False)  # False is "unspecified" enough for torch too


def test_len_needs_a_sized_dataset():
    with pytest.raises(TypeError):
        len(DataLoader(Unsharded(), batch_size=2))


def test_chain_dataset():
    chain = ChainDataset([Range(0, 3), Range(10, 12)])
    assert list(chain) == [0, 1, 2, 10, 11] and len(chain) == 5
    assert list(Range(0, 2) + Range(5, 6)) == [0, 1, 5]
    with pytest.raises(TypeError, match="only supports IterableDataset"):
        list(ChainDataset([TensorDataset(dt.zeros(2))]))


def test_iterable_matches_torch(torch):
    class TorchRange(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(range(11))

    class DtRange(IterableDataset):
        def __iter__(self):
            return iter(range(11))

    for kwargs in ({"batch_size": 4}, {"batch_size": 4, "drop_last": True}):
        ours = [b.tolist() for b in DataLoader(DtRange(), **kwargs)]
        theirs = [b.tolist() for b in torch.utils.data.DataLoader(TorchRange(), **kwargs)]
        assert ours == theirs


# ---- RandomSampler(replacement=True) ----------------------------------------------------
def test_replacement_is_lazy_for_huge_num_samples():
    sampler = RandomSampler(range(7), replacement=True, num_samples=int(1e10))
    assert len(sampler) == 10**10
    first = list(itertools.islice(iter(sampler), 10000))  # 1e10 at once would need 75 GiB
    assert len(first) == 10000 and set(first) == set(range(7))


def test_replacement_draws_are_seeded_and_uniform():
    dt.manual_seed(3)
    a = list(RandomSampler(range(5), replacement=True, num_samples=10001))
    dt.manual_seed(3)
    b = list(RandomSampler(range(5), replacement=True, num_samples=10001))
    assert a == b and len(a) == 10001
    counts = np.bincount(a, minlength=5)
    assert (abs(counts - 2000) < 200).all(), counts
    g = dt.Generator().manual_seed(1)
    c = list(RandomSampler(range(5), True, 50, generator=g))
    assert c == list(RandomSampler(range(5), True, 50, generator=dt.Generator().manual_seed(1)))
    assert c != list(RandomSampler(range(5), True, 50, generator=g))  # next epoch differs


def test_replacement_does_not_depend_on_interleaved_draws():
    dt.manual_seed(0)
    plain = list(RandomSampler(range(100), replacement=True, num_samples=9000))
    dt.manual_seed(0)
    out = []
    for i, index in enumerate(RandomSampler(range(100), replacement=True, num_samples=9000)):
        if i % 1000 == 0:
            dt.randn(3)  # e.g. dropout in the training step between batches
        out.append(index)
    assert out == plain


# ---- torch's module paths ---------------------------------------------------------------
def test_submodule_paths():
    import dtrain
    import dtrain.utils.data.dataloader as dl
    import dtrain.utils.data.dataset as ds
    import dtrain.utils.data.sampler as sm
    from dtrain.utils.data import dataloader

    assert dl.DataLoader is DataLoader and dataloader is dl
    assert dl.default_collate is dtrain.utils.data.default_collate
    assert ds.IterableDataset is IterableDataset and ds.TensorDataset is TensorDataset
    assert sm.RandomSampler is RandomSampler
    assert dtrain.utils.data.distributed.DistributedSampler.__name__ == "DistributedSampler"
