"""WeightedRandomSampler, SubsetRandomSampler (and BatchSampler over them) with the
DataLoader; the torch import paths of ``dtrain.utils.data``. The random orders are dtrain's
own (not PyTorch's), so they are checked by their statistics and reproducibility."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import dtrain as dt
from dtrain.utils.data import (
    BatchSampler,
    DataLoader,
    SubsetRandomSampler,
    TensorDataset,
    WeightedRandomSampler,
)


def _dataset(n=10):
    return TensorDataset(dt.arange(n) * 10)


# ---- WeightedRandomSampler --------------------------------------------------------------
def test_weighted_with_replacement_follows_the_weights():
    weights = [1.0, 3.0, 0.0, 6.0]
    dt.manual_seed(0)
    draws = list(WeightedRandomSampler(weights, 20000))
    assert len(draws) == 20000 and set(draws) <= {0, 1, 3}
    freq = np.bincount(draws, minlength=4) / len(draws)
    np.testing.assert_allclose(freq, [0.1, 0.3, 0.0, 0.6], atol=0.015)


def test_weighted_without_replacement_draws_each_index_once():
    dt.manual_seed(1)
    sampler = WeightedRandomSampler([5.0, 1.0, 1.0, 1.0, 0.0], 4, replacement=False)
    for _ in range(20):
        draws = list(sampler)
        assert len(set(draws)) == 4 and 4 not in draws
    # the heavy index comes first far more often than the uniform 1/4
    firsts = [next(iter(sampler)) for _ in range(2000)]
    assert 0.55 < np.mean(np.array(firsts) == 0) < 0.70  # exactly 5/8 in expectation
    # zero weights come last, in index order, once the others are used up (as PyTorch)
    assert list(WeightedRandomSampler([0.0, 2.0, 0.0, 0.0], 4, replacement=False))[1:] == [0, 2, 3]


def test_weighted_is_reproducible_and_takes_tensors_and_generators():
    weights = dt.tensor([0.2, 0.5, 0.3])
    dt.manual_seed(7)
    a = list(WeightedRandomSampler(weights, 50))
    dt.manual_seed(7)
    b = list(WeightedRandomSampler(weights.numpy(), 50))
    assert a == b
    g1, g2 = dt.Generator().manual_seed(3), dt.Generator().manual_seed(3)
    dt.manual_seed(0)
    c = list(WeightedRandomSampler(weights, 50, generator=g1))
    dt.manual_seed(99)  # the default generator plays no part
    assert c == list(WeightedRandomSampler(weights, 50, generator=g2))
    sampler = WeightedRandomSampler(weights, 50, generator=g1)
    assert list(sampler) != list(sampler)  # a new draw each epoch


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        (([1.0, 2.0], 0), {}, ValueError, "num_samples=0"),
        (([1.0, 2.0], 2.5), {}, ValueError, "num_samples=2.5"),
        (([1.0, 2.0], True), {}, ValueError, "num_samples=True"),
        (([1.0, 2.0], 2), {"replacement": 1}, TypeError, "replacement=1"),
        (([[1.0, 2.0]], 2), {}, ValueError, r"1d sequence .* shape \(1, 2\)"),
        (([1.0, -2.0], 2), {}, ValueError, "entry 1 is not"),
        (([1.0, float("nan")], 2), {}, ValueError, "finite"),
        (([0.0, 0.0], 2), {}, ValueError, "sum to 0"),
        (([1.0, 2.0], 3), {"replacement": False}, ValueError, "num_samples=3 .* 2 weights"),
        (([1.0], 1), {"generator": 5}, TypeError, "dtrain.Generator"),
    ],
)
def test_weighted_bad_arguments(args, kwargs, error, message):
    with pytest.raises(error, match=message):
        WeightedRandomSampler(*args, **kwargs)


# ---- SubsetRandomSampler ----------------------------------------------------------------
def test_subset_random_sampler_permutes_the_given_indices():
    indices = [7, 2, 9, 4]
    sampler = SubsetRandomSampler(indices)
    assert len(sampler) == 4
    dt.manual_seed(0)
    epochs = [list(sampler) for _ in range(30)]
    assert all(sorted(e) == [2, 4, 7, 9] for e in epochs)
    assert len({tuple(e) for e in epochs}) > 5  # a fresh order each epoch
    dt.manual_seed(0)
    assert [list(sampler) for _ in range(30)] == epochs  # reproducible
    gen = dt.Generator().manual_seed(5)
    first = list(SubsetRandomSampler(range(100, 110), generator=gen))
    assert sorted(first) == list(range(100, 110))
    assert first == list(SubsetRandomSampler(range(100, 110), dt.Generator().manual_seed(5)))
    with pytest.raises(TypeError, match=r"dtrain\.Generator"):
        SubsetRandomSampler(indices, generator="seed")


# ---- with the DataLoader ----------------------------------------------------------------
def test_loader_with_a_subset_random_sampler_splits_train_and_validation():
    data = _dataset(10)
    train = DataLoader(data, batch_size=3, sampler=SubsetRandomSampler(range(0, 8)))
    val = DataLoader(data, batch_size=3, sampler=SubsetRandomSampler([8, 9]))
    assert len(train) == 3 and len(val) == 1
    seen = np.concatenate([b[0].numpy() for b in train])
    assert sorted(seen.tolist()) == [0, 10, 20, 30, 40, 50, 60, 70]
    assert sorted(np.concatenate([b[0].numpy() for b in val]).tolist()) == [80, 90]


def test_loader_with_a_weighted_sampler_oversamples_a_class():
    labels = np.array([0] * 90 + [1] * 10)
    data = TensorDataset(dt.tensor(labels))
    class_weight = 1.0 / np.bincount(labels)
    sampler = WeightedRandomSampler(class_weight[labels], num_samples=4000)
    dt.manual_seed(2)
    loader = DataLoader(data, batch_size=100, sampler=sampler)
    assert len(loader) == 40
    drawn = np.concatenate([b[0].numpy() for b in loader])
    assert drawn.shape == (4000,) and 0.45 < drawn.mean() < 0.55  # balanced classes


def test_batch_sampler_over_a_weighted_sampler_and_as_batch_sampler():
    sampler = WeightedRandomSampler([1.0] * 10, 7, replacement=False)
    batches = BatchSampler(sampler, batch_size=3, drop_last=False)
    assert len(batches) == 3
    got = list(batches)
    assert [len(b) for b in got] == [3, 3, 1] and len({i for b in got for i in b}) == 7
    loader = DataLoader(_dataset(), batch_sampler=BatchSampler(sampler, 3, drop_last=True))
    assert len(loader) == 2 and [b[0].shape for b in loader] == [(3,), (3,)]


# ---- import paths -----------------------------------------------------------------------
def test_torch_import_paths():
    from dtrain.parallel import DistributedSampler as Parallel
    from dtrain.utils.data import DistributedSampler
    from dtrain.utils.data.distributed import DistributedSampler as Submodule

    assert DistributedSampler is Submodule is Parallel
    sampler = DistributedSampler(_dataset(10), num_replicas=2, rank=1, shuffle=False)
    loader = DataLoader(_dataset(10), batch_size=5, sampler=sampler)
    assert np.asarray(next(iter(loader))[0]).tolist() == [10, 30, 50, 70, 90]


def test_plain_import_does_not_load_the_parallel_stack():
    code = (
        "import sys; from dtrain.utils.data import DataLoader, WeightedRandomSampler; "
        "print(any(m.startswith('dtrain.parallel') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    import dtrain.utils.data as data

    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        data.Nope  # noqa: B018
