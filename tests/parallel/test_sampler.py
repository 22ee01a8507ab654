"""DistributedSampler: shards, padding, drop_last, evaluation mode, epochs."""

import pytest

from dtrain.parallel import DistributedSampler


def shards(length, world, **options):
    return [
        list(DistributedSampler(range(length), world, rank, **options)) for rank in range(world)
    ]


def test_padding_repeats_the_start_so_every_rank_gets_the_same_count():
    parts = shards(10, 4, shuffle=False)
    assert [len(p) for p in parts] == [3, 3, 3, 3]
    flat = sorted(i for p in parts for i in p)
    assert flat == sorted([*range(10), 0, 1])  # two samples seen twice


def test_drop_last_drops_the_tail():
    parts = shards(10, 4, shuffle=False, drop_last=True)
    assert [len(p) for p in parts] == [2, 2, 2, 2]
    assert len({i for p in parts for i in p}) == 8


def test_evaluation_mode_visits_each_sample_exactly_once():
    for length, world in [(10, 4), (7, 3), (2, 5), (0, 2)]:
        parts = shards(length, world, shuffle=True, pad=False)
        assert sorted(i for p in parts for i in p) == list(range(length))
        assert [
            len(DistributedSampler(range(length), world, r, pad=False)) for r in range(world)
        ] == [len(p) for p in parts]


def test_shuffle_is_shared_by_ranks_and_changes_with_the_epoch():
    samplers = [DistributedSampler(range(20), 2, rank, seed=3) for rank in range(2)]
    first = [list(s) for s in samplers]
    assert sorted(first[0] + first[1]) == list(range(20))
    for s in samplers:
        s.set_epoch(1)
    second = [list(s) for s in samplers]
    assert second != first and sorted(second[0] + second[1]) == list(range(20))
    again = DistributedSampler(range(20), 2, 0, seed=3)
    assert list(again) == first[0]


def test_bad_rank_and_missing_group_are_clear():
    with pytest.raises(ValueError, match="rank 4"):
        DistributedSampler(range(4), 2, 4)
    with pytest.raises(RuntimeError, match="init_process_group"):
        DistributedSampler(range(4))
