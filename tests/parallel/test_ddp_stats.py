"""DDP's optional instrumentation (``DDPStats``) reports consistent timelines (real processes,
nothing timed: only orderings and sums are checked)."""

import pytest
from launcher import run_tcp

STEPS = 3  # synchronised backwards per run; step 1 also runs one no_sync backward
SUM_SLACK = 1e-9  # float round-off of adding interval lengths


def _values(launch):
    assert not launch.timed_out, launch.describe()
    for rank in launch.ranks:
        assert rank.result is not None and rank.result["ok"], rank.output[-3000:]
    return [rank.result["value"] for rank in launch.ranks]


def _check_timeline(value):
    assert len(value["steps"]) == STEPS  # one record per synchronised backward, none for no_sync
    assert value["pending_stamps"] == 0
    sizes = value["bucket_bytes"]
    assert len(sizes) > 2  # the tiny bucket cap splits the model
    for step in value["steps"]:
        buckets = step["buckets"]
        # every bucket once per step, launched in bucket order, with its own size
        assert [b[0] for b in buckets] == list(range(len(sizes)))
        assert [b[1] for b in buckets] == sizes
        launches = [b[2] for b in buckets]
        assert launches == sorted(launches)
        assert step["backward_start"] is not None
        assert step["backward_start"] <= launches[0] <= step["compute_end"] <= step["end"]
        for _, _, launch, done in buckets:
            assert done is not None and launch <= done
        # the group runs the all-reduces in order, so they also finish in order
        dones = [b[3] for b in buckets]
        assert dones == sorted(dones)
        assert step["backward_compute_s"] > 0
        assert step["allreduce_s"] > 0
        assert 0 <= step["exposed_s"] <= step["allreduce_s"]
        assert abs(step["hidden_s"] + step["exposed_s"] - step["allreduce_s"]) < SUM_SLACK
        # the all-reduce time is no more than first launch to last completion
        assert step["allreduce_s"] <= max(dones) - launches[0] + SUM_SLACK
        # whatever ran after the last gradient ran within [compute_end, last completion]
        assert step["exposed_s"] <= max(dones) - step["compute_end"] + SUM_SLACK
    summary = value["summary"]
    assert summary["steps"] == STEPS
    assert summary["buckets"] == len(sizes)
    assert 0.0 <= summary["hidden_fraction"] <= 1.0
    assert abs(summary["hidden_s"] + summary["exposed_s"] - summary["allreduce_s"]) < SUM_SLACK
    mean_exposed = sum(s["exposed_s"] for s in value["steps"]) / STEPS
    assert abs(summary["exposed_s"] - mean_exposed) < SUM_SLACK


def test_two_rank_timelines_are_consistent():
    values = _values(run_tcp(2, "ddp_workers:stats_timeline", {"steps": STEPS}))
    for value in values:
        _check_timeline(value)
    # both ranks issue the same buckets
    assert values[0]["bucket_bytes"] == values[1]["bucket_bytes"]


def test_forced_reducer_at_world_size_1_records_and_matches_the_pass_through():
    (value,) = _values(run_tcp(1, "ddp_workers:stats_timeline", {"steps": STEPS, "force": True}))
    _check_timeline(value)
    assert value["grad_diff_vs_plain"] == 0.0  # averaging over one rank changes nothing


@pytest.mark.parametrize("world", [1, 2])
def test_off_by_default_records_nothing(world):
    for value in _values(run_tcp(world, "ddp_workers:stats_timeline", {"stats": False})):
        assert value["steps"] == [] and value["pending_stamps"] == 0
