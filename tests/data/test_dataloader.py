"""Datasets, samplers, default_collate and the DataLoader (``dtrain.utils.data``)."""

from __future__ import annotations

import collections
import threading

import numpy as np
import pytest

import dtrain as dt
from dtrain.runtime.random import default_generator
from dtrain.utils.data import (
    BatchSampler,
    ConcatDataset,
    DataLoader,
    Dataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
    Subset,
    TensorDataset,
    default_collate,
    random_split,
)


def arrays(batch):
    """A batch with every tensor replaced by its numpy array, for equality checks."""
    if isinstance(batch, dt.Tensor):
        return np.asarray(batch)
    if isinstance(batch, dict):
        return {k: arrays(v) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return [arrays(b) for b in batch]
    return batch


def same(a, b):
    """Two batches (or lists of batches) hold equal values with equal dtypes."""
    a, b = arrays(a), arrays(b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
    return a == b


def tensor_dataset(n=10):
    x = dt.arange(n * 3, dtype=dt.float32).reshape(n, 3)
    y = dt.arange(n) * 10
    return TensorDataset(x, y)


class Squares(Dataset):
    """A plain map-style dataset: sample i is (i, i * i as a float)."""

    def __init__(self, n):
        self.n = n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return i, float(i * i)

    def __len__(self):
        return self.n


def labels(loader):
    """The second field of every batch, flattened to a list of ints."""
    return [int(v) for batch in loader for v in np.asarray(batch[1])]


# ---- datasets ----------------------------------------------------------------------------
def test_tensor_dataset_rows_and_len():
    ds = tensor_dataset(4)
    assert len(ds) == 4
    x, y = ds[2]
    assert x.tolist() == [6.0, 7.0, 8.0] and y.item() == 20


def test_tensor_dataset_size_mismatch_names_sizes():
    with pytest.raises(ValueError, match=r"\[3, 4\]"):
        TensorDataset(dt.zeros(3, 2), dt.zeros(4))
    with pytest.raises(TypeError, match="not a Tensor"):
        TensorDataset(np.zeros(3))
    with pytest.raises(ValueError, match="0-d"):
        TensorDataset(dt.tensor(1.0))


def test_concat_and_subset():
    both = Squares(3) + Squares(2)
    assert isinstance(both, ConcatDataset) and len(both) == 5
    assert [both[i][0] for i in range(5)] == [0, 1, 2, 0, 1]
    assert both[-1][0] == 1
    with pytest.raises(IndexError):
        both[5]
    sub = Subset(Squares(10), [7, 2])
    assert len(sub) == 2 and sub[0] == (7, 49.0) and sub.__getitems__([1, 0])[0][0] == 2


def test_random_split_lengths_fractions_and_reproducibility():
    parts = random_split(Squares(10), [3, 7], generator=dt.Generator(1))
    assert [len(p) for p in parts] == [3, 7]
    assert sorted(parts[0].indices + parts[1].indices) == list(range(10))
    again = random_split(Squares(10), [3, 7], generator=dt.Generator(1))
    assert again[0].indices == parts[0].indices
    # Fractions: floor, then the remainder one at a time from the first split (PyTorch).
    assert [len(p) for p in random_split(Squares(10), [0.34, 0.33, 0.33])] == [4, 3, 3]
    dt.manual_seed(5)
    a = random_split(Squares(10), [0.5, 0.5])[0].indices
    dt.manual_seed(5)
    assert random_split(Squares(10), [0.5, 0.5])[0].indices == a
    with pytest.raises(ValueError, match="add up to 9"):
        random_split(Squares(10), [4, 5])
    with pytest.raises(TypeError, match=r"dtrain\.Generator"):
        random_split(Squares(10), [5, 5], generator=np.random.default_rng(0))


# ---- samplers ----------------------------------------------------------------------------
def test_sequential_and_random_sampler():
    assert list(SequentialSampler(range(4))) == [0, 1, 2, 3]
    sampler = RandomSampler(range(6), generator=dt.Generator(0))
    first, second = list(sampler), list(sampler)
    assert sorted(first) == sorted(second) == list(range(6)) and first != second
    assert len(sampler) == 6


def test_random_sampler_replacement_and_num_samples():
    with_replacement = list(RandomSampler(range(3), True, 50, generator=dt.Generator(0)))
    assert len(with_replacement) == 50 and set(with_replacement) == {0, 1, 2}
    chained = list(RandomSampler(range(4), num_samples=10, generator=dt.Generator(0)))
    assert len(chained) == 10 and sorted(chained[:4]) == sorted(chained[4:8]) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="positive integer"):
        RandomSampler(range(0))
    with pytest.raises(TypeError, match="bool"):
        RandomSampler(range(3), replacement=1)


def test_batch_sampler():
    assert list(BatchSampler(range(5), 2, False)) == [[0, 1], [2, 3], [4]]
    assert list(BatchSampler(range(5), 2, True)) == [[0, 1], [2, 3]]
    assert len(BatchSampler(range(5), 2, False)) == 3 and len(BatchSampler(range(5), 2, True)) == 2
    with pytest.raises(ValueError, match="positive integer"):
        BatchSampler(range(5), 0, False)


# ---- default_collate ---------------------------------------------------------------------
def test_collate_numbers_follow_pytorch_dtypes():
    assert default_collate([1, 2]).dtype == dt.int64
    assert default_collate([1.5, 2.0]).dtype == dt.float64  # PyTorch: float64
    assert default_collate([True, False]).dtype == dt.bool
    assert default_collate([np.float32(1), np.float32(2)]).dtype == dt.float32
    assert default_collate(["a", "b"]) == ["a", "b"]


def test_collate_tensors_and_numpy_stack():
    batch = default_collate([dt.ones(2, 3), dt.zeros(2, 3)])
    assert batch.shape == (2, 2, 3) and batch[0].sum().item() == 6
    batch = default_collate([np.arange(3, dtype=np.int32), np.arange(3, dtype=np.int32)])
    assert isinstance(batch, dt.Tensor) and batch.dtype == dt.int32 and batch.shape == (2, 3)
    with pytest.raises(ValueError, match="equal shapes"):
        default_collate([dt.ones(2), dt.ones(3)])


def test_collate_tuples_dicts_and_namedtuples():
    batch = default_collate([(1, {"a": 1.0, "s": "x"}), (2, {"a": 2.0, "s": "y"})])
    assert isinstance(batch, list)  # tuples transpose to a list, as in PyTorch
    assert batch[0].tolist() == [1, 2]
    assert batch[1]["a"].tolist() == [1.0, 2.0] and batch[1]["s"] == ["x", "y"]
    Point = collections.namedtuple("Point", "x y")
    point = default_collate([Point(1, 2.0), Point(3, 4.0)])
    assert isinstance(point, Point) and point.x.tolist() == [1, 3]
    ordered = default_collate([collections.OrderedDict(k=1)] * 2)
    assert isinstance(ordered, collections.OrderedDict)


def test_collate_errors_name_the_type_and_the_fix():
    with pytest.raises(TypeError, match=r"found object.*collate_fn"):
        default_collate([object(), object()])
    with pytest.raises(TypeError, match="collate_fn"):
        default_collate([None, None])
    with pytest.raises(TypeError, match="<U1"):
        default_collate([np.array(["a"]), np.array(["b"])])
    with pytest.raises(TypeError, match="uint32"):
        default_collate([np.zeros(2, np.uint32)] * 2)
    with pytest.raises(RuntimeError, match="equal size"):
        default_collate([[1, 2], [3]])
    with pytest.raises(TypeError, match="same keys"):
        default_collate([{"a": 1}, {"b": 2}])


# ---- DataLoader --------------------------------------------------------------------------
def test_loader_batches_len_and_drop_last():
    ds = tensor_dataset(10)
    loader = DataLoader(ds, batch_size=4)
    batches = list(loader)
    assert len(loader) == 3 and [b[0].shape[0] for b in batches] == [4, 4, 2]
    assert labels(loader) == [10 * i for i in range(10)]
    dropped = DataLoader(ds, batch_size=4, drop_last=True)
    assert len(dropped) == 2 and [b[0].shape[0] for b in dropped] == [4, 4]
    assert len(DataLoader(ds)) == 10


def test_loader_on_a_plain_dataset_collates_samples():
    batches = list(DataLoader(Squares(5), batch_size=2))
    assert [b[0].tolist() for b in batches] == [[0, 1], [2, 3], [4]]
    assert batches[1][1].dtype == dt.float64 and batches[1][1].tolist() == [4.0, 9.0]


def test_shuffle_visits_everything_and_changes_per_epoch():
    loader = DataLoader(tensor_dataset(20), batch_size=3, shuffle=True)
    first, second = labels(loader), labels(loader)
    assert sorted(first) == sorted(second) == [10 * i for i in range(20)]
    assert first != second


def test_shuffle_reproducible_with_manual_seed():
    loader = DataLoader(tensor_dataset(20), batch_size=4, shuffle=True)
    dt.manual_seed(123)
    run1 = [labels(loader), labels(loader)]
    dt.manual_seed(123)
    run2 = [labels(loader), labels(loader)]
    assert run1 == run2


def test_shuffle_with_own_generator_ignores_the_default_one():
    def run(seed):
        loader = DataLoader(tensor_dataset(20), shuffle=True, generator=dt.Generator(seed))
        default_generator.numpy.random(7)  # draws elsewhere must not change the order
        return labels(loader)

    assert run(3) == run(3) and run(3) != run(4)


def test_custom_sampler_and_batch_sampler():
    class Backwards(Sampler):
        def __init__(self, n):
            self.n = n

        def __iter__(self):
            return iter(range(self.n - 1, -1, -1))

        def __len__(self):
            return self.n

    loader = DataLoader(tensor_dataset(5), batch_size=2, sampler=Backwards(5))
    assert labels(loader) == [40, 30, 20, 10, 0] and len(loader) == 3
    plain_list = DataLoader(tensor_dataset(5), batch_size=2, sampler=[4, 0])  # any iterable
    assert labels(plain_list) == [40, 0]
    by_batches = DataLoader(tensor_dataset(5), batch_sampler=[[3, 1], [0]])
    assert labels(by_batches) == [30, 10, 0] and len(by_batches) == 2


def test_option_conflicts_are_refused():
    ds = tensor_dataset(5)
    with pytest.raises(ValueError, match="mutually exclusive with shuffle"):
        DataLoader(ds, sampler=[0, 1], shuffle=True)
    with pytest.raises(ValueError, match="batch_sampler option is mutually exclusive"):
        DataLoader(ds, batch_sampler=[[0]], batch_size=2)
    with pytest.raises(ValueError, match="drop_last"):
        DataLoader(ds, batch_size=None, drop_last=True)
    with pytest.raises(ValueError, match="num_workers"):
        DataLoader(ds, num_workers=-1)
    with pytest.raises(ValueError, match="prefetch_factor"):
        DataLoader(ds, prefetch_factor=2)


def test_batch_size_none_yields_converted_samples():
    samples = list(DataLoader(Squares(3), batch_size=None))
    assert samples[2] == [2, 4.0]  # a tuple sample becomes a list, as PyTorch's default_convert
    arrays_ds = [np.ones(2, np.float32)]
    assert isinstance(next(iter(DataLoader(arrays_ds, batch_size=None))), dt.Tensor)


def test_custom_collate_fn():
    loader = DataLoader(Squares(4), batch_size=2, collate_fn=lambda samples: len(samples))
    assert list(loader) == [2, 2]


def test_fast_path_equals_slow_path():
    ds = tensor_dataset(11)
    for kwargs in ({"batch_size": 3}, {"batch_size": 4, "drop_last": True}, {"batch_size": 1}):
        fast = list(DataLoader(ds, **kwargs))
        slow = list(DataLoader(ds, collate_fn=default_collate, **kwargs))
        assert same(fast, slow)
    dt.manual_seed(9)
    fast = list(DataLoader(ds, batch_size=4, shuffle=True))
    dt.manual_seed(9)
    slow = list(DataLoader(ds, batch_size=4, shuffle=True, collate_fn=default_collate))
    assert same(fast, slow)
    train, _ = random_split(ds, [7, 4], generator=dt.Generator(0))
    assert same(list(DataLoader(train, 2)), list(DataLoader(train, 2, collate_fn=default_collate)))
    nested = Subset(train, [6, 0, 3])
    nested_batches = list(DataLoader(nested, 2))
    assert same(nested_batches, list(DataLoader(nested, 2, collate_fn=default_collate)))
    assert same(nested_batches[1], [dt.stack([train[3][0]]), dt.stack([train[3][1]])])


def test_fast_path_indexes_once_and_keeps_autograd(monkeypatch):
    ds = tensor_dataset(6)
    monkeypatch.setattr(TensorDataset, "__getitem__", lambda self, i: pytest.fail("slow path"))
    assert labels(DataLoader(ds, batch_size=4)) == [0, 10, 20, 30, 40, 50]
    monkeypatch.undo()
    w = dt.ones(4, 2, requires_grad=True)
    (xb,) = next(iter(DataLoader(TensorDataset(w), batch_sampler=[[1, 1, 3]])))
    xb.sum().backward()
    assert w.grad.tolist() == [[0, 0], [2, 2], [0, 0], [1, 1]]


def test_tensor_dataset_subclass_uses_its_getitem():
    class Doubled(TensorDataset):
        def __getitem__(self, i):
            x, y = super().__getitem__(i)
            return x, y * 2

    assert labels(DataLoader(Doubled(*tensor_dataset(3).tensors), batch_size=2)) == [0, 20, 40]


def test_threaded_workers_give_the_same_batches_in_order():
    for ds in (Squares(23), tensor_dataset(23)):
        dt.manual_seed(1)
        serial = list(DataLoader(ds, batch_size=3, shuffle=True))
        dt.manual_seed(1)
        threaded = list(DataLoader(ds, batch_size=3, shuffle=True, num_workers=3))
        assert same(serial, threaded)
    loader = DataLoader(Squares(100), batch_size=2, num_workers=2, prefetch_factor=1)
    for i, _ in enumerate(loader):  # leaving early shuts the threads down
        if i == 3:
            break


def test_worker_errors_reach_the_caller():
    class Broken(Squares):
        def __getitem__(self, i):
            if i == 5:
                raise KeyError("sample 5 is broken")
            return super().__getitem__(i)

    for workers in (0, 2):
        with pytest.raises(KeyError, match="sample 5"):
            list(DataLoader(Broken(8), batch_size=2, num_workers=workers))


def test_a_subset_subclass_keeps_its_own_items():
    class Scaled(Subset):
        def __getitem__(self, i):
            return (self.dataset[self.indices[i]][0] * 100,)

        def __getitems__(self, indices):
            return [self[i] for i in indices]

    loader = DataLoader(Scaled(TensorDataset(dt.arange(4)), [0, 1, 2, 3]), batch_size=2)
    assert [b[0].tolist() for b in loader] == [[0, 100], [200, 300]]

    class OnlyOne(Subset):  # the loader reads batches through __getitems__: as PyTorch
        def __getitem__(self, i):
            return 1

    with pytest.raises(NotImplementedError, match="define __getitems__"):
        OnlyOne(TensorDataset(dt.arange(4)), [0])


def test_indices_that_are_not_integers_are_refused():
    loader = DataLoader(Subset(TensorDataset(dt.arange(4)), [1.7, 2.2]), batch_size=2)
    with pytest.raises(IndexError, match="indices must be integers, got float64"):
        list(loader)


def test_default_collate_takes_the_dtype_of_the_whole_batch():
    assert default_collate([1, 2.5]).tolist() == [1.0, 2.5]
    assert default_collate([True, 2]).dtype == dt.int64
    assert default_collate([True, False]).dtype == dt.bool
    assert default_collate([1.0, 2]).dtype == dt.float64  # a float first: torch's float64


def test_worker_init_fn_timeout_and_persistent_workers():
    started = []
    loader = DataLoader(
        TensorDataset(dt.arange(8)), batch_size=2, num_workers=2, worker_init_fn=started.append
    )
    assert [b[0].tolist() for b in loader] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert sorted(started) in ([0], [0, 1])  # each thread once, as it starts

    gate = threading.Event()

    class Stuck(Dataset):  # a fetch that ends only when the test lets it
        def __len__(self):
            return 2

        def __getitem__(self, i):
            gate.wait(60)
            return i

    try:
        with pytest.raises(RuntimeError, match=r"timed out after 0\.05 seconds"):
            list(DataLoader(Stuck(), batch_size=2, num_workers=1, timeout=0.05))
    finally:
        gate.set()
    with pytest.raises(ValueError, match="persistent_workers option needs num_workers > 0"):
        DataLoader(Stuck(), persistent_workers=True)
    assert len(list(DataLoader(Stuck(), num_workers=1, persistent_workers=True))) == 2


def test_an_error_in_worker_init_fn_reaches_the_caller():
    def broken(worker_id):
        raise ValueError(f"worker {worker_id} could not open its file")

    loader = DataLoader(
        TensorDataset(dt.arange(4)), batch_size=2, num_workers=2, worker_init_fn=broken
    )
    with pytest.raises(ValueError, match="could not open its file"):
        list(loader)


def test_get_worker_info_names_the_worker_thread():
    from dtrain.utils.data import get_worker_info

    seen = []

    class Recording(Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, i):
            seen.append(get_worker_info())
            return i

    assert get_worker_info() is None  # not a worker
    dataset = Recording()
    dt.manual_seed(0)
    list(DataLoader(dataset, batch_size=2, num_workers=2))
    infos = {(info.id, info.num_workers, info.seed) for info in seen}
    assert all(info is not None and info.dataset is dataset for info in seen)
    assert {worker for worker, _, _ in infos} <= {0, 1} and {n for _, n, _ in infos} == {2}
    base = {seed - worker for worker, _, seed in infos}
    assert len(base) == 1  # one base seed per iterator, plus the worker's id
    seen.clear()
    list(DataLoader(dataset, batch_size=2))
    assert seen == [None] * 6  # num_workers=0 loads on this thread
